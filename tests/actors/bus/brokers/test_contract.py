"""The `BrokerQueue` contract, on every durable broker, against a real file or server.

Leases are short (``visibility_timeout`` well under a second) and every wait is bounded, so
these run in real time in a few seconds.
"""

from __future__ import annotations

import math

import pytest
import trio

from actors.bus._broker import BrokerQueue, Delivery
from actors.bus._model import QueuedJob

from .conftest import OpenQueue

#: The longest any test waits for something that should happen.
PATIENCE = 5.0


def job(job_id: str, *, attempt: int = 1, batch_id: str | None = None, size: int = 0) -> QueuedJob:
    return QueuedJob(
        job_id=job_id,
        dispatch_id=f"d-{job_id}",
        job_type="tests:noop",
        payload='"' + "x" * size + '"',
        queue="q",
        attempt=attempt,
        batch_id=batch_id,
    )


async def get_within(queue: BrokerQueue, seconds: float = PATIENCE) -> Delivery:
    with trio.fail_after(seconds):
        return await queue.get()


async def nothing_for(queue: BrokerQueue, seconds: float) -> None:
    """Assert ``queue`` delivers nothing for ``seconds``."""
    with trio.move_on_after(seconds):
        delivery = await queue.get()
        pytest.fail(f"delivered {delivery} when nothing was due")


async def test_ready_jobs_go_out_in_order(open_queue: OpenQueue) -> None:
    async with open_queue() as queue:
        await queue.put([job(f"a{i}") for i in range(10)])
        await queue.put([job(f"b{i}") for i in range(5)])
        got = [(await get_within(queue)) for _ in range(15)]
        assert [d.job.job_id for d in got] == [f"a{i}" for i in range(10)] + [
            f"b{i}" for i in range(5)
        ]
        assert {d.delivery for d in got} == {1}
        for delivery in got:
            await queue.ack(delivery)
        assert await queue.stats() == type(await queue.stats())(ready=0, delayed=0, running=0)


async def test_many_consumers_get_ready_jobs_in_order(open_queue: OpenQueue) -> None:
    # Many waiting consumers make the queue claim in batches: the jobs still go out in the
    # order they were put.
    total = 600
    async with open_queue(visibility_timeout=5.0) as queue:
        await queue.put([job(f"j{i:04}") for i in range(total)])
        order: list[str] = []

        all_done = trio.Event()

        async def consume() -> None:
            while True:
                delivery = await queue.get()
                order.append(delivery.job.job_id)  # no checkpoint since get returned
                await queue.ack(delivery)
                if len(order) == total:
                    all_done.set()

        with trio.fail_after(PATIENCE * 4):
            async with trio.open_nursery() as nursery:
                for _ in range(50):
                    nursery.start_soon(consume)
                await all_done.wait()
                nursery.cancel_scope.cancel()
        assert order == sorted(order)
        assert len(order) == total


async def test_a_waiting_get_wakes_at_once_on_a_put(open_queue: OpenQueue) -> None:
    # The poll interval is long: only the put itself can wake the waiting get this soon.
    async with open_queue(poll_interval=10.0) as queue:
        got: list[Delivery] = []
        arrived = trio.Event()
        async with trio.open_nursery() as nursery:

            async def wait_for_one() -> None:
                got.append(await queue.get())
                arrived.set()

            nursery.start_soon(wait_for_one)
            await trio.sleep(0.2)  # the get is waiting (and its first poll found nothing)
            start = trio.current_time()
            await queue.put([job("j")])
            with trio.fail_after(2.0):
                await arrived.wait()
        assert trio.current_time() - start < 2.0
        assert got[0].job.job_id == "j"


async def test_a_delay_is_honoured(open_queue: OpenQueue) -> None:
    async with open_queue() as queue:
        start = trio.current_time()
        await queue.put([job("later")], delay=0.5)
        await queue.put([job("now")])
        first = await get_within(queue)
        assert first.job.job_id == "now"
        second = await get_within(queue)
        assert second.job.job_id == "later"
        assert trio.current_time() - start >= 0.5


@pytest.mark.parametrize("how", ["put", "retry"])
async def test_a_delay_longer_than_the_lease_runs_once_and_not_early(
    open_queue: OpenQueue, how: str
) -> None:
    # Two "processes" watch the queue for well past the delay, with leases far shorter than
    # it: the delayed job is delivered exactly once, and not before its time.
    delay, lease = 1.0, 0.25
    async with open_queue(visibility_timeout=lease) as a, open_queue(visibility_timeout=lease) as b:
        if how == "put":
            start = trio.current_time()
            await a.put([job("j")], delay=delay)
        else:
            await a.put([job("j")])
            first = await get_within(a)
            start = trio.current_time()
            await a.retry(first, job("j", attempt=2), delay=delay)
        seen: list[tuple[float, Delivery]] = []

        async def watch(queue: BrokerQueue) -> None:
            while True:
                delivery = await queue.get()
                seen.append((trio.current_time() - start, delivery))
                await queue.ack(delivery)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, a)
            nursery.start_soon(watch, b)
            await trio.sleep(delay + 4 * lease)
            nursery.cancel_scope.cancel()
        assert len(seen) == 1, seen
        at, delivery = seen[0]
        assert at >= delay
        assert delivery.delivery == 1
        assert delivery.job.attempt == (1 if how == "put" else 2)


