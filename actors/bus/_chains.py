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

from ._broker import Delivery
from ._callbacks import Callback, Owner, run_callback
from ._coordinators import Coordinators, Done
from ._errors import BusError, LeaseLost, NotFound
from ._events import EventKind
from ._fences import fence_of
from ._memory_broker import MemoryQueue
from ._memory_chains import node_of
from ._model import ChainNode, JobRecord, LaneFence, QueuedJob, describe, encode_payload
from ._parts import INSIDE, Parts
from ._rules import ChainStep, Outcome
from ._sqlite import SQLiteStore

log = logging.getLogger("actors.bus")


@attrs.define(eq=False)
class ChainLocal:
    """What only the process that built a chain knows: its callbacks and start time."""

    catch: Callback | None
    finally_: Callback | None
    started_at: float
    has_jobs: bool = False
    r"""Some callbacks are `Job`\ s, stored with the chain."""


def queued(
    node: Any,
    dispatch_id: str,
    *,
    chain_id: str | None = None,
    chain_index: int = 0,
    batch_id: str | None = None,
) -> QueuedJob:
    """A stored node (`JobRecord`) as the first attempt of its job."""
    # Positional: a chain's every step builds one, and keywords cost a third more.
    return QueuedJob(
        node.job_id,
        dispatch_id,
        node.job_type,
        node.payload,
        node.queue,
        node.timeout,
        node.retry,
        node.backoff,
        1,  # attempt
        chain_id,
        chain_index,
        batch_id,
        None,  # callback_of
        None,  # error
        node.lane,
    )


