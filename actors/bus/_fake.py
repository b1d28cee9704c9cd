"""`FakeBus`: records what your code dispatches, runs nothing, and asserts on it.

Hand it to the code under test where it expects a bus (or use the ``fake_bus`` pytest
fixture), then::

    fake.assert_dispatched("emails:send")
    fake.assert_chained(["orders:reserve", "orders:charge"])
    fake.assert_batched(lambda spec: spec.name == "nightly" and len(spec.job_types) == 3)
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime

import attrs
import trio

from .._checks import check_async_fn
from .._clock import trio_clock
from .._keys import check_key
from ._builders import BatchBuilder, ChainBuilder, check_jobs
from ._errors import NotFound
from ._handlers import H, Handler, Handlers, handler_decorator
from ._job_checks import check_all, check_job, check_many
from ._model import (
    BatchState,
    ChainNode,
    ChainState,
    DispatchResult,
    Job,
    JobOptions,
    id_source,
)
from ._rules import FailedJob


@attrs.frozen
class BatchSpec:
    """A recorded batch, as `FakeBus.assert_batched` hands it to your predicate."""

    job_types: tuple[str, ...]
    name: str | None
    queue: str


def _types(jobs: Sequence[Job]) -> list[str]:
    return [job.type for job in jobs]


class FakeBus:
    """A stand-in for `Bus` that records dispatches, chains and batches instead of running them.

    It checks jobs as the real bus does (payloads must be JSON-serialisable, callbacks
    callables or Jobs). Given ``handlers=`` (the `Handlers` your bus opens with), it refuses
    job types they do not handle (`UnknownJobType`); given ``queues=``, unknown queues
    (`ValueError`): as the real bus does. Without them it accepts any type and queue. It
    never raises `DuplicateJob`.
    """

    def __init__(
        self,
        *,
        handlers: Handlers | None = None,
        queues: Collection[str] | None = None,
        default_queue: str | None = None,
    ) -> None:
        if handlers is not None and not isinstance(handlers, Handlers):
            raise TypeError(f"handlers must be an actors.bus.Handlers, got {handlers!r}")
        if queues is not None:
            if isinstance(queues, str) or not isinstance(queues, Collection) or not queues:
                raise TypeError(
                    f"queues must name the bus's queues, e.g. ['default'], got {queues!r}"
                )
            queues = [check_key(q, "queue name") for q in queues]
        if default_queue is None:
            default_queue = "default" if not queues else next(iter(queues))
        self.default_queue = check_key(default_queue, "default_queue")
        self._queues = queues
        self._known: dict[str, Handler] | None = None if handlers is None else handlers.table()
        #: Jobs passed to `dispatch`, in order.
        self.dispatched: list[Job] = []
        #: Chains dispatched, as their jobs, in order.
        self.chains: list[ChainBuilder] = []
        #: Batches dispatched, in order.
        self.batches: list[BatchBuilder] = []
        self.handlers: dict[str, Handler] = {}
        self._ids = id_source()
        self._clock: Callable[[], datetime] | None = None
        self._batch_states: dict[str, BatchState] = {}
        self._chain_states: dict[str, ChainState] = {}

    def __repr__(self) -> str:
        return (
            f"<FakeBus dispatched={len(self.dispatched)} chains={len(self.chains)} "
            f"batches={len(self.batches)}>"
        )

    # ------------------------------------------------------------------ the Bus surface

    def register(self, job_type: str, handler: Handler) -> None:
        """Remember the handler (it never runs)."""
        check_key(job_type, "job type")
        check_async_fn(handler, "handler")
        self.handlers[job_type] = handler
        if self._known is not None:
            self._known[job_type] = handler

    def handler(self, job_type: str) -> Callable[[H], H]:
        """Decorator form of `register`."""
        return handler_decorator(self.register, job_type)

    def _check(self, job: Job, queue: str | None) -> None:
        check_job(job, self._known, self._queues, job.options.queue or queue or self.default_queue)

    async def dispatch(self, job: Job) -> DispatchResult:
        """Record ``job`` (after the same payload check as the real bus)."""
        if not isinstance(job, Job):
            raise TypeError(f"dispatch() takes an actors.bus.Job, got {type(job).__name__}")
        self._check(job, None)
        await trio.lowlevel.checkpoint()
        self.dispatched.append(job)
        return DispatchResult(self._ids(), self._ids(), job.options.queue or self.default_queue)

    async def dispatch_many(self, jobs: Iterable[Job]) -> list[DispatchResult]:
        """Record every job in ``dispatched`` (after the real bus's checks: one it would
        refuse refuses the whole call, and nothing is recorded)."""
        found = check_many(jobs)
        check_all(found, lambda job: self._check(job, None))
        await trio.lowlevel.checkpoint()
        self.dispatched.extend(found)
        return [
            DispatchResult(self._ids(), self._ids(), job.options.queue or self.default_queue)
            for job in found
        ]

    def chain(self, *jobs: Job) -> ChainBuilder:
        return ChainBuilder(self, check_jobs(jobs, "chain"))

    def batch(self, *jobs: Job) -> BatchBuilder:
        return BatchBuilder(self, check_jobs(jobs, "batch"))

    def _now(self) -> datetime:
        if self._clock is None:
            self._clock = trio_clock()
        return self._clock()

    def _check_all(self, builder: ChainBuilder | BatchBuilder, callbacks: list[object]) -> None:
        for job in builder.jobs:
            self._check(job, builder.queue)
        for callback in callbacks:
            if isinstance(callback, Job):
                self._check(callback, builder.queue)

    async def _submit_chain(self, chain: ChainBuilder) -> str:
        self._check_all(chain, [chain.catch_callback, chain.finally_callback])
        await trio.lowlevel.checkpoint()
        self.chains.append(chain)
        chain_id, now = self._ids(), self._now()
        queue = chain.queue or self.default_queue
        self._chain_states[chain_id] = ChainState(
            chain_id=chain_id,
            dispatch_id=self._ids(),
            queue=queue,
            nodes=tuple(
                ChainNode(
                    self._ids(),
                    attrs.evolve(job, options=_with_queue(job.options, queue)),
                )
                for job in chain.jobs
            ),
            next_index=0,
            completed=False,
            failed=False,
            failure=None,
            created_at=now,
            updated_at=now,
        )
        return chain_id

    async def _submit_batch(self, batch: BatchBuilder) -> str:
        self._check_all(
            batch,
            [
                batch.progress_callback,
                batch.then_callback,
                batch.catch_callback,
                batch.finally_callback,
            ],
        )
        await trio.lowlevel.checkpoint()
        self.batches.append(batch)
        batch_id, now = self._ids(), self._now()
        self._batch_states[batch_id] = BatchState(
            batch_id=batch_id,
            dispatch_id=self._ids(),
            name=batch.batch_name,
            queue=batch.queue or self.default_queue,
            allow_failures=batch.allows_failures,
            total=len(batch.jobs),
            pending=len(batch.jobs),
            processed=0,
            failed=0,
            cancelled=False,
            completed=False,
            created_at=now,
            updated_at=now,
        )
        return batch_id

    async def wait_idle(self) -> None:
        """Nothing runs, so the fake is always idle."""
        await trio.lowlevel.checkpoint()

    async def find_batch(self, batch_id: str) -> BatchState:
        """The recorded batch (nothing processed); `NotFound` (a `LookupError`) if unknown."""
        await trio.lowlevel.checkpoint()
        try:
            return self._batch_states[batch_id]
        except KeyError:
            raise NotFound(f"FakeBus recorded no batch {batch_id!r}") from None

    async def find_chain(self, chain_id: str) -> ChainState:
        """The recorded chain (not started); `NotFound` (a `LookupError`) if unknown."""
        await trio.lowlevel.checkpoint()
        try:
            return self._chain_states[chain_id]
        except KeyError:
            raise NotFound(f"FakeBus recorded no chain {chain_id!r}") from None

    async def cancel_batch(self, batch_id: str, *, abandon: bool = False) -> BatchState:
        """Mark the recorded batch cancelled (and completed, with ``abandon=True``)."""
        state = await self.find_batch(batch_id)
        if not state.completed:
            if abandon:
                state = attrs.evolve(state, cancelled=True, completed=True, pending=0)
            else:
                state = attrs.evolve(state, cancelled=True)
            self._batch_states[batch_id] = state
        return state

    async def cancel_chain(self, chain_id: str) -> ChainState:
        """Mark the recorded chain failed with "cancelled"."""
        state = await self.find_chain(chain_id)
        if not (state.completed or state.failed):
            state = attrs.evolve(state, failed=True, failure="cancelled")
            self._chain_states[chain_id] = state
        return state

    async def failed_jobs(self) -> list[FailedJob]:
        """Nothing runs, so nothing fails."""
        await trio.lowlevel.checkpoint()
        return []

    async def retry_failed(self, job_id: str) -> DispatchResult:
        """No job failed: `NotFound`."""
        await trio.lowlevel.checkpoint()
        raise NotFound(f"FakeBus has no failed job {job_id!r} (nothing runs in a FakeBus)")

    async def prune(self, before: datetime) -> int:
        """Nothing to prune."""
        await trio.lowlevel.checkpoint()
        return 0

    # ------------------------------------------------------------------ assertions

    def _dispatched_types(self) -> list[str]:
        return _types(self.dispatched)

    def assert_dispatched(self, job_type: str) -> None:
        """At least one job of ``job_type`` was dispatched."""
        if job_type not in self._dispatched_types():
            raise AssertionError(
                f"expected a {job_type!r} job to be dispatched, but none was; "
                f"dispatched: {self._dispatched_types()}"
            )

    def assert_dispatched_times(self, job_type: str, times: int) -> None:
        """Exactly ``times`` jobs of ``job_type`` were dispatched."""
        count = self._dispatched_types().count(job_type)
        if count != times:
            raise AssertionError(
                f"expected {job_type!r} to be dispatched {times} time(s), but it was "
                f"dispatched {count} time(s); dispatched: {self._dispatched_types()}"
            )

    def assert_not_dispatched(self, job_type: str) -> None:
        """No job of ``job_type`` was dispatched."""
        count = self._dispatched_types().count(job_type)
        if count:
            raise AssertionError(
                f"expected no {job_type!r} job to be dispatched, but {count} was/were"
            )

    def assert_nothing_dispatched(self) -> None:
        """`dispatch` was never called."""
        if self.dispatched:
            raise AssertionError(
                f"expected nothing to be dispatched, but {len(self.dispatched)} job(s) were: "
                f"{self._dispatched_types()}"
            )

    def assert_count(self, count: int) -> None:
        """Exactly ``count`` jobs were dispatched (chains and batches not included)."""
        if len(self.dispatched) != count:
            raise AssertionError(
                f"expected {count} dispatched job(s), got {len(self.dispatched)}: "
                f"{self._dispatched_types()}"
            )

    def assert_dispatched_on(self, queue: str, job_type: str) -> None:
        """A job of ``job_type`` was dispatched on ``queue``."""
        queues = [
            job.options.queue or self.default_queue
            for job in self.dispatched
            if job.type == job_type
        ]
        if queue not in queues:
            seen = f"on queue(s) {sorted(set(queues))}" if queues else "never"
            raise AssertionError(
                f"expected {job_type!r} to be dispatched on queue {queue!r}, but it was "
                f"dispatched {seen}"
            )

    def assert_chained(self, job_types: Sequence[str]) -> None:
        """A chain of exactly these job types, in this order, was dispatched."""
        expected = list(job_types)
        chains = [_types(chain.jobs) for chain in self.chains]
        if expected not in chains:
            raise AssertionError(
                f"expected a chain {expected}, but the chains dispatched were: {chains or 'none'}"
            )

    def batch_specs(self) -> list[BatchSpec]:
        """The recorded batches as `BatchSpec` values."""
        return [
            BatchSpec(
                job_types=tuple(_types(batch.jobs)),
                name=batch.batch_name,
                queue=batch.queue or self.default_queue,
            )
            for batch in self.batches
        ]

    def assert_batched(self, predicate: Callable[[BatchSpec], bool]) -> None:
        """At least one recorded batch satisfies ``predicate(spec)``."""
        if not callable(predicate):
            raise TypeError(f"assert_batched() takes a predicate(BatchSpec), got {predicate!r}")
        specs = self.batch_specs()
        if not any(predicate(spec) for spec in specs):
            raise AssertionError(
                f"expected a batch matching {getattr(predicate, '__name__', predicate)}, "
                f"but none of the {len(specs)} batch(es) did: {specs}"
            )

    def assert_batch_count(self, count: int) -> None:
        """Exactly ``count`` batches were dispatched."""
        if len(self.batches) != count:
            raise AssertionError(f"expected {count} batch(es), got {len(self.batches)}")

    def assert_nothing_batched(self) -> None:
        """No batch was dispatched."""
        if self.batches:
            raise AssertionError(
                f"expected no batch, but {len(self.batches)} were dispatched: {self.batch_specs()}"
            )


def _with_queue(options: JobOptions, queue: str) -> JobOptions:
    return options if options.queue else attrs.evolve(options, queue=queue)
