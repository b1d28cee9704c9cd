"""Lanes invariants under random interleavings, failures and cancellations (hypothesis)."""

from __future__ import annotations

import contextvars
import math
from collections import defaultdict

import attrs
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from trio.lowlevel import current_task

from actors import Lanes, open_lanes
from tests.helpers import task_count

KEYS = ["a", "b", "c", "d"]


@attrs.frozen
class Call:
    """One caller: when it arrives, which keys, how long its job takes, how it ends."""

    arrive: int  # in tenths of a second
    keys: tuple[str, ...]
    duration: int  # in tenths of a second
    fails: bool
    cancel_after: int | None  # tenths of a second after arriving, or never
    repeat: int = 1  # the same task runs its job this many times in a row


calls = st.builds(
    Call,
    arrive=st.integers(0, 20),
    keys=st.lists(st.sampled_from(KEYS), min_size=1, max_size=3).map(tuple),
    duration=st.integers(0, 10),
    fails=st.booleans(),
    cancel_after=st.one_of(st.none(), st.integers(0, 30)),
    repeat=st.integers(1, 3),
)


class JobFailed(Exception):
    pass


def run_schedule(schedule: list[Call], idle_timeout: float) -> None:
    holders: dict[str, int | None] = dict.fromkeys(KEYS)
    started: dict[str, list[int]] = defaultdict(list)
    order_of_arrival: dict[str, list[int]] = defaultdict(list)
    outcomes: dict[int, str] = {}
    ran: set[int] = set()
    failed_with: dict[int, tuple[object, ...]] = {}

    async def job(i: int, call: Call) -> int:
        ran.add(i)
        held = set(call.keys)  # run_multi counts duplicate keys once
        for key in held:
            assert holders[key] is None, f"job {i} entered {key} held by {holders[key]}"
            holders[key] = i
            started[key].append(i)
        try:
            await trio.sleep(call.duration / 10)
            if call.fails:
                raise JobFailed(i)
        finally:
            for key in held:
                assert holders[key] == i
                holders[key] = None
        return i

    async def call_lanes(lanes: Lanes, i: int, call: Call) -> int:
        for _ in range(call.repeat):
            if len(call.keys) == 1:
                order_of_arrival[call.keys[0]].append(i)
                result = await lanes.run(call.keys[0], job, i, call)
            else:
                result = await lanes.run_multi(list(call.keys), job, i, call)
        return result

    async def caller(lanes: Lanes, i: int, call: Call) -> None:
        await trio.sleep(call.arrive / 10)
        if call.cancel_after is None:
            deadline = math.inf
        else:
            deadline = trio.current_time() + call.cancel_after / 10
        with trio.CancelScope(deadline=deadline) as scope:
            try:
                returned = await call_lanes(lanes, i, call)
            except JobFailed as exc:
                failed_with[i] = exc.args
                outcomes[i] = "failed"
            else:
                assert returned == i
                outcomes[i] = "ok"
        if scope.cancelled_caught:
            outcomes[i] = "cancelled"

    async def main() -> None:
        before = task_count()
        async with open_lanes(idle_timeout=idle_timeout) as lanes, trio.open_nursery() as nursery:
            for i, call in enumerate(schedule):
                nursery.start_soon(caller, lanes, i, call)
        stats = lanes.stats()
        assert (stats.busy, stats.queued) == (0, 0)
        assert task_count() == before

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))

    # every caller ended one way or the other: nothing deadlocked or was lost
    assert set(outcomes) == set(range(len(schedule)))
    for i, outcome in outcomes.items():
        call = schedule[i]
        if outcome == "ok":
            assert i in ran
            assert not call.fails
        elif outcome == "failed":
            assert i in ran
            assert call.fails
            assert failed_with[i] == (i,)
        else:
            assert call.cancel_after is not None
    # FIFO per key among single-key jobs: they started in the order their callers arrived
    for key in KEYS:
        singles = [i for i in started[key] if len(schedule[i].keys) == 1]
        # jobs start in arrival order; an arrival is skipped only if its caller was cancelled
        # (callers that were not cancelled all finished: checked above)
        assert _is_subsequence(singles, order_of_arrival[key])


def _is_subsequence(short: list[int], long: list[int]) -> bool:
    it = iter(long)
    return all(any(x == y for y in it) for x in short)


