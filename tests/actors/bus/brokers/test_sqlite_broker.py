"""What only the SQLite broker promises: one file shared by processes, made by any of them."""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from actors.bus._model import QueuedJob
from actors.bus._sqlite_broker import SQLiteBroker

_OPEN_AND_PUT = """
import sys, trio
from actors.bus._model import QueuedJob
from actors.bus._sqlite_broker import SQLiteBroker

async def main() -> None:
    broker = SQLiteBroker(sys.argv[1])
    await broker.open()
    job = QueuedJob(job_id=sys.argv[2], dispatch_id="d", job_type="t", payload="1", queue="q")
    await broker.queue("q").put([job])
    await broker.close()

trio.run(main)
"""


async def test_processes_creating_the_file_at_once_all_succeed(tmp_path: Path) -> None:
    for round_ in range(3):
        path = tmp_path / f"race{round_}.db"
        processes = [
            await trio.lowlevel.open_process(
                [sys.executable, "-c", _OPEN_AND_PUT, str(path), f"p{i}"]
            )
            for i in range(4)
        ]
        codes = [await p.wait() for p in processes]
        assert codes == [0, 0, 0, 0]
        broker = SQLiteBroker(path)
        await broker.open()
        try:
            assert (await broker.queue("q").stats()).ready == 4
        finally:
            await broker.close()


async def test_it_shares_a_file_with_the_store(tmp_path: Path) -> None:
    from actors.bus import SQLiteStore

    path = tmp_path / "bus.db"
    store = SQLiteStore(path)
    await store.open()
    broker = SQLiteBroker(path)
    await broker.open()
    try:
        job = QueuedJob(job_id="j", dispatch_id="d", job_type="t", payload="1", queue="q")
        await broker.queue("q").put([job])
        assert (await broker.queue("q").get()).job == job
        assert store.schema_version() >= 1
    finally:
        await broker.close()
        await store.close()
