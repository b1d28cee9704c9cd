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


async def test_close_gives_back_prefetched_jobs_uncounted(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    first = SQLiteBroker(path, claim_batch=10)
    await first.open()
    queue = first.queue("q")
    await queue.put(
        [
            QueuedJob(job_id=f"j{i}", dispatch_id="d", job_type="t", payload="1", queue="q")
            for i in range(5)
        ]
    )
    # A claim of three, as three gets waiting at once make: one handed out, two buffered.
    claimed, _ = await queue._claim(3)
    queue._buffer.extend(claimed)
    delivery = await queue.get()
    assert len(queue.held()) == 3
    await first.close()
    second = SQLiteBroker(path)
    await second.open()
    try:
        stats = await second.queue("q").stats()
        assert stats.running == 1  # the one handed out stays leased to the first
        assert stats.ready == 4
        again = [await second.queue("q").get() for _ in range(4)]
        assert {d.delivery for d in again} == {1}
        assert delivery.job.job_id not in {d.job.job_id for d in again}
    finally:
        await second.close()
