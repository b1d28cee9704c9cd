"""DESIGN rule 6 for batch admission on a plain MemoryStore and the memory broker: a batch
checked in one pass (a `Job` object repeated is checked once), stored and queued with no
scheduling point in between (`actors.bus._batch_admission`), ends exactly as on subclasses
of the store and queue, which take the awaited, shielded path, whatever happens: refusals,
cancellations, a store or a queue that fails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest
import trio

from actors import trio_clock
from actors._clock import clock_reading
from actors.bus import (
    Job,
    JobContext,
    MemoryBroker,
    MemoryStore,
    UnknownJobType,
    open_bus,
)
from actors.bus._batch_admission import attempts
from actors.bus._model import IdSource
from actors.bus._rules import BatchRecord, JobOutcome

from .helpers import Recorder
from .test_fast_paths import SlowBroker, SlowStore, request

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _numbered(events: list[Any]) -> list[tuple[Any, ...]]:
    """The events with their ids numbered in order of appearance (each bus makes its own),
    sorted: Trio runs the tasks ready at once in any order, and a put that yields lets a
    worker start a job before its dispatch reports, as any broker's may."""
    ids: dict[str, str] = {}

    def named(value: str | None) -> str | None:
        return None if value is None else ids.setdefault(value, f"#{len(ids)}")

    out = []
    for event in events:
        out.append(
            (
                event.kind,
                named(event.dispatch_id),
                named(event.batch_id),
                event.job_type,
                event.queue,
                event.duration,
                event.time,
                None if event.error is None else repr(event.error),
            )
        )
    return sorted(out, key=repr)


class Boom(Exception):
    pass


def _fail(*args: object, **kwargs: object) -> None:
    raise Boom("refused")


async def _afail(*args: object, **kwargs: object) -> None:
    await trio.lowlevel.checkpoint()
    raise Boom("refused")


async def _admissions(store: MemoryStore, broker: MemoryBroker) -> tuple[Any, ...]:
    """Batches dispatched with an observer: accepted (alike jobs, several queues and
    delays), refused, cancelled before acceptance and while waiting for room, and refused
    by the store and by a queue; what the handlers, the observer and the store saw."""
    events = Recorder()
    seen: list[tuple[Any, str, str, float]] = []
    outcomes: list[str] = []
    t0 = trio.current_time()
    failing = broker.queue("failing")
    if isinstance(broker, SlowBroker):  # (its queues' puts are awaited)
        failing.put_many = _afail  # type: ignore[method-assign]
    else:
        failing.put_now = _fail  # type: ignore[method-assign]

    async def work(ctx: JobContext) -> None:
        seen.append((ctx.payload, ctx.queue, request.get(), trio.current_time() - t0))
        await trio.sleep(1)

    request.set("outer")
    async with open_bus(
        store=store,
        broker=broker,
        observers=[events],
        clock=trio_clock(T0),
        queues={"default": 2, "other": 1, "failing": 1},
        max_pending=8,
    ) as bus:
        bus.register("w", work)
        alike = Job("w", "a")
        ids = [await bus.batch(alike, alike, Job("w", "b"), alike).dispatch()]
        ids.append(
            await bus.batch(
                alike, Job("w", "c").on_queue("other"), Job("w", "d").delay(2), alike
            ).dispatch()
        )
        with pytest.raises(UnknownJobType):
            await bus.batch(alike, Job("nobody")).dispatch()
        bad = Job("w", {"x": object()})
        with pytest.raises(TypeError, match="not JSON-serialisable"):
            await bus.batch(alike, bad, bad).dispatch()
        with trio.CancelScope() as scope:
            scope.cancel()
            await bus.batch(alike).dispatch()
        outcomes.append(f"cancelled first: {scope.cancelled_caught}")
        # Full (eight jobs out): this one waits for room, and its deadline passes meanwhile.
        with trio.move_on_after(0.5) as scope:
            await bus.batch(alike, alike).dispatch()
        outcomes.append(f"cancelled waiting: {scope.cancelled_caught}")
        with pytest.raises(Boom) as caught:
            await bus.batch(alike, Job("w", "f").on_queue("failing")).dispatch()
        outcomes.append(repr(caught.value))
        store.create_batch_now = _fail  # type: ignore[method-assign]
        with pytest.raises(Boom) as caught:
            await bus.batch(alike).dispatch()
        outcomes.append(repr(caught.value))
        del store.create_batch_now
        ids.append(await bus.batch(*[alike] * 3).name("last").dispatch())
        await bus.wait_idle()
        states = [await bus.find_batch(batch_id) for batch_id in ids]
        stats = bus.stats()
        rows = [
            (
                batch.row.total,
                batch.row.pending,
                batch.row.processed,
                batch.row.failed,
                batch.row.cancelled,
                batch.row.completed,
                batch.row.created_at,
                batch.row.updated_at,
                list(batch.jobs.values()),
            )
            for batch in store._batches.values()
        ]
    return (
        sorted(seen, key=repr),
        outcomes,
        _numbered(events.events),
        [(s.name, s.total, s.processed, s.completed, s.created_at, s.updated_at) for s in states],
        rows,
        (stats.outstanding, stats.coordinators.busy),
        trio.current_time() - t0,
    )


