"""Queue workers: take a delivery, run it through the middleware and its handler, and hand
its final outcome on (the first step of the flow).

A failed attempt with retries left goes back to its queue as the next attempt
(`BrokerQueue.retry`), logged at WARNING; the final failure is logged at ERROR and kept as a
`FailedJob`. A plain job's delivery is acknowledged here; a chain's or batch's job is told
to its coordinator, which acknowledges it once the outcome is recorded. A batch job whose
batch was cancelled (in this process or, through the store, in any other) does not start.
"""

from __future__ import annotations

import contextvars
import logging
import traceback
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

import attrs
import trio

from .._contexts import in_context
from ._batches import Batches
from ._broker import BrokerQueue, Delivery
from ._chains import Chains
from ._coordinators import Done
from ._errors import LeaseLost, Release, UnknownJobType
from ._events import EventKind
from ._fences import fence_of
from ._handlers import Handler
from ._memory_broker import MemoryQueue
from ._middleware import CallNext, Middleware
from ._model import (
    NO_FLAGS,
    BatchState,
    ChainState,
    JobContext,
    QueuedJob,
    _AttemptFlags,
    decode_payload,
    describe,
)
from ._parts import INSIDE, Parts, lease_lost_ok
from ._rules import FailedJob, Outcome

log = logging.getLogger("actors.bus")

_new = object.__new__
#: Sets a frozen `JobContext`'s attribute dict (its __setattr__ refuses).
_set = object.__setattr__


def job_context(
    job: QueuedJob,
    state: BatchState | ChainState | None,
    delivery: int,
    fence: int,
    flags: _AttemptFlags,
) -> JobContext:
    """The `JobContext` of an attempt: what its __init__ would make, built as one dict (its
    fields in order), with no Python frame of 13 arguments per job."""
    ctx: JobContext = _new(JobContext)
    _set(
        ctx,
        "__dict__",
        {
            "payload": None if job.payload == "null" else decode_payload(job.payload),
            "attempt": job.attempt,
            "job_type": job.job_type,
            "dispatch_id": job.dispatch_id,
            "job_id": job.job_id,
            "chain_id": job.chain_id,
            "batch_id": job.batch_id,
            "queue": job.queue,
            "state": state,
            "error": job.error,
            "delivery": delivery,
            "fence": fence,
            "_flags": flags,
        },
    )
    return ctx


def _wrap(mw: Middleware, call_next: CallNext) -> CallNext:
    async def step(ctx: JobContext) -> None:
        await mw(ctx, call_next)

    return step


def compose(handlers: Mapping[str, Handler], middleware: Sequence[Middleware]) -> CallNext:
    """The middleware around the handler call, first outermost; the timeout innermost."""

    async def run_handler(ctx: JobContext) -> None:
        # The timeout wraps the handler alone, so every middleware sees the attempt fail with
        # TimeoutError (FailOnError can match it), never Cancelled.
        timeout = ctx._flags.timeout
        if timeout is None:
            await handlers[ctx.job_type](ctx)
            return
        with trio.move_on_after(timeout) as scope:
            await handlers[ctx.job_type](ctx)
        # cancel_called, not cancelled_caught: a handler that swallowed the Cancelled and
        # returned still ran out of time.
        if scope.cancel_called:
            raise TimeoutError(
                f"job {ctx.job_type!r} (attempt {ctx.attempt}) timed out after {timeout:g}s"
            )

    call: CallNext = run_handler
    for mw in reversed(middleware):
        call = _wrap(mw, call)
    return call


