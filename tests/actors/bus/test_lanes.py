"""`Job(...).lane(key)` on the bus: one at a time per lane, in dispatch order; lanes in
parallel; a failed lane job lets its lane go on; a retrying or delayed one holds it back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from actors.bus import Broker, Job, JobContext, MemoryBroker, SQLiteBroker, open_bus


def broker_of(kind: str, tmp_path: Path) -> Broker:
    if kind == "memory":
        return MemoryBroker()
    return SQLiteBroker(tmp_path / "jobs.db", poll_interval=0.05)


class Recorder:
    """A handler that records (lane, i, start, end) and checks no lane ever runs twice."""

    def __init__(self, sleep: float = 0.01, fail: set[tuple[str, int]] | None = None) -> None:
        self.runs: list[tuple[str, int, float, float]] = []
        self.running: set[str] = set()
        self.most = 0
        self.sleep = sleep
        self.fail = fail or set()
        self.fences: list[int] = []

    async def __call__(self, ctx: JobContext) -> None:
        lane, i = ctx.payload["lane"], ctx.payload["i"]
        self.fences.append(ctx.fence)
        assert lane not in self.running, f"lane {lane} runs twice at once"
        self.running.add(lane)
        self.most = max(self.most, len(self.running))
        start = trio.current_time()
        try:
            await trio.sleep(self.sleep)
            if (lane, i) in self.fail:
                raise ValueError(f"{lane}:{i} fails")
        finally:
            self.running.discard(lane)
            self.runs.append((lane, i, start, trio.current_time()))

    def order(self, lane: str) -> list[int]:
        return [i for name, i, _, _ in self.runs if name == lane]


def lane_job(lane: str, i: int) -> Job:
    return Job("t", {"lane": lane, "i": i}).lane(lane)


@pytest.fixture(params=["memory", "sqlite"])
def kind(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


async def test_lanes_run_in_order_one_at_a_time_and_in_parallel(kind: str, tmp_path: Path) -> None:
    record = Recorder()
    async with open_bus(broker=broker_of(kind, tmp_path), queues={"default": 8}) as bus:
        bus.register("t", record)
        for i in range(10):
            for lane in "abcd":
                await bus.dispatch(lane_job(lane, i))
        with trio.fail_after(30):
            await bus.wait_idle()
    for lane in "abcd":
        assert record.order(lane) == list(range(10))
    assert record.most > 1  # different lanes ran at once
    # A durable broker leases the lane: each delivery a fence; in one process nothing is.
    assert (min(record.fences) > 0) if kind == "sqlite" else set(record.fences) == {0}


async def test_a_failed_lane_job_is_recorded_and_its_lane_goes_on(
    kind: str, tmp_path: Path
) -> None:
    record = Recorder(fail={("a", 1)})
    async with open_bus(broker=broker_of(kind, tmp_path), queues={"default": 4}) as bus:
        bus.register("t", record)
        for i in range(3):
            await bus.dispatch(lane_job("a", i).retry(1))
        with trio.fail_after(30):
            await bus.wait_idle()
        failed = await bus.failed_jobs()
    assert record.order("a") == [0, 1, 1, 2]  # the retry kept its place in the lane
    assert [f.attempts for f in failed] == [2]


async def test_a_delayed_lane_job_holds_back_the_jobs_behind_it(autojump_clock: Any) -> None:
    record = Recorder(sleep=0)
    async with open_bus(queues={"default": 4}) as bus:
        bus.register("t", record)
        start = trio.current_time()
        await bus.dispatch(lane_job("a", 0).delay(5))
        await bus.dispatch(lane_job("a", 1))
        await bus.dispatch(lane_job("b", 0))
        await bus.wait_idle()
    assert [(lane, i, at - start) for lane, i, at, _ in record.runs] == [
        ("b", 0, 0.0),
        ("a", 0, 5.0),
        ("a", 1, 5.0),
    ]


def test_a_bad_lane_key_fails_at_once() -> None:
    with pytest.raises(ValueError, match="lane key"):
        Job("t").lane("")
    with pytest.raises(TypeError):
        Job("t").lane(42)  # type: ignore[arg-type]
