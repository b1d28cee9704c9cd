"""The memory broker's worker loop: ready jobs back to back; a plain job's first attempt,
and a batch job whose success its worker may count, run inline (the fast paths of `Worker`,
DESIGN rule 6; each compared with the slow path in tests/actors/bus/test_worker_drain.py,
test_plain_fast_path.py and test_inline_batch_jobs.py)."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Coroutine
from types import CoroutineType
from typing import Any

import trio

from .._contexts import _InContext
from ._broker import BrokerQueue, Delivery
from ._events import EventKind
from ._memory_broker import MemoryQueue, queued
from ._model import NO_FLAGS, JobContext, QueuedJob, decode_payload
from ._parts import INSIDE
from ._worker import Worker, job_context

#: A memory worker runs at most this many ready jobs back to back before it yields (as the
#: actor core does with its mailboxes).
DRAIN = 16


class MemoryWorker(Worker):
    """A `Worker` whose tasks on a memory queue run `_serve_memory`."""

    def serve(self, queue: BrokerQueue) -> Callable[..., Coroutine[Any, Any, None]]:
        return self._serve_memory if type(queue) is MemoryQueue else super().serve(queue)

    async def _serve_memory(
        self, queue: MemoryQueue, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """`serve` for the memory broker (see `_run`'s ``fresh`` and ``quick``)."""
        INSIDE.set(True)
        # Every job runs in a fresh copy of this context (DESIGN rule 6): what one handler
        # writes to a context variable is not seen by the next job this worker takes.
        base = contextvars.copy_context()
        task_status.started()
        task = trio.lowlevel.current_task()
        parts, handlers, bare = self._parts, self._handlers, self._bare
        emitter = parts.emitter
        batches = self._batches
        quick_entry = batches.quick.get  # (the same dict for the bus's life)
        # Jobs run back to back since this task last yielded. While the task's context is
        # clean (no job ran in it), the worker takes the next ready job without a scheduling
        # point, up to `DRAIN` of them, as an actor drains its mailbox; then it yields, so
        # handlers that never await cannot starve other tasks.
        run = 0
        clean = True
        while True:
            # The last job, a chain step, left its next step to this task (`put_kept`) right
            # after a cancel check, and nothing yielded or ran user code since: the check
            # before the next job taken here would find what that one found (not cancelled).
            checked = queue.checked
            queue.checked = False
            item = queue.take_now() if clean and run < DRAIN else None
            fresh = item is None
            if item is None:
                # Trio resumes a task in its `Task.context`, and the memory broker's take is
                # a scheduling point (a checkpoint or a park): the job it returns runs in
                # this fresh copy from its first line (see `_run`).
                task.context = base.copy()
                item = await queue.take(task)
                run = 0
            parts.in_hand += 1
            run += 1
            if bare and type(item) is QueuedJob and item.batch_id is not None:
                entry = quick_entry(item.batch_id)
                if (
                    entry is not None
                    and item.chain_id is None
                    and item.callback_of is None
                    and item.lane is None
                    and item.timeout is None
                    and not emitter.active
                    and not entry.row.cancelled
                    and item.job_type in handlers
                ):
                    # `_run` of a batch job whose success its worker may count itself
                    # (`Batches.settle_now`), inlined: no `Delivery` unless it must go on.
                    clean = True  # (it runs in a context of its own)
                    held = True  # counted in hand: let go at the end unless settled
                    try:
                        if not (fresh or checked):
                            try:
                                await trio.lowlevel.checkpoint_if_cancelled()
                            except trio.Cancelled:
                                delivery = Delivery(item, 1, "")
                                with trio.CancelScope(shield=True):
                                    await queue.release([delivery], started=False)
                                raise
                        ctx = job_context(item, None, 1, 0, NO_FLAGS)  # (as `_run`)
                        coro: Any = handlers[item.job_type](ctx)
                        if type(coro) is not CoroutineType:
                            coro = coro.__await__()
                        context = base.copy()  # `in_context`, inlined
                        try:
                            try:
                                first = context.run(coro.send, None)
                            except StopIteration:
                                pass
                            else:
                                await _InContext(context, coro, first)
                        except Exception as exc:
                            delivery = Delivery(item, 1, "")
                            held = not await self._attempt_failed(
                                queue, delivery, ctx, exc, base, False
                            )
                            continue
                        if batches.counted_here(entry, item):
                            queue._running -= 1  # `ack_now` (on no lane): inlined
                            parts.settled_here()  # a batch built here: this bus's own
                            held = False
                            continue
                        delivery = Delivery(item, 1, "")
                        if emitter.active:  # (attached by the handler: as `_run` emits it)
                            emitter.job(EventKind.JOB_SUCCEEDED, item, duration=trio.current_time())
                        held = not await self._finish(queue, delivery, "succeeded", None)
                    except Exception:
                        self._broke(queue, Delivery(item, 1, ""))
                    finally:
                        if held:
                            parts.let_go(1)
                    continue
            # A plain job with no observer: settled right where it ends. (A `Plain` is a
            # plain dispatch's first attempt, put only while no observer is attached.)
            if isinstance(item, tuple):
                quick = not emitter.active
            else:
                quick = (
                    item.batch_id is None
                    and item.chain_id is None
                    and item.callback_of is None
                    and not emitter.active
                )
            if fresh and quick and len(queue._ready) > queue._reserved:  # (a job free: inlined)
                # More jobs are ready: step this one in a context of its own (`_run`), so
                # the task's stays clean and the next ones follow without a take.
                fresh = False
            # A plain job run right in the task's context (`_run`'s ``direct``) may write to
            # it: the next job must come through a fresh copy and a take.
            clean = not (fresh and quick)
            if not clean and bare and isinstance(item, tuple):
                # `_run` of a direct first attempt whose handler is called as it is (no
                # middleware), inlined: no `QueuedJob` or `Delivery` unless it fails.
                result, spec, payload = item
                job_type = spec.type
                if spec.options.timeout is None and job_type in handlers:
                    settled = False
                    try:
                        ctx = JobContext(
                            None if payload == "null" else decode_payload(payload),
                            1,  # attempt
                            job_type,
                            result.dispatch_id,
                            result.job_id,
                            None,  # chain_id
                            None,  # batch_id
                            result.queue,
                            None,  # state
                            None,  # error
                            1,  # delivery
                            0,  # fence
                            NO_FLAGS,  # (no middleware, no timeout: nothing sets them)
                        )
                        try:
                            await handlers[job_type](ctx)
                        except Exception as exc:
                            delivery = Delivery(queued(item), 1, "")
                            await self._attempt_failed(queue, delivery, ctx, exc, base, True)
                        else:
                            queue._running -= 1  # `ack_now` of a `Plain` (on no lane): inlined
                            parts.settled_here()  # a memory queue's jobs are all this bus's
                            settled = True
                    except Exception:
                        self._broke(queue, Delivery(queued(item), 1, ""))
                    finally:
                        if not settled:
                            parts.let_go(1)
                    continue
            job = queued(item)
            delivery = Delivery(job, 1, "")
            handed = False
            try:
                # (``keep``: this task takes the next ready job without yielding, below.)
                handed = await self._run(queue, delivery, base, fresh, quick, run < DRAIN, checked)
            except Exception:
                queue.checked = False  # (a log handler runs next)
                self._broke(queue, delivery)
            finally:
                if not handed:  # else its coordinator lets it go, once it is recorded
                    parts.let_go(1)