class Chains(Coordinators[Done, None, ChainLocal]):
    """The registry of chain coordinators (a supervisor child of the bus)."""

    kind = "chain"

    def __init__(self, parts: Parts, idle_timeout: float) -> None:
        super().__init__(parts, idle_timeout)
        #: A step may be settled without its coordinator (`tell`): no observer waits for its
        #: events, and the store records a step with no caller waiting.
        self._inline = not parts.emitter.active and (
            parts.memory is not None or type(parts.store) is SQLiteStore
        )
        #: The queues whose puts never yield (`Parts.puts_now`, without its call).
        self._puts_now = frozenset(
            name for name, queue in parts.queues.items() if type(queue) is MemoryQueue
        )

    async def finish(
        self,
        delivery: Delivery,
        outcome: Outcome,
        error: BaseException | None,
        *,
        keep: bool = False,
    ) -> None:
        """Hand a step's final outcome (a worker's) to its chain's coordinator.

        Fast path (DESIGN rule 6): on the memory broker, with no observer and the coordinator
        idle, a succeeded step is recorded right here on a plain `MemoryStore`, or handed to
        a served `SQLiteStore`'s writer, whose task settles it once its group commits (with
        no caller waiting in between). A step that queues the next one (or ends a chain
        without callbacks) is then queued and acknowledged there and then. No user code runs
        in it and nothing in it yields, so no one can tell it from the coordinator doing it;
        anything else (a step with callbacks to run, a duplicate, a failed write to retry)
        goes on to the coordinator, with what was recorded.

        ``keep``: the calling worker takes its queue's next ready job without yielding. A
        next step due now on that queue, with no lane, is then left to it, with no one woken
        (`MemoryQueue.put_kept`): it runs next either way, and a wake-up is a task switch.
        """
        job = delivery.job
        chain_id = job.chain_id
        assert chain_id is not None
        keyed = self._registry
        assert keyed is not None, "the coordinators are not being served"
        if not (
            self._inline
            and outcome == "succeeded"
            and job.queue in self._puts_now
            and keyed.is_idle(chain_id)
        ):
            await keyed.tell(chain_id, Done(delivery, outcome, error))
            return
        await trio.lowlevel.checkpoint_if_cancelled()
        parts = self._parts
        memory = parts.memory
        if memory is not None:
            try:
                step = memory.advance_chain_now(chain_id, job.chain_index, parts.clock())
            except NotFound as exc:
                log.error("bus: cannot record the step of chain %s: %s; dropped", chain_id, exc)
                step = None
            if isinstance(step, tuple):  # the chain goes on with this attempt
                next_job, delay = step
                if next_job.queue in self._puts_now:
                    self._queue_next(delivery, next_job, delay, keep)
                else:
                    node = node_of(next_job, delay)
                    index = job.chain_index + 1
                    self._recorded_on(chain_id, delivery, ChainStep(index, False, False, node))
            else:  # the chain ended, or a duplicate
                self._settle(chain_id, delivery, step, keep)
        else:
            store = parts.store
            assert isinstance(store, SQLiteStore)
            answer = _Recorded(self, chain_id, delivery)
            if not store.record_chain_step_to(
                chain_id, job.chain_index, None, parts.clock(), answer
            ):
                await keyed.tell(chain_id, Done(delivery, outcome, error))
                return
        # No scheduling point here: the worker counts this step among the jobs it runs back
        # to back, and yields after `DRAIN` of them.

    def _recorded(self, chain_id: str, delivery: Delivery, value: BaseException) -> None:
        """In the SQLite writer's task: the step's write failed with ``value``."""
        if isinstance(value, NotFound):
            log.error("bus: cannot record %s: %s; dropped", _what(chain_id, delivery.job), value)
            self._settle(chain_id, delivery, None)
        elif isinstance(value, Exception):  # the coordinator retries it, from this failure
            done = Done(delivery, "succeeded", None)
            done.write_error = value
            self._hand_on(chain_id, done)
        else:  # the writer was cancelled: the bus stops, and its memory queues with it
            self._parts.finished((delivery.job,), in_hand=True)

    def _settle(
        self, chain_id: str, delivery: Delivery, step: ChainStep | None, keep: bool = False
    ) -> None:
        """After the succeeded step was recorded: queue the next one and acknowledge this
        one, if that is all there is to do; else hand the step on to the coordinator."""
        if step is not None:
            node = step.next_node
            if node is None:
                if self._ends_quietly(chain_id, step):
                    job = delivery.job
                    queue = self._parts.queues[job.queue]
                    assert isinstance(queue, MemoryQueue)
                    queue.ack_now(delivery)
                    # A memory queue's jobs are all this bus's (`Parts.mine`), as the
                    # worker counts a plain one.
                    self._parts.done(1)
                    self._parts.let_go(1)
                    self.handled_inline += 1
                    return
            elif node.queue in self._puts_now:
                dispatch_id = delivery.job.dispatch_id
                next_job = queued(node, dispatch_id, chain_id=chain_id, chain_index=step.next_index)
                self._queue_next(delivery, next_job, node.delay, keep)
                return
        self._recorded_on(chain_id, delivery, step)

    def _queue_next(
        self, delivery: Delivery, next_job: QueuedJob, delay: float, keep: bool
    ) -> None:
        """Queue the chain's next attempt (on a memory queue) and acknowledge the step before
        it."""
        parts = self._parts
        queue = parts.queues[delivery.job.queue]
        following = parts.queues[next_job.queue]
        assert isinstance(queue, MemoryQueue)
        assert isinstance(following, MemoryQueue)
        if keep and following is queue and delay <= 0 and next_job.lane is None:
            following.put_kept(next_job)
        else:
            following.put_now((next_job,), delay)
        queue.ack_now(delivery)
        # The next step took this one's place among the bus's outstanding jobs (both are its
        # own, or neither is): the count stays as it is, with nothing to wake.
        parts.let_go(1)
        self.handled_inline += 1

    def _recorded_on(self, chain_id: str, delivery: Delivery, step: ChainStep | None) -> None:
        """The step is recorded (``step``: what the store answered): the rest is the
        coordinator's."""
        done = Done(delivery, "succeeded", None)
        done.recorded, done.step = True, step
        self._hand_on(chain_id, done)

    def _hand_on(self, chain_id: str, done: Done) -> None:
        # The key was idle and a chain has one step out at a time: its mailbox has room.
        if not self._keyed.tell_nowait(chain_id, done):
            raise RuntimeError(f"the coordinator of chain {chain_id} has no room for {done!r}")

    def _ends_quietly(self, chain_id: str, step: ChainStep) -> bool:
        """The chain completed with this step and has no callbacks (it was built here, so
        its `ChainLocal` says so): nothing is left to do but forget it."""
        local = self._local.get(chain_id)
        if not step.completed or local is None or local.has_jobs:
            return False
        if local.catch is not None or local.finally_ is not None:
            return False
        del self._local[chain_id]
        return True

    async def _handle(self, chain_id: str, done: Done) -> None:
        inside = INSIDE.set(True)
        try:
            await self._advance(chain_id, done)
        finally:
            INSIDE.reset(inside)
            self._parts.finished((done.job,), in_hand=True)

    def _record_now(
        self, chain_id: str, job: QueuedJob, failure: str | None, fence: LaneFence | None = None
    ) -> ChainStep | None:
        """Record the step in the plain `MemoryStore` (no yield); None: a duplicate, or gone.
        `LeaseLost` for a lane job's stale ``fence``."""
        memory = self._parts.memory
        assert memory is not None
        try:
            return memory.record_chain_step_now(
                chain_id, job.chain_index, failure, self._parts.clock(), fence
            )
        except NotFound as exc:
            log.error("bus: cannot record the step of chain %s: %s; dropped", chain_id, exc)
            return None

    async def _advance(self, chain_id: str, done: Done) -> None:
        parts, job = self._parts, done.job
        error = done.error if done.outcome == "failed" else None
        failure = None if error is None else describe(error)
        step: ChainStep | None
        fence = fence_of(done.delivery)  # a lane job's: a stale holder's step is refused
        try:
            if done.recorded:  # by the worker, on the fast path (see `tell`)
                step = done.step
            elif parts.memory is not None:
                step = self._record_now(chain_id, job, failure, fence)
            else:
                step = await parts.recorder.write_after(
                    done.write_error,  # None, unless the fast path's write failed: retried here
                    _what(chain_id, job),
                    parts.store.record_chain_step,
                    chain_id,
                    job.chain_index,
                    failure,
                    parts.clock(),
                    fence,
                )
        except LeaseLost as exc:  # a newer holder of the lane has the job: let it go
            log.warning("bus lane job %s: %s", job.job_id, exc)
            return
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
            state = await parts.recorder.read(
                f"the state of chain {chain_id}", parts.store.get_chain, chain_id
            )
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
            jobs = await parts.recorder.read(
                f"the Job callbacks of chain {chain_id}",
                parts.store.job_callbacks,
                f"chain:{chain_id}",
            )
            catch, finally_ = catch or jobs.get("catch"), finally_ or jobs.get("finally")
        if catch is None and finally_ is None:
            return
        state = await parts.recorder.read(
            f"the state of chain {chain_id}", parts.store.get_chain, chain_id
        )
        owner = Owner("chain", chain_id, dispatch_id, state.queue)
        if error is not None and catch is not None:
            await run_callback(
                parts, owner, "catch", catch, (state, error), error=error, recovering=recovering
            )
        if finally_ is not None:
            await run_callback(parts, owner, "finally", finally_, (state,), recovering=recovering)