async def test_a_lapsed_lease_is_redelivered(open_queue: OpenQueue) -> None:
    lease = 0.3
    # "dead" claims a job and never renews its lease (no serve: like a killed process).
    async with open_queue(visibility_timeout=lease, serve=False) as dead:
        await dead.put([job("j")])
        taken = await get_within(dead)
        assert taken.delivery == 1
        async with open_queue(visibility_timeout=lease) as alive:
            start = trio.current_time()
            again = await get_within(alive)
            assert trio.current_time() - start <= lease + 2.0
            assert again.job == taken.job
            assert again.delivery == 2
            await alive.ack(again)
            await nothing_for(alive, 2 * lease)


async def test_a_lapsed_holder_cannot_take_a_job_back_by_its_heartbeat(
    open_queue: OpenQueue,
) -> None:
    lease = 0.3
    async with open_queue(visibility_timeout=lease, serve=False) as late:
        await late.put([job("j")])
        await get_within(late)
        async with open_queue(visibility_timeout=lease) as owner:
            taken = await get_within(owner)  # after the late holder's lease lapsed
            assert taken.delivery == 2
            # The late holder wakes up and renews what it thinks it holds: nothing of it.
            assert await late.heartbeat() == 0  # type: ignore[attr-defined]
            async with open_queue(visibility_timeout=lease) as third:
                await nothing_for(third, 3 * lease)  # the owner's heartbeat keeps it
            await owner.ack(taken)


async def test_the_heartbeat_keeps_a_long_job_leased(open_queue: OpenQueue) -> None:
    lease = 0.3
    async with open_queue(visibility_timeout=lease) as holder:
        async with open_queue(visibility_timeout=lease) as other:
            await holder.put([job("long")])
            held = await get_within(holder)
            await nothing_for(other, 5 * lease)  # the job "runs" for 5 leases
            await holder.ack(held)
            await nothing_for(other, 2 * lease)
            assert (await other.stats()).running == 0


async def test_ack_is_idempotent_and_final(open_queue: OpenQueue) -> None:
    lease = 0.3
    async with open_queue(visibility_timeout=lease) as queue:
        await queue.put([job("j")])
        delivery = await get_within(queue)
        await queue.ack(delivery)
        await queue.ack(delivery)
        await nothing_for(queue, 3 * lease)
        stats = await queue.stats()
        assert (stats.ready, stats.delayed, stats.running) == (0, 0, 0)


async def test_concurrent_acks_all_land(open_queue: OpenQueue) -> None:
    async with open_queue(visibility_timeout=0.3) as queue:
        await queue.put([job(f"j{i}") for i in range(50)])
        got = [await get_within(queue) for _ in range(50)]
        async with trio.open_nursery() as nursery:
            for delivery in got:
                nursery.start_soon(queue.ack, delivery)
        await nothing_for(queue, 0.6)
        assert (await queue.stats()).running == 0


async def test_retry_replaces_the_job_by_its_next_attempt(open_queue: OpenQueue) -> None:
    async with open_queue(visibility_timeout=0.3) as queue:
        await queue.put([job("j")])
        first = await get_within(queue)
        await queue.retry(first, job("j", attempt=2), delay=0)
        second = await get_within(queue)
        assert (second.job.attempt, second.delivery) == (2, 1)
        assert second.receipt != first.receipt
        await queue.ack(second)
        # A late retry (or ack) of the settled first delivery changes nothing.
        await queue.retry(first, job("j", attempt=2), delay=0)
        await queue.ack(first)
        await nothing_for(queue, 1.0)
        stats = await queue.stats()
        assert (stats.ready, stats.delayed, stats.running) == (0, 0, 0)


async def test_released_jobs_go_to_any_worker_at_once(open_queue: OpenQueue) -> None:
    lease = 30.0  # far longer than the test: only the release can give them back
    async with open_queue(visibility_timeout=lease) as a, open_queue(visibility_timeout=lease) as b:
        await a.put([job("x"), job("y")])
        held = [await get_within(a), await get_within(a)]
        await a.release(held)
        again = [await get_within(b, 2.0), await get_within(b, 2.0)]
        assert sorted(d.job.job_id for d in again) == ["x", "y"]
        assert {d.delivery for d in again} == {2}


async def test_discard_removes_only_waiting_jobs_of_the_batch(open_queue: OpenQueue) -> None:
    async with open_queue(visibility_timeout=5.0) as queue:
        await queue.put([job("b0", batch_id="B"), job("first")])
        handed = [await get_within(queue), await get_within(queue)]  # b0 runs already
        await queue.put([job("b1", batch_id="B"), job("other"), job("b2", batch_id="B")])
        await queue.put([job("b3", batch_id="B")], delay=0.3)
        removed = await queue.discard("B")
        assert sorted(j.job_id for j in removed) == ["b1", "b2", "b3"]
        for delivery in handed:
            await queue.ack(delivery)  # the handed-out one is settled as usual
        left = set()
        with trio.move_on_after(1.0):
            while True:
                delivery = await queue.get()
                left.add(delivery.job.job_id)
                await queue.ack(delivery)
        assert left == {"other"}
        stats = await queue.stats()
        assert (stats.ready, stats.delayed, stats.running) == (0, 0, 0)


