"""What only the Redis broker does: reaping the consumers of processes that are gone."""

from __future__ import annotations

import secrets
from typing import Any

import trio

from actors.bus._redis_broker import GROUP, RedisBroker
from tests.services import redis_url

from .test_contract import get_within, job


async def consumers(broker: RedisBroker, stream: str) -> dict[str, int]:
    found = await broker.client.xinfo_consumers(stream, GROUP)
    return {str(c["name"]): int(str(c["pending"])) for c in found}


async def test_idle_consumers_holding_nothing_are_reaped_and_holders_are_kept() -> None:
    url, prefix, lease = redis_url(), f"reap-{secrets.token_hex(4)}", 0.05
    gone = RedisBroker(url, prefix=prefix, visibility_timeout=lease)
    holder = RedisBroker(url, prefix=prefix, visibility_timeout=lease)
    reaper = RedisBroker(url, prefix=prefix, visibility_timeout=lease)
    for broker in (gone, holder, reaper):
        await broker.open()
    try:
        queue = gone.queue("q")
        await queue.put([job("done"), job("held")])
        await queue.ack(await get_within(queue))
        await get_within(holder.queue("q"))  # held, never acked: its consumer must stay
        stream = queue.stream
        assert await consumers(reaper, stream) == {gone.consumer: 0, holder.consumer: 1}
        await trio.sleep(12 * lease)  # idle for longer than 10 leases
        assert await reaper.queue("q").reap() == 1
        assert await consumers(reaper, stream) == {holder.consumer: 1}
    finally:
        for broker in (reaper, holder, gone):
            await broker.close()


async def test_concurrent_puts_due_now_go_out_in_fewer_script_calls() -> None:
    broker = RedisBroker(redis_url(), prefix=f"puts-{secrets.token_hex(4)}")
    await broker.open()
    try:
        queue = broker.queue("q")
        calls: list[int] = []
        script = queue._script

        async def counted(name: str, keys: list[str], args: list[Any]) -> Any:
            if name == "put":
                calls.append((len(args) - 1) // 3)
            return await script(name, keys, args)

        queue._script = counted  # type: ignore[method-assign]

        async def put(i: int) -> None:
            await queue.put([job(f"j{i:02}")])

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(put, i)
        assert sum(calls) == 50
        assert len(calls) < 50  # coalesced: each returned once its call was done
        assert (await queue.stats()).ready == 50
        got = [await get_within(queue) for _ in range(50)]
        assert sorted(d.job.job_id for d in got) == [f"j{i:02}" for i in range(50)]
    finally:
        await broker.close()