class Worker:
    """What every worker task of a bus runs (one `Worker`, many tasks)."""

    def __init__(
        self,
        parts: Parts,
        handlers: Mapping[str, Handler],
        middleware: Sequence[Middleware],
        chains: Chains,
        batches: Batches,
    ) -> None:
        self._parts = parts
        self._handlers = handlers
        self._call = compose(handlers, middleware)
        #: No middleware: a job without a timeout calls its handler directly.
        self._bare = not middleware
        self._chains = chains
        self._batches = batches

    def serve(self, queue: BrokerQueue) -> Callable[..., Coroutine[Any, Any, None]]:
        """What a worker task of ``queue`` runs, ``fn(queue, task_status=...)``: take a job,
        run it, hand its outcome on; forever. (`MemoryWorker` has the memory broker's own
        loop.)"""
        return self._serve

    async def _serve(
        self, queue: BrokerQueue, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """`serve` for a broker other than the memory one: every job stepped in a fresh copy
        of this task's context (DESIGN rule 6)."""
        INSIDE.set(True)
        base = contextvars.copy_context()
        task_status.started()
        parts = self._parts
        while True:
            delivery = await queue.get()
            parts.in_hand += 1
            handed = False
            try:
                handed = await self._run(queue, delivery, base, False, False)
            except Exception:
                self._broke(queue, delivery)
            finally:
                if not handed:  # else its coordinator lets it go, once it is recorded
                    parts.let_go(1)

    def _broke(self, queue: BrokerQueue, delivery: Delivery) -> None:
        """Our machinery failed, not the job: count it out rather than hang wait_idle()."""
        log.exception("bus worker on queue %r failed to handle %r", queue.name, delivery)
        self._parts.finished((delivery.job,))

    async def _cancelled(self, batch_id: str) -> bool:
        """The store's answer, when `Batches.cancelled_now` does not know."""
        # A store error (a server restarting) is waited out as an outcome's is: the job must
        # neither be dropped nor run past a cancel.
        cancelled = await self._parts.recorder.write(
            f"the cancel check of batch {batch_id}", self._parts.store.batch_cancelled, batch_id
        )
        return bool(cancelled)

    async def _run(
        self,
        queue: BrokerQueue,
        delivery: Delivery,
        base: contextvars.Context,
        fresh: bool,
        quick: bool,
        keep: bool = False,
        checked: bool = False,
    ) -> bool:
        """Run one delivery; True if its outcome was handed on to its coordinator.

        ``fresh``: a memory broker's job, taken through a scheduling point after `serve` gave
        the task a fresh copy of ``base``. ``quick``: a memory broker's plain job with no
        observer; its success is settled right here (an ack and a count). Both: it runs right
        in the task's context (no stepping in a context of its own, `in_context`): nothing
        before its handler reads or writes a context variable, and after it only a success
        is settled there; anything else is handed back to a copy of ``base``, where the slow
        path would run it. ``keep``: this worker takes its next job without yielding (a
        chain's next step may be left to it). ``checked``: a memory broker's job taken right
        after a cancel check, with no scheduling point and no user code since (see
        `_serve_memory`).
        """
        job = delivery.job
        batch_id = job.batch_id
        state: BatchState | ChainState | None = None
        checked = fresh or checked  # (a fresh job's get checked it)
        if not checked or batch_id is not None or job.callback_of is not None:
            try:
                # A worker stopped as its delivery arrived (a claim answered under a cancel)
                # must not start the job: a handler that fails before its first checkpoint
                # would have its outcome cut short by the cancel, leaving the job leased
                # until it lapses. (A fresh job's get checked that itself, with no yield since;
                # a ``checked`` one's worker did.)
                if not checked:
                    await trio.lowlevel.checkpoint_if_cancelled()
                if batch_id is not None:
                    known = self._batches.cancelled_now(batch_id)  # (no coroutine if it knows)
                    if known or (known is None and await self._cancelled(batch_id)):
                        return await self._finish(queue, delivery, "cancelled", None)
                if job.callback_of is not None:
                    state = await self._state_of(job.callback_of)
            except trio.Cancelled:
                # Stopped before the job started: give it back to the broker, for anyone, as
                # not delivered (its next delivery counts as this one).
                with trio.CancelScope(shield=True):
                    await queue.release([delivery], started=False)
                raise
        timeout = job.timeout
        bare = timeout is None and self._bare  # no middleware, no timeout: the handler
        ctx = job_context(
            job,
            state,
            delivery.delivery,
            delivery.fence,
            NO_FLAGS if bare else _AttemptFlags(),  # (no middleware, no timeout: nothing sets them)
        )
        emitter = self._parts.emitter
        direct = fresh and quick
        started = 0.0  # read only for the events' durations
        if emitter.active:
            emitter.job(EventKind.JOB_STARTED, job)
            started = trio.current_time()
        known = job.job_type in self._handlers
        try:
            if not known:
                raise UnknownJobType(
                    f"no handler is registered for job type {job.job_type!r} on this worker"
                )
            if bare:
                call = self._handlers[job.job_type]
            else:
                ctx._flags.timeout = timeout
                call = self._call
            if direct:
                await call(ctx)
            else:
                await in_context(base.copy(), call(ctx))
        except trio.Cancelled:
            # The bus stops (a graceful stop, or its scope cancelled) under a running job:
            # give it back to the broker for any worker, rather than wait for its lease.
            if type(queue) is not MemoryQueue:  # the memory broker's jobs go with the bus
                with trio.CancelScope(shield=True):
                    try:
                        await queue.release([delivery])
                    except Exception as exc:  # e.g. the server is gone: the lease lapses
                        log.warning("bus: could not give %r back (%s)", delivery, exc)
            raise
        except Exception as exc:
            return await self._attempt_failed(
                queue, delivery, ctx, exc, base, direct, known, started
            )
        if quick:  # a memory delivery: acknowledged and counted here, no context read
            queue.ack_now(delivery)  # type: ignore[attr-defined]
            self._parts.done(1)  # a memory queue's jobs are all this bus's (`Parts.mine`)
            return False
        if batch_id is not None and self._batches.settle_now(delivery):
            return False  # recorded, acknowledged and counted out (no observer: no event)
        if emitter.active:
            emitter.job(EventKind.JOB_SUCCEEDED, job, duration=trio.current_time() - started)
        if batch_id is None and job.chain_id is not None:  # (`_finish`, one frame less)
            await self._chains.finish(delivery, "succeeded", None, keep=keep)
            return True
        return await self._finish(queue, delivery, "succeeded", None)

    async def _attempt_failed(
        self,
        queue: BrokerQueue,
        delivery: Delivery,
        ctx: JobContext,
        error: Exception,
        base: contextvars.Context,
        direct: bool,
        known: bool = True,
        started: float = 0.0,
    ) -> bool:
        """An attempt raised (called in the handler of its error): put back for a `Release`,
        else `_failed`; for a ``direct`` job, outside its context."""
        if isinstance(error, Release):
            with lease_lost_ok(delivery):
                await queue.retry(delivery, delivery.job, delay=error.delay)
            return False
        failed = self._failed(queue, delivery, ctx, error, known, started)
        # Logging, the failed-job record: not in the job's context (a log filter or a store
        # would see what the handler set there).
        return await (in_context(base.copy(), failed) if direct else failed)

    async def _failed(
        self,
        queue: BrokerQueue,
        delivery: Delivery,
        ctx: JobContext,
        error: Exception,
        known: bool,
        started: float,
    ) -> bool:
        """A failed attempt: retried if it has retries left, else kept and finished."""
        job = delivery.job
        batch_id = job.batch_id
        emitter = self._parts.emitter
        if emitter.active:
            emitter.job(
                EventKind.JOB_FAILED, job, duration=trio.current_time() - started, error=error
            )
        if known and job.attempt <= job.retry and not ctx._flags.no_retry:
            log.warning(
                "bus job %s %s failed (attempt %d of %d): %s; retrying in %gs",
                job.job_type,
                job.job_id,
                job.attempt,
                job.retry + 1,
                describe(error),
                job.backoff,
            )
            if batch_id is not None:
                cancelled = self._batches.cancelled_now(batch_id)  # (no coroutine if it knows)
                if cancelled or (cancelled is None and await self._cancelled(batch_id)):
                    return await self._finish(queue, delivery, "cancelled", None)
            retry = attrs.evolve(job, attempt=job.attempt + 1)
            with lease_lost_ok(delivery):
                await queue.retry(delivery, retry, delay=job.backoff)
            return False
        log.error(
            "bus job %s %s failed for good (attempt %d): %s",
            job.job_type,
            job.job_id,
            job.attempt,
            describe(error),
            exc_info=error,
        )
        try:
            await self._keep_failed(job, error, delivery)
        except LeaseLost as exc:  # a newer holder of the lane has recorded: let the job go
            log.warning("bus lane job %s: %s", job.job_id, exc)
            self._parts.done(1)
            return False
        return await self._finish(queue, delivery, "failed", error)

    async def _state_of(self, owner: str) -> BatchState | ChainState | None:
        kind, _, owner_id = owner.partition(":")
        store = self._parts.store
        read = store.get_batch if kind == "batch" else store.get_chain

        async def state() -> BatchState | ChainState | None:
            try:
                return await read(owner_id)
            except LookupError:
                return None

        # Retried on a store error, like the cancel check: the callback job must not be lost.
        return await self._parts.recorder.write(f"the state of {owner} for its job", state)

    async def _keep_failed(self, job: QueuedJob, error: Exception, delivery: Delivery) -> None:
        parts = self._parts
        record = FailedJob(
            id=job.job_id,
            job_type=job.job_type,
            payload=job.payload,
            queue=job.queue,
            error=describe(error),
            traceback="".join(traceback.format_exception(error)),
            attempts=job.attempt,
            failed_at=parts.clock(),
            job=job,
        )
        await parts.recorder.write(
            f"failed job {job.job_id}", parts.store.record_failed, record, fence_of(delivery)
        )

    async def _finish(
        self,
        queue: BrokerQueue,
        delivery: Delivery,
        outcome: Outcome,
        error: BaseException | None,
    ) -> bool:
        """Hand the final outcome on: to the job's coordinator (True: it lets the job go),
        or acknowledge it here (False)."""
        job = delivery.job
        if job.batch_id is not None:
            if outcome == "succeeded" and self._batches.settle_now(delivery):
                return False  # recorded, acknowledged and counted out (a fast path)
            await self._batches.tell(Done(delivery, outcome, error))
            return True
        if job.chain_id is not None:
            await self._chains.finish(delivery, outcome, error)
            return True
        await self._parts.ack(delivery)
        self._parts.finished((job,))
        return False
