"""Lane jobs in every durable broker: one at a time per lane, in put order, fenced.

A lane job is due only at the head of its lane; each delivery of a lane gets a larger fence
(`Delivery.fence`); an ack or retry with a fence the lane has moved past raises `LeaseLost`.
"""

from __future__ import annotations

import pytest
import trio

from actors import LeaseLost
from actors.bus import LeaseLost as BusLeaseLost
from actors.bus._model import QueuedJob

from .conftest import OpenQueue
from .test_contract import PATIENCE, get_within, nothing_for


def lane_job(job_id: str, lane: str | None, *, attempt: int = 1) -> QueuedJob:
    return QueuedJob(
        job_id=job_id,
        dispatch_id=f"d-{job_id}",
        job_type="tests:noop",
        payload="null",
        queue="q",
        attempt=attempt,
        lane=lane,
    )


def test_the_bus_lease_lost_is_an_actors_lease_lost() -> None:
    assert issubclass(BusLeaseLost, LeaseLost)


async def test_a_lane_hands_out_its_head_only_and_in_put_order(open_queue: OpenQueue) -> None:
    async with open_queue() as queue:
        await queue.put([lane_job(f"a{i}", "A") for i in range(3)])
        await queue.put([lane_job(f"b{i}", "B") for i in range(2)] + [lane_job("p", None)])
        # Heads of A and B and the plain job; nothing else until a head is acked.
        first = {(await get_within(queue)).job.job_id for _ in range(3)}
        assert first == {"a0", "b0", "p"}
        await nothing_for(queue, 0.3)


async def test_acking_a_lane_job_makes_the_next_due_at_once(open_queue: OpenQueue) -> None:
    async with open_queue(poll_interval=5.0) as queue:
        await queue.put([lane_job(f"a{i}", "A") for i in range(5)])
        order = []
        fences = []
        with trio.fail_after(PATIENCE):  # far under 5 poll intervals: woken by the ack
            for _ in range(5):
                delivery = await queue.get()
                order.append(delivery.job.job_id)
                fences.append(delivery.fence)
                await queue.ack(delivery)
        assert order == [f"a{i}" for i in range(5)]
        assert fences == sorted(fences)
        assert len(set(fences)) == 5
        assert min(fences) > 0


async def test_a_lane_retry_keeps_its_place_and_holds_back_the_rest(
    open_queue: OpenQueue,
) -> None:
    async with open_queue() as queue:
        await queue.put([lane_job("a0", "A"), lane_job("a1", "A")])
        first = await get_within(queue)
        assert first.job.job_id == "a0"
        await queue.retry(first, lane_job("a0", "A", attempt=2), delay=0.4)
        await nothing_for(queue, 0.25)  # a1 waits behind a0's delayed retry
        again = await get_within(queue)
        assert (again.job.job_id, again.job.attempt) == ("a0", 2)
        assert again.fence > first.fence
        await queue.ack(again)
        last = await get_within(queue)
        assert last.job.job_id == "a1"
        await queue.ack(last)


async def test_a_delayed_lane_job_holds_back_the_jobs_behind_it(open_queue: OpenQueue) -> None:
    async with open_queue() as queue:
        await queue.put([lane_job("a0", "A")], delay=0.4)
        await queue.put([lane_job("a1", "A"), lane_job("b0", "B")])
        assert (await get_within(queue)).job.job_id == "b0"
        await nothing_for(queue, 0.2)
        head = await get_within(queue)
        assert head.job.job_id == "a0"
        await queue.ack(head)
        assert (await get_within(queue)).job.job_id == "a1"


async def test_a_lapsed_holders_late_ack_and_retry_are_refused(open_queue: OpenQueue) -> None:
    lease = 0.3
    # "late" takes the lane's head and stops renewing (no serve: a paused process).
    async with open_queue(visibility_timeout=lease, serve=False) as late:
        await late.put([lane_job("a0", "A"), lane_job("a1", "A")])
        stale = await get_within(late)
        async with open_queue(visibility_timeout=lease) as owner:
            taken = await get_within(owner)  # after the lapse: the same head, a new fence
            assert taken.job.job_id == "a0"
            assert taken.fence > stale.fence
            with pytest.raises(BusLeaseLost, match="lapsed and was taken over"):
                await late.ack(stale)
            with pytest.raises(BusLeaseLost):
                await late.retry(stale, lane_job("a0", "A", attempt=2), delay=0)
            await nothing_for(owner, 0.2)  # the refused ack settled nothing: a1 still waits
            await owner.ack(taken)
            await owner.ack(taken)  # idempotent for the lane's current holder
            nxt = await get_within(owner)
            assert nxt.job.job_id == "a1"
            await owner.ack(nxt)
            # After the lane's jobs are gone, the stale ack is still refused.
            with pytest.raises(BusLeaseLost):
                await late.ack(stale)
            await nothing_for(owner, 0.2)


async def test_a_token_read_fresh_and_one_given_back_deliver_alike(open_queue: OpenQueue) -> None:
    """Rule 6 for Redis's fast path (a token sent with its lane's fence and head, read with
    no script) against the slow one (a token given back, started again by its reader): the
    same job, a larger fence each time, and the earlier holder refused."""
    async with open_queue() as queue:
        await queue.put([lane_job("a0", "A"), lane_job("a1", "A")])
        fresh = await get_within(queue)
        await queue.release([fresh])
        again = await get_within(queue)
        assert (again.job, again.delivery) == (fresh.job, fresh.delivery + 1)
        assert again.fence > fresh.fence
        await queue.ack(again)
        await queue.ack(again)  # settled already: no error for the holder that settled
        with pytest.raises(BusLeaseLost):
            await queue.ack(fresh)  # given back: that lease is over
        nxt = await get_within(queue)
        assert (nxt.job.job_id, nxt.delivery) == ("a1", 1)
        assert nxt.fence > again.fence
        await queue.ack(nxt)