async def test_discard_takes_the_batch_jobs_prefetched_here(open_queue: OpenQueue) -> None:
    async with open_queue(visibility_timeout=5.0) as queue:
        await queue.put([job("b1", batch_id="B"), job("other"), job("b2", batch_id="B")])
        # A claim of three, as three waiting gets make, buffered and not handed out yet.
        claimed, _ = await queue._claim(3)  # type: ignore[attr-defined]
        queue._buffer.extend(claimed)  # type: ignore[attr-defined]
        removed = await queue.discard("B")
        assert sorted(j.job_id for j in removed) == ["b1", "b2"]
        other = await get_within(queue)
        assert other.job.job_id == "other"
        await queue.ack(other)
        await nothing_for(queue, 0.5)
        stats = await queue.stats()
        assert (stats.ready, stats.delayed, stats.running) == (0, 0, 0)


async def test_close_gives_back_prefetched_jobs_uncounted(open_queue: OpenQueue) -> None:
    async with open_queue(visibility_timeout=30.0, serve=False) as first:
        await first.put([job(f"j{i}") for i in range(5)])
        # A claim of three, as three waiting gets make: one handed out, two buffered.
        claimed, _ = await first._claim(3)  # type: ignore[attr-defined]
        first._buffer.extend(claimed)  # type: ignore[attr-defined]
        handed = await first.get()
    async with open_queue(visibility_timeout=30.0) as second:
        stats = await second.stats()
        assert (stats.ready, stats.running) == (4, 1)  # the handed-out one stays leased
        again = [await get_within(second) for _ in range(4)]
        assert {d.delivery for d in again} == {1}
        assert handed.job.job_id not in {d.job.job_id for d in again}


async def test_stats_count_across_processes(open_queue: OpenQueue) -> None:
    async with open_queue(visibility_timeout=5.0) as a, open_queue(visibility_timeout=5.0) as b:
        await a.put([job("r1"), job("r2"), job("r3")])
        await a.put([job("d1"), job("d2")], delay=30)
        held = await get_within(a)
        for queue in (a, b):
            stats = await queue.stats()
            assert (stats.ready, stats.delayed, stats.running) == (2, 2, 1)
        await a.ack(held)
        assert (await b.stats()).running == 0


async def test_an_oversized_job_is_refused_before_any_is_accepted(open_queue: OpenQueue) -> None:
    async with open_queue(max_payload=1000) as queue:
        with pytest.raises(ValueError, match=r"max_payload=1000.*put its key in the payload"):
            await queue.put([job("small"), job("big", size=2000)])
        stats = await queue.stats()
        assert (stats.ready, stats.delayed) == (0, 0)


async def test_bad_options_fail_at_once(kind: str, place: str) -> None:
    from .conftest import make_broker

    with pytest.raises(ValueError, match="visibility_timeout"):
        make_broker(kind, place, visibility_timeout=-1)
    with pytest.raises(ValueError, match="visibility_timeout"):
        make_broker(kind, place, visibility_timeout=math.nan)
    with pytest.raises(ValueError, match="max_payload"):
        make_broker(kind, place, max_payload=0)


async def test_put_many_puts_each_job_at_its_own_delay(open_queue: OpenQueue) -> None:
    async with open_queue() as queue:
        await queue.put_many([(job("a0"), 0.0), (job("late"), 0.3), (job("a1"), 0.0)])
        ready = [await get_within(queue) for _ in range(2)]
        assert [d.job.job_id for d in ready] == ["a0", "a1"]
        await nothing_for(queue, 0.1)
        late = await get_within(queue)
        assert late.job.job_id == "late"
        for delivery in [*ready, late]:
            await queue.ack(delivery)


async def test_put_many_refuses_all_of_them_for_one_job_too_large(open_queue: OpenQueue) -> None:
    async with open_queue(max_payload=1000) as queue:
        with pytest.raises(ValueError, match="max_payload=1000"):
            await queue.put_many([(job("a"), 0.0), (job("b", size=2000), 0.5)])
        stats = await queue.stats()
        assert (stats.ready, stats.delayed) == (0, 0)


async def test_a_job_released_before_it_started_keeps_its_delivery_count(
    open_queue: OpenQueue,
) -> None:
    async with open_queue() as queue:
        await queue.put([job("never"), job("began")])
        never, began = await get_within(queue), await get_within(queue)
        await queue.release([never], started=False)
        await queue.release([began])
        again = [await get_within(queue), await get_within(queue)]
        assert {d.job.job_id: d.delivery for d in again} == {"never": 1, "began": 2}
        for delivery in again:
            await queue.ack(delivery)
