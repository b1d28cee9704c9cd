"""SQLiteBroker under random interleavings of put, get, ack, retry, release and lapsing time.

Two brokers share one file (two "processes"), neither renewing its leases (no `serve`), on a
clock the test moves by hand, so leases lapse exactly when the test says. Invariants:

- a job is never leased to two holders at once (a new delivery comes only after every
  earlier lease of it lapsed or was settled);
- nothing is lost: once time runs far ahead, draining delivers every job not finally acked;
- nothing is doubled: a job has one row at a time (a late retry of a settled row adds none);
- a delivery's count is one more than the deliveries of that attempt before it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.bus._broker import Delivery
from actors.bus._model import QueuedJob
from actors.bus._sqlite_broker import SQLiteBroker, SQLiteBrokerQueue

LEASE = 10.0

ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(1, 3), st.sampled_from([0.0, 5.0])),
        st.tuples(st.just("get"), st.integers(0, 1), st.just(0.0)),
        st.tuples(st.just("ack"), st.integers(0, 50), st.just(0.0)),
        st.tuples(st.just("retry"), st.integers(0, 50), st.sampled_from([0.0, 5.0])),
        st.tuples(st.just("release"), st.integers(0, 50), st.just(0.0)),
        st.tuples(st.just("time"), st.integers(0, 3), st.sampled_from([1.0, 6.0, 11.0])),
    ),
    max_size=25,
)


async def try_get(queue: SQLiteBrokerQueue) -> Delivery | None:
    with trio.move_on_after(0.02):
        return await queue.get()
    return None


async def scenario(path: Path, steps: list[tuple[str, int, float]]) -> None:
    now = [1000.0]
    brokers = [
        SQLiteBroker(path, visibility_timeout=LEASE, poll_interval=0.01, clock=lambda: now[0])
        for _ in range(2)
    ]
    for broker in brokers:
        await broker.open()
    queues = [broker.queue("q") for broker in brokers]
    try:
        put: set[str] = set()
        done: set[str] = set()
        held: list[tuple[int, Delivery, float]] = []  # (queue index, delivery, lease until)
        counts: dict[tuple[str, int], int] = {}
        serial = 0

        def record(index: int, delivery: Delivery) -> None:
            key = (delivery.job.job_id, delivery.job.attempt)
            for _, other, until in held:
                if (other.job.job_id, other.job.attempt) == key:
                    assert until <= now[0], f"{key} delivered while leased until {until}"
            counts[key] = counts.get(key, 0) + 1
            assert delivery.delivery == counts[key]
            held.append((index, delivery, now[0] + LEASE))

        for op, arg, delay in steps:
            if op == "put":
                jobs = []
                for _ in range(arg):
                    serial += 1
                    jobs.append(
                        QueuedJob(
                            job_id=f"j{serial}",
                            dispatch_id="d",
                            job_type="t",
                            payload="1",
                            queue="q",
                        )
                    )
                await queues[0].put(jobs, delay=delay)
                put.update(job.job_id for job in jobs)
            elif op == "get":
                delivery = await try_get(queues[arg])
                if delivery is not None:
                    record(arg, delivery)
            elif op == "time":
                now[0] += delay
            elif held:
                index, delivery, _ = held.pop(arg % len(held))
                queue = queues[index]
                if op == "ack":
                    await queue.ack(delivery)
                    done.add(delivery.job.job_id)
                elif op == "retry":
                    attempt = delivery.job.attempt + 1
                    job = QueuedJob(
                        job_id=delivery.job.job_id,
                        dispatch_id="d",
                        job_type="t",
                        payload="1",
                        queue="q",
                        attempt=attempt,
                    )
                    await queue.retry(delivery, job, delay=delay)
                else:
                    await queue.release([delivery])
                    # A release by a holder whose lease lapsed (and was taken over) is a no-op.

        # Drain: far ahead in time every lease has lapsed; everything not acked comes back.
        now[0] += 10 * LEASE
        held.clear()
        drained: list[str] = []
        while True:
            delivery = await try_get(queues[1])
            if delivery is None:
                break
            await queues[1].ack(delivery)
            drained.append(delivery.job.job_id)
        assert len(drained) == len(set(drained)), f"a job left twice: {sorted(drained)}"
        done.update(drained)
        assert done == put
        stats = await queues[0].stats()
        assert (stats.ready, stats.delayed, stats.running) == (0, 0, 0)
    finally:
        for broker in brokers:
            await broker.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=ops)
def test_random_interleavings_lose_nothing_and_never_double_lease(
    steps: list[tuple[str, int, float]],
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        trio.run(scenario, Path(folder) / "b.db", steps)
