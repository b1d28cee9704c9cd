"""Chain coordinators: one keyed actor per chain, the only writer of its chain.

A worker *tells* the chain's coordinator a job's final outcome (`Done`); the coordinator
records the step in the store (retried until it commits), queues the next job, acknowledges
the delivery, and at the end reports the chain and runs its callbacks. What only this process
knows about a chain (its callbacks, when it started) is the coordinator's alone.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
import trio

from ._callbacks import Callback, Owner, run_callback
from ._coordinators import Coordinators, Done
from ._errors import BusError, NotFound
from ._events import EventKind
from ._model import ChainNode, JobRecord, QueuedJob, describe, encode_payload
from ._parts import INSIDE

log = logging.getLogger("actors.bus")


@attrs.define(eq=False)
class ChainLocal:
    """What only the process that built a chain knows: its callbacks and start time."""

    catch: Callback | None
    finally_: Callback | None
    started_at: float
    has_jobs: bool = False
    r"""Some callbacks are `Job`\ s, stored with the chain."""


def queued(node: Any, dispatch_id: str, **ids: Any) -> QueuedJob:
    """A stored node (`JobRecord`) as the first attempt of its job."""
    return QueuedJob(
        job_id=node.job_id,
        dispatch_id=dispatch_id,
        job_type=node.job_type,
        payload=node.payload,
        queue=node.queue,
        timeout=node.timeout,
        retry=node.retry,
        backoff=node.backoff,
        **ids,
    )


class Chains(Coordinators[Done, None, ChainLocal]):
    """The registry of chain coordinators (a supervisor child of the bus)."""

    kind = "chain"

    async def tell(self, done: Done) -> None:
        assert done.job.chain_id is not None
        await self._keyed.tell(done.job.chain_id, done)

    async def _handle(self, chain_id: str, done: Done) -> None:
        inside = INSIDE.set(True)
        try:
            await self._advance(chain_id, done)
        finally:
            INSIDE.reset(inside)
            self._parts.finished((done.job,), in_hand=True)

    async def _advance(self, chain_id: str, done: Done) -> None:
        parts, job = self._parts, done.job
        error = done.error if done.outcome == "failed" else None
        failure = None if error is None else describe(error)
        memory = parts.memory
        if memory is not None:
            try:
                step = memory.record_chain_step_now(
                    chain_id, job.chain_index, failure, parts.clock()
                )
            except NotFound as exc:
                log.error("bus: cannot record the step of chain %s: %s; dropped", chain_id, exc)
                step = None
        else:
            step = await parts.recorder.write(
                f"step {job.chain_index} (job {job.job_id}) of chain {chain_id}",
                parts.store.record_chain_step,
                chain_id,
                job.chain_index,
                failure,
                parts.clock(),
            )
        if step is None:  # a duplicate (or the chain is gone): nothing moves, unless...
            if done.delivery.delivery > 1:
                # ...it is a redelivery: the process that recorded it may have died before
                # it queued the next step or the callbacks. Do those again (at least once).
                await self._recover(chain_id, done, error)
            await parts.ack(done.delivery)
            return
        emitter = parts.emitter
        if step.next_node is not None:
            node = step.next_node
            # Next queued before this one is acknowledged: a crash in between re-runs a
            # step (recorded once), never loses the chain.
            await parts.put(
                (queued(node, job.dispatch_id, chain_id=chain_id, chain_index=step.next_index),),
                node.delay,
            )
            await parts.ack(done.delivery)
            if emitter.active:
                emitter.emit(EventKind.CHAIN_ADVANCED, **_fields(chain_id, job))
            return
        local = self._local.pop(chain_id, None)
        if emitter.active:
            emitter.emit(
                EventKind.CHAIN_FAILED if step.failed else EventKind.CHAIN_COMPLETED,
                duration=None if local is None else trio.current_time() - local.started_at,
                error=error,
                **_fields(chain_id, job),
            )
        # The callbacks are claimed (and Job callbacks queued) before the last step is
        # acknowledged: a crash in between redelivers the step, which queues them again.
        await self._callbacks(chain_id, job.dispatch_id, local, error, recovering=False)
        await parts.ack(done.delivery)

    async def _recover(self, chain_id: str, done: Done, error: BaseException | None) -> None:
        """A redelivered step already recorded: queue the next step again if the chain still
        waits for it, or the end callbacks again if this step ended the chain."""
        parts, job = self._parts, done.job
        try:
            state = await parts.store.get_chain(chain_id)
        except NotFound:
            return
        index = job.chain_index
        waits = not (state.completed or state.failed) and state.next_index == index + 1
        if waits and index + 1 < len(state.nodes):
            node = record_of(state.nodes[index + 1])
            await parts.put(
                (queued(node, job.dispatch_id, chain_id=chain_id, chain_index=index + 1),),
                node.delay,
            )
        elif (state.completed and index == len(state.nodes) - 1) or (
            state.failed and state.next_index == index and state.failure != "cancelled"
        ):
            failure = None if state.failure is None else BusError(state.failure)
            await self._callbacks(
                chain_id, job.dispatch_id, None, error or failure, recovering=True
            )

    async def _callbacks(
        self,
        chain_id: str,
        dispatch_id: str,
        local: ChainLocal | None,
        error: BaseException | None,
        *,
        recovering: bool,
    ) -> None:
        parts = self._parts
        catch = None if local is None else local.catch
        finally_ = None if local is None else local.finally_
        if local is None or local.has_jobs:  # built elsewhere, or with Job callbacks
            jobs = await parts.store.job_callbacks(f"chain:{chain_id}")
            catch, finally_ = catch or jobs.get("catch"), finally_ or jobs.get("finally")
        if catch is None and finally_ is None:
            return
        state = await parts.store.get_chain(chain_id)
        owner = Owner("chain", chain_id, dispatch_id, state.queue)
        if error is not None and catch is not None:
            await run_callback(
                parts, owner, "catch", catch, (state, error), error=error, recovering=recovering
            )
        if finally_ is not None:
            await run_callback(parts, owner, "finally", finally_, (state,), recovering=recovering)


def record_of(node: ChainNode) -> JobRecord:
    """A stored chain node (`ChainNode`) as the `JobRecord` it was made from."""
    job, options = node.job, node.job.options
    assert options.queue is not None  # a stored node always names its queue
    return JobRecord(
        job_id=node.node_id,
        job_type=job.type,
        payload=encode_payload(job.type, job.payload),
        queue=options.queue,
        delay=options.delay,
        timeout=options.timeout,
        retry=options.retry,
        backoff=options.backoff,
    )


def _fields(chain_id: str, job: QueuedJob) -> dict[str, Any]:
    """The fields of a chain event about ``job``'s step (built only when someone listens)."""
    return {
        "dispatch_id": job.dispatch_id,
        "chain_id": chain_id,
        "job_id": job.job_id,
        "job_type": job.job_type,
        "queue": job.queue,
    }
