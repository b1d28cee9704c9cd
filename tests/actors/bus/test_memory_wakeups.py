"""A worker woken in `MemoryQueue.get` finds the job it was woken for: the ready jobs that
woken workers have not yet taken are theirs, so a running worker's get leaves them (no woken
worker parks again, which cost a resumption per job). Those jobs are still ready jobs for
everyone else: FIFO, `discard`, `stats` and a woken worker's cancel behave as before."""

from __future__ import annotations

import random
from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.bus import MemoryQueue, QueuedJob
from actors.bus._broker import QueueStats
from actors.bus._memory_broker import queued


def _job(n: int, batch: str | None = None) -> QueuedJob:
    return QueuedJob(f"j{n}", f"d{n}", "w", "null", "q", batch_id=batch)


async def _taker(queue: MemoryQueue, got: list[str]) -> None:
    got.append((await queue.get()).job.job_id)


async def test_a_running_worker_leaves_the_job_a_parked_worker_was_woken_for() -> None:
    queue = MemoryQueue("q")
    got: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_taker, queue, got)
        await trio.testing.wait_all_tasks_blocked()
        queue.put_one_now(_job(1), 0.0)  # wakes the parked worker
        # Not yet resumed: its job is still ready, but not for a running worker.
        assert queue.stats_now() == QueueStats(ready=1, delayed=0, running=0)
        assert queue.get_now() is None
        queue.put_one_now(_job(2), 0.0)  # no one waits: free for anyone
        taken = queue.get_now()
        assert taken is not None
        # FIFO among ready jobs: the running worker took the front one.
        assert taken.job.job_id == "j1"
    assert got == ["j2"]
    assert queue.stats_now() == QueueStats(ready=0, delayed=0, running=2)


async def test_a_discard_finds_the_jobs_woken_workers_have_not_taken_yet() -> None:
    queue = MemoryQueue("q")
    got: list[str] = []
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(_taker, queue, got)
        await trio.testing.wait_all_tasks_blocked()
        queue.put_now([_job(1, "b"), _job(2, "other"), _job(3, "b")])  # wakes all three
        removed = await queue.discard("b")  # its checkpoint lets one worker run first
        assert {job.job_id for job in removed} | set(got) >= {"j1", "j3"}
        await trio.testing.wait_all_tasks_blocked()
        # Whoever found its job discarded parks again, for the next puts.
        queue.put_now([_job(4), _job(5)])
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()  # (a worker left waiting, if j1 or j3 was taken)
    everything = sorted(
        got + [job.job_id for job in removed] + [queued(j).job_id for j in queue._ready]
    )
    assert everything == ["j1", "j2", "j3", "j4", "j5"]
    assert len(got) == 3
    assert queue.stats_now() == QueueStats(ready=5 - 3 - len(removed), delayed=0, running=3)


# A random mix of puts, workers waiting in get, cancels, discards and takes by a running
# worker, against a model: FIFO, each job taken, discarded or still ready exactly once, the
# same stats, and no job left ready while a worker waits.
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(1, 3), st.sampled_from(["a", "b", None])),
        st.tuples(st.just("spawn"), st.integers(1, 3)),
        st.tuples(st.just("cancel"), st.integers(0, 7)),
        st.tuples(st.just("discard"), st.sampled_from(["a", "b"])),
        st.tuples(st.just("take")),
        st.tuples(st.just("yield")),
        st.tuples(st.just("settle")),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_OPS, seed=st.integers(0, 2**16))
def test_random_puts_gets_cancels_and_discards_match_a_fifo_model(
    ops: list[tuple[Any, ...]], seed: int
) -> None:
    async def main() -> None:
        queue = MemoryQueue("q")
        put: list[str] = []
        batch_of: dict[str, str | None] = {}
        taken: list[str] = []
        discarded: list[str] = []
        scopes: list[trio.CancelScope] = []
        waiting = [0]  # workers inside get

        async def worker(count: int, scope: trio.CancelScope) -> None:
            with scope:
                for _ in range(count):
                    waiting[0] += 1
                    try:
                        delivery = await queue.get()
                    finally:
                        waiting[0] -= 1
                    taken.append(delivery.job.job_id)  # no yield since get took it
                    await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            for op in ops:
                if op[0] == "put":
                    jobs = []
                    for _ in range(op[1]):
                        n = len(put)
                        put.append(f"j{n}")
                        batch_of[f"j{n}"] = op[2]
                        jobs.append(_job(n, op[2]))
                    queue.put_now(jobs)
                elif op[0] == "spawn":
                    scope = trio.CancelScope()
                    scopes.append(scope)
                    nursery.start_soon(worker, op[1], scope)
                elif op[0] == "cancel" and scopes:
                    scopes[op[1] % len(scopes)].cancel()
                elif op[0] == "discard":
                    ready_before = {queued(job).job_id for job in queue._ready}
                    removed = [job.job_id for job in await queue.discard(op[1])]
                    assert all(batch_of[job] == op[1] for job in removed)
                    assert set(removed) <= ready_before
                    discarded.extend(removed)
                elif op[0] == "take":
                    delivery = queue.get_now()
                    if delivery is not None:
                        taken.append(delivery.job.job_id)
                elif op[0] == "yield":
                    await trio.lowlevel.checkpoint()
                else:
                    await trio.testing.wait_all_tasks_blocked()
            await trio.testing.wait_all_tasks_blocked()
            ready = [queued(job).job_id for job in queue._ready]
            # FIFO: taken in the order put, and every job still ready behind them all.
            order = {job: i for i, job in enumerate(put)}
            assert taken == sorted(taken, key=order.__getitem__)
            if taken and ready:
                assert order[taken[-1]] < order[ready[0]]
            # Each job taken, discarded or still ready, exactly once.
            assert sorted(taken + discarded + ready, key=order.__getitem__) == put
            assert queue.stats_now() == QueueStats(ready=len(ready), delayed=0, running=len(taken))
            # No job is left ready while a worker waits for one.
            assert not (ready and waiting[0])
            nursery.cancel_scope.cancel()

    random.seed(seed)  # Trio's run order (its scheduler's batches are shuffled)
    trio.run(main)