class _Recorded:
    """The answer to a succeeded step's write sent by `Chains.finish` (the SQLite writer's
    task calls it once its group has committed or failed): settles the step."""

    __slots__ = ("chain_id", "chains", "delivery")

    def __init__(self, chains: Chains, chain_id: str, delivery: Delivery) -> None:
        self.chains, self.chain_id, self.delivery = chains, chain_id, delivery

    def succeed(self, step: ChainStep | None) -> None:
        try:
            self.chains._settle(self.chain_id, self.delivery, step)
        except Exception as exc:  # a bug: the group's other answers still follow
            log.error("bus: settling a step of chain %s failed", self.chain_id, exc_info=exc)

    def fail(self, exc: BaseException) -> None:
        try:
            self.chains._recorded(self.chain_id, self.delivery, exc)
        except Exception as bug:
            log.error("bus: settling a step of chain %s failed", self.chain_id, exc_info=bug)


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
        lane=options.lane,
    )


def _what(chain_id: str, job: QueuedJob) -> str:
    return f"step {job.chain_index} (job {job.job_id}) of chain {chain_id}"


def _fields(chain_id: str, job: QueuedJob) -> dict[str, Any]:
    """The fields of a chain event about ``job``'s step (built only when someone listens)."""
    return {
        "dispatch_id": job.dispatch_id,
        "chain_id": chain_id,
        "job_id": job.job_id,
        "job_type": job.job_type,
        "queue": job.queue,
    }
