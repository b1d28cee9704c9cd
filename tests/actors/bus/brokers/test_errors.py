"""Brokers that cannot reach their file or server say which, and what to do."""

from __future__ import annotations

import gc
import secrets
from pathlib import Path

import pytest

from actors.bus._redis_broker import RedisBroker
from actors.bus._sqlite_broker import SQLiteBroker
from tests.services import free_port


# coredis leaves the failed connection's anyio streams to the garbage collector: collect
# them here, where their ResourceWarning is expected, not in whichever test runs next.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_an_unreachable_redis_is_named_with_a_hint() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    broker = RedisBroker(url, connect_timeout=2.0)
    with pytest.raises(ConnectionError, match=rf"cannot reach Redis at {url}.*redis-server"):
        await broker.open()
    with pytest.raises(RuntimeError, match="not open"):
        broker.queue("q")._broker.client  # noqa: B018
    gc.collect()


async def test_an_sqlite_file_in_a_missing_folder_is_named(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "jobs.db"
    with pytest.raises(ConnectionError, match=r"cannot open the SQLite broker file .*missing"):
        await SQLiteBroker(path).open()


def test_a_bad_redis_url_fails_at_once() -> None:
    with pytest.raises(ValueError, match="redis://localhost:6379/0"):
        RedisBroker("localhost:6379")


async def test_a_redis_that_lost_its_data_is_set_up_again() -> None:
    # A server restarted without its append-only file comes back empty: the consumer group
    # is gone. The broker makes it again and goes on with the jobs put since.
    from tests.services import redis_url

    from .test_contract import get_within, job

    broker = RedisBroker(redis_url(), prefix=f"lost-{secrets.token_hex(4)}", poll_interval=0.05)
    await broker.open()
    try:
        queue = broker.queue("q")
        await queue.put([job("before")])
        await queue.ack(await get_within(queue))
        await broker.client.delete([queue.stream, queue.delayed])
        await queue.put([job("after")])
        delivery = await get_within(queue)
        assert (delivery.job.job_id, delivery.delivery) == ("after", 1)
        await queue.ack(delivery)
    finally:
        await broker.close()
