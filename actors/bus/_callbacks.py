"""Callbacks of chains and batches, the last step of the flow: claimed in the store, then run.

A callback is a Python callable or a `Job`:

* a callable runs here, in the coordinator, after ``claim_callback`` recorded it: at most
  once, in the process that built the chain or batch (not at all if that process is gone);
* a `Job` is queued through the same claim, so exactly one copy is queued; it runs on any
  worker like every job, its handler reading ``ctx.state`` (and ``ctx.error`` for catch).

A callable that raises becomes a ``callback_failed`` event and an ERROR log line; the bus
goes on.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import attrs
import trio

from ._events import EventKind
from ._model import JobRecord, QueuedJob, describe
from ._parts import Parts

log = logging.getLogger("actors.bus")

#: A callback as a coordinator keeps it: a callable, or a checked `Job` (as its record).
Callback = Any


@attrs.frozen
class Owner:
    """Whose callbacks: ``kind`` "chain" or "batch", the id, and the event fields."""

    kind: str
    id: str
    dispatch_id: str
    queue: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.id}"


async def run_callback(
    parts: Parts,
    owner: Owner,
    name: str,
    callback: Callback,
    args: tuple[Any, ...],
    *,
    error: BaseException | None = None,
    claim: str | None = None,
    recovering: bool = False,
) -> None:
    """Claim callback ``name`` of ``owner`` (as ``claim``, if given) and run or queue it.

    ``progress`` callables are not claimed: the store counts each job's progress once.
    ``recovering``: a redelivered job found its outcome recorded already, so the process
    that recorded it may have died between this claim and queueing the `Job` callback: a
    `Job` is queued even if claimed before (it then may run twice: at least once, like every
    job); a callable still runs at most once.
    """
    claim_name = claim if claim is not None else name
    if isinstance(callback, JobRecord) or name != "progress":
        claimed = await parts.recorder.write(
            f"the claim of the {name} callback of {owner.key}",
            parts.store.claim_callback,
            owner.key,
            claim_name,
            parts.clock(),
        )
        if not claimed and not (recovering and isinstance(callback, JobRecord)):
            return
    if isinstance(callback, JobRecord):
        await _queue_job(parts, owner, callback, error)
        return
    await _call(parts, owner, name, callback, args)


async def _queue_job(
    parts: Parts, owner: Owner, record: JobRecord, error: BaseException | None
) -> None:
    job = QueuedJob(
        job_id=parts.ids(),
        dispatch_id=owner.dispatch_id,
        job_type=record.job_type,
        payload=record.payload,
        queue=record.queue,
        timeout=record.timeout,
        retry=record.retry,
        backoff=record.backoff,
        lane=record.lane,
        callback_of=owner.key,
        error=None if error is None else describe(error),
    )
    await parts.put((job,), record.delay)


async def _call(parts: Parts, owner: Owner, name: str, fn: Any, args: tuple[Any, ...]) -> None:
    emitter = parts.emitter
    fields: dict[str, Any] = {
        "dispatch_id": owner.dispatch_id,
        f"{owner.kind}_id": owner.id,
        "queue": owner.queue,
        "job_type": name,
    }
    if emitter.active:
        emitter.emit(EventKind.CALLBACK_STARTED, **fields)
    started = trio.current_time()
    try:
        result = fn(*args)
        if inspect.isawaitable(result):
            await result
    except Exception as exc:
        log.error("bus: the %s callback of %s raised", name, owner.key, exc_info=exc)
        if emitter.active:
            emitter.emit(
                EventKind.CALLBACK_FAILED,
                duration=trio.current_time() - started,
                error=exc,
                **fields,
            )
        return
    if emitter.active:
        emitter.emit(EventKind.CALLBACK_SUCCEEDED, duration=trio.current_time() - started, **fields)