@settings(max_examples=150, deadline=None)
@given(st.lists(calls, min_size=1, max_size=25), st.sampled_from([0.05, 1.0, 600.0]))
def test_exclusion_fifo_and_no_deadlock_under_failures_and_cancels(
    schedule: list[Call], idle_timeout: float
) -> None:
    run_schedule(schedule, idle_timeout)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from(KEYS), min_size=1, max_size=4).map(tuple), min_size=2, max_size=30
    )
)
def test_overlapping_run_multi_never_deadlocks(key_sets: list[tuple[str, ...]]) -> None:
    """All callers arrive at once, each wanting several keys in its own (unsorted) order."""
    schedule = [Call(0, keys, 1, False, None) for keys in key_sets]
    run_schedule(schedule, 600.0)


# ---------------------------------------------------------------- rule 6: a job is a direct await

REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")
WRITTEN: contextvars.ContextVar[str] = contextvars.ContextVar("written", default="none")


class Stop(BaseException):
    """A KeyboardInterrupt-like exception."""


@attrs.frozen
class Direct:
    """One caller of the rule-6 check: its job, and what ends it."""

    key: str
    arrive: int  # tenths of a second
    duration: int  # tenths of a second
    ending: str  # "return", "raise" (an Exception) or "base" (a BaseException)
    deadline: int | None  # the caller's deadline, tenths (plus a half) after it arrives
    shield: bool  # the job's work is shielded (a commit that must complete)


directs = st.builds(
    Direct,
    key=st.sampled_from(["a", "b"]),
    arrive=st.integers(0, 10),
    duration=st.integers(0, 8),
    ending=st.sampled_from(["return", "raise", "base"]),
    deadline=st.one_of(st.none(), st.integers(0, 20)),
    shield=st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(directs, min_size=1, max_size=12))
def test_every_job_behaves_as_a_direct_await_in_its_caller(schedule: list[Direct]) -> None:
    """Idle or busy lane, cancelled or not, any exception: the job is ``await fn()`` there."""
    errors = [JobFailed(i) for i in range(len(schedule))]
    stops = [Stop(i) for i in range(len(schedule))]
    seen: dict[int, tuple[float, str, float, trio.lowlevel.Task]] = {}
    ended: dict[int, tuple[str, object]] = {}
    context: dict[int, tuple[float, trio.lowlevel.Task, str]] = {}

    async def job(i: int, call: Direct) -> int:
        now = trio.current_time()
        seen[i] = (now, REQUEST.get(), trio.current_effective_deadline(), current_task())
        WRITTEN.set(f"written by {i}")
        with trio.CancelScope(shield=call.shield):
            await trio.sleep(call.duration / 10)
        if call.ending == "raise":
            raise errors[i]
        if call.ending == "base":
            raise stops[i]
        return i

    async def caller(lanes: Lanes, i: int, call: Direct) -> None:
        await trio.sleep(call.arrive / 10)
        REQUEST.set(f"request {i}")
        deadline = math.inf
        if call.deadline is not None:
            deadline = trio.current_time() + (call.deadline + 0.5) / 10
        with trio.CancelScope(deadline=deadline) as scope:
            try:
                ended[i] = ("returned", await lanes.run(call.key, job, i, call))
            except (JobFailed, Stop) as exc:
                ended[i] = ("raised", exc)
        if scope.cancelled_caught:
            ended[i] = ("cancelled", None)
        context[i] = (deadline, current_task(), WRITTEN.get())

    async def main() -> None:
        async with open_lanes() as lanes, trio.open_nursery() as nursery:
            for i, call in enumerate(schedule):
                nursery.start_soon(caller, lanes, i, call)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))

    assert set(ended) == set(range(len(schedule)))
    for i, call in enumerate(schedule):
        deadline, task, written = context[i]
        if i not in seen:  # cancelled while it waited for its turn: never ran
            assert ended[i] == ("cancelled", None)
            assert written == "none"
            continue
        started, request, job_deadline, job_task = seen[i]
        # the caller's context, deadline and task ...
        assert (request, job_deadline, job_task) == (f"request {i}", deadline, task)
        # ... its writes stay with that caller, as after a direct await ...
        assert written == f"written by {i}"
        # ... and it ends as `await job()` started at that moment would have
        finish = started + call.duration / 10
        if not call.shield and math.isclose(deadline, finish):
            continue  # the deadline and the job's sleep fall due together: either may win
        if not call.shield and deadline < finish:
            expected: tuple[str, object] = ("cancelled", None)
        elif call.ending == "raise":
            expected = ("raised", errors[i])
        elif call.ending == "base":
            expected = ("raised", stops[i])
        else:
            expected = ("returned", i)
        assert ended[i][0] == expected[0]
        assert ended[i][1] is expected[1] or ended[i][1] == expected[1]
