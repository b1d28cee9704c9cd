"""A process dies between recording an outcome and what that outcome sets off; the job is
redelivered to another bus, which finds the outcome recorded and finishes the work.

The crash is staged in this process: a job is taken from the SQLite broker and its outcome
recorded in the store by hand, and then the "process" stops without queueing the next step
(or the callback) and without acknowledging. The broker's clock is the test's, so the lease
lapses when the test says, not after real seconds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import trio

from actors.bus import (
    Handlers,
    Job,
    JobContext,
    SQLiteBroker,
    SQLiteStore,
    open_bus,
)
from actors.bus._rules import JobOutcome

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    """The broker's wall clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def recording_handlers(ran: list[str], done: trio.Event, last: str) -> Handlers:
    handlers = Handlers()

    async def run(ctx: JobContext) -> None:
        ran.append(f"{ctx.payload['key']}@{ctx.delivery}")
        if ctx.payload["key"] == last:
            done.set()

    for job_type in ("step", "member", "callback"):
        handlers.register(job_type, run)
    return handlers


async def test_a_chain_whose_step_was_recorded_but_not_followed_goes_on(tmp_path: Path) -> None:
    clock, path = Clock(), tmp_path / "jobs.db"
    ran: list[str] = []
    done = trio.Event()
    handlers = recording_handlers(ran, done, "b")

    def broker() -> SQLiteBroker:
        return SQLiteBroker(path, visibility_timeout=5, poll_interval=0.01, clock=clock)

    async with open_bus(SQLiteStore(path), broker(), handlers=handlers, workers=False) as bus:
        chain_id = await bus.chain(Job("step", {"key": "a"}), Job("step", {"key": "b"})).dispatch()
    # The dying process: takes step 0, records it, and is gone before it queues step 1.
    dying, store = broker(), SQLiteStore(path)
    await dying.open()
    await store.open()
    delivery = await dying.queue("default").get()
    assert delivery.job.chain_index == 0
    step = await store.record_chain_step(chain_id, 0, None, NOW)
    assert step is not None
    assert step.next_node is not None
    dying.queue("default")._held.clear()  # it never gives it back: it died
    await dying.close()
    await store.close()
    clock.now += 6  # the lease lapses
    async with open_bus(SQLiteStore(path), broker(), handlers=handlers) as bus:
        with trio.fail_after(10):
            await done.wait()
        await bus.wait_idle()
        assert (await bus.find_chain(chain_id)).completed
    # Step 0 ran again (redelivered; recorded once), then step 1 ran: the chain went on.
    assert ran == ["a@2", "b@1"]


async def test_a_batch_finished_but_whose_callback_was_not_queued_queues_it(
    tmp_path: Path,
) -> None:
    clock, path = Clock(), tmp_path / "jobs.db"
    ran: list[str] = []
    done = trio.Event()
    handlers = recording_handlers(ran, done, "fin")

    def broker() -> SQLiteBroker:
        return SQLiteBroker(path, visibility_timeout=5, poll_interval=0.01, clock=clock)

    async with open_bus(SQLiteStore(path), broker(), handlers=handlers, workers=False) as bus:
        batch = bus.batch(Job("member", {"key": "m"})).finally_(Job("callback", {"key": "fin"}))
        batch_id = await batch.dispatch()
    # The dying process: runs the batch's only job, records it (the batch is over), claims
    # the finally callback, and is gone before it queues it or acknowledges the job.
    dying, store = broker(), SQLiteStore(path)
    await dying.open()
    await store.open()
    delivery = await dying.queue("default").get()
    update = await store.record_batch(batch_id, [JobOutcome(delivery.job.job_id, "succeeded")], NOW)
    assert update.finished_now
    assert await store.claim_callback(f"batch:{batch_id}", "finally", NOW)
    dying.queue("default")._held.clear()
    await dying.close()
    await store.close()
    clock.now += 6
    async with open_bus(SQLiteStore(path), broker(), handlers=handlers) as bus:
        with trio.fail_after(10):
            await done.wait()
        await bus.wait_idle()
        state = await bus.find_batch(batch_id)
        assert (state.completed, state.processed) == (True, 1)
    assert ran == ["m@2", "fin@1"]