async def test_a_batch_admitted_at_once_ends_as_an_awaited_one(autojump_clock: Any) -> None:
    with trio.fail_after(60):  # (a job counted and never counted out: wait_idle would hang)
        fast = await _admissions(MemoryStore(), MemoryBroker())
        slow = await _admissions(SlowStore(), SlowBroker())
    assert slow == fast
    seen, outcomes = fast[0], fast[1]
    assert sorted(payload for payload, _, _, _ in seen) == sorted("aabaacdaaaa")
    assert {value for _, _, value, _ in seen} == {"outer"}
    assert ("c", "other", "outer", 0.0) in seen
    assert ("d", "default", "outer", 3.0) in seen  # due at 2, the first free worker at 3
    assert outcomes == [
        "cancelled first: True",
        "cancelled waiting: True",
        "Boom('refused')",
        "Boom('refused')",
    ]
    # Stored: the three accepted batches, and the one whose queue refused, abandoned.
    rows = fast[4]
    assert [row[:6] for row in rows] == [
        (4, 0, 4, 0, False, True),
        (4, 0, 4, 0, False, True),
        (2, 0, 0, 0, True, True),
        (3, 0, 3, 0, False, True),
    ]
    assert rows[2][-1] == ["cancelled", "cancelled"]
    assert fast[5] == (0, 0)
    kinds = [event[0] for event in fast[2]]
    assert kinds.count("dispatch_failed") == 5
    assert kinds.count("batch_started") == 3


def _counting_ids() -> IdSource:
    ids = IdSource()
    ids.next = map("id-%d".__mod__, count(1)).__next__
    return ids


@pytest.mark.parametrize(
    "job",
    [
        Job("noop"),
        Job("noop", {"to": ["a", 1.5]}).on_queue("other").delay(2).timeout(3).retry(1),
        Job("noop").lane("l").backoff(0.5),
    ],
)
@pytest.mark.parametrize("n", [1, 2, 7])
def test_one_job_object_repeated_gives_the_attempts_of_the_job_by_job_path(
    job: Job, n: int
) -> None:
    """`attempts` builds ``n`` times one `Job` object in bulk (`_alike`); the jobs it
    builds (fields, ids in order, field order, delays, one put) are those the job-by-job
    loop builds, which takes the same jobs followed by another one."""
    queues, handlers = {"default": 1, "other": 1}, {"noop": 1, "other": 1}
    bulk = attempts((job,) * n, "default", handlers, queues, _counting_ids(), "d", "b")
    other = Job("other")
    loop = attempts((job,) * n + (other,), "default", handlers, queues, _counting_ids(), "d", "b")
    assert bulk[0] == loop[0][:n]
    assert [list(vars(a)) for a in bulk[0]] == [list(vars(a)) for a in loop[0][:n]]
    assert [a.job_id for a in bulk[0]] == [f"id-{i}" for i in range(1, n + 1)]
    assert bulk[1] == loop[1][:n] == [job.options.delay] * n
    assert bulk[2] is True
    assert len({id(vars(a)) for a in bulk[0]}) == n  # each its own fields


def test_one_job_object_repeated_is_refused_as_job_by_job() -> None:
    ids = _counting_ids()
    with pytest.raises(UnknownJobType):
        attempts((Job("nope"),) * 3, "default", {"noop": 1}, {"default": 1}, ids, "d", "b")
    assert ids.next() == "id-2"  # one id drawn, as the job-by-job loop draws it


async def test_a_kept_clock_reading_reads_as_the_clock_at_that_moment(
    autojump_clock: Any,
) -> None:
    """A success counted with a `trio_clock` reading (`MemoryBatch.count_success`, the
    worker's fast path) reads later as the datetime the clock gave when it was counted."""
    clock = trio_clock(T0)
    reading = clock_reading(clock)
    assert reading is not None
    assert clock_reading(lambda: T0) is None  # any other clock is called each time
    store = MemoryStore()
    record = BatchRecord("b", "d", None, "q", False, (), clock(), ())
    store.create_batch_now(record, ["j1", "j2", "j3"])
    entry = store.batch_now("b")
    assert entry is not None
    await trio.sleep(1.5)
    assert entry.count_success("j1", None, reading)
    then = clock()
    await trio.sleep(2)
    assert (await store.get_batch("b")).updated_at == then == T0 + timedelta(seconds=1.5)
    assert entry.count_success("j2", None, reading)
    await trio.sleep(1)
    update = await store.record_batch("b", [JobOutcome("j2", "succeeded")], clock())
    assert update.state.updated_at == T0 + timedelta(seconds=3.5)  # a duplicate: no new time
    assert (await store.in_flight(5))[0][0].updated_at == T0 + timedelta(seconds=3.5)
