"""Chain and batch builders: immutable, fluent, checked as they are built.

``bus.chain(Job("a"), Job("b")).on_queue("q").catch(cb).finally_(cb)`` makes a `ChainBuilder`;
nothing happens until ``await builder.dispatch()``. Each method returns a new builder, so a
half-built one can be reused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs

from ._model import (
    BatchState,
    ChainState,
    Job,
    check_callback,
    check_text,
)

#: A callback: a callable taking the state (and the error, for catch), or a `Job` whose
#: handler reads ``ctx.state`` (and ``ctx.error``).
ChainCallback = Callable[[ChainState], object] | Job
ChainCatch = Callable[[ChainState, BaseException], object] | Job
BatchCallback = Callable[[BatchState], object] | Job
BatchCatch = Callable[[BatchState, BaseException], object] | Job


class _Owner(Protocol):
    def _submit_chain(self, chain: ChainBuilder) -> Awaitable[str]: ...
    async def _submit_batch(self, batch: BatchBuilder) -> str: ...


def check_jobs(jobs: tuple[object, ...], what: str) -> tuple[Job, ...]:
    if len(jobs) == 1 and isinstance(jobs[0], list | tuple):
        jobs = tuple(jobs[0])
    if not jobs:
        raise ValueError(f"a {what} needs at least one Job")
    last = None
    for job in jobs:
        if job is last:  # (``bus.batch(*[job] * 100)``: checked once)
            continue
        last = job
        if not isinstance(job, Job):
            raise TypeError(f"a {what} takes actors.bus.Job objects, got {type(job).__name__}")
        if job.options.unique_for is not None:
            raise ValueError(
                f"unique_for applies to bus.dispatch() only; remove it from {job.type!r} "
                f"in this {what}"
            )
    return jobs  # type: ignore[return-value]


@attrs.frozen
class ChainBuilder:
    """Jobs that run one after another; a failure (after its retries) stops the chain.

    ``catch(state, error)`` runs once if a job fails, ``finally_(state)`` once at the end,
    whatever happened. A callback is a callable (sync or async) or a `Job`.
    """

    _owner: _Owner = attrs.field(repr=False)
    jobs: tuple[Job, ...]
    queue: str | None = None
    catch_callback: ChainCatch | None = None
    finally_callback: ChainCallback | None = None

    def on_queue(self, name: str) -> ChainBuilder:
        """Run the jobs that set no queue of their own on ``name``."""
        return attrs.evolve(self, queue=check_text(name, "queue name"))

    def catch(self, callback: ChainCatch) -> ChainBuilder:
        """Call ``callback(state, error)`` once if a job of the chain fails."""
        check_callback(callback, "catch callback")
        return attrs.evolve(self, catch_callback=callback)

    def finally_(self, callback: ChainCallback) -> ChainBuilder:
        """Call ``callback(state)`` once when the chain has ended, completed or failed."""
        check_callback(callback, "finally_ callback")
        return attrs.evolve(self, finally_callback=callback)

    async def dispatch(self) -> str:
        """Store the chain, queue its first job, and return the chain id."""
        return await self._owner._submit_chain(self)


@attrs.frozen
class BatchBuilder:
    """Jobs that run in parallel, counted together.

    ``progress(state)`` after each job finishes; ``catch(state, error)`` once at the first
    failure (which, without `allow_failures`, also cancels the jobs not started yet);
    ``then(state)`` once if every job succeeded; ``finally_(state)`` once at the end.
    """

    _owner: _Owner = attrs.field(repr=False)
    jobs: tuple[Job, ...]
    batch_name: str | None = None
    queue: str | None = None
    allows_failures: bool = False
    progress_callback: BatchCallback | None = None
    then_callback: BatchCallback | None = None
    catch_callback: BatchCatch | None = None
    finally_callback: BatchCallback | None = None

    def name(self, name: str) -> BatchBuilder:
        """A display name, kept in the `BatchState`."""
        return attrs.evolve(self, batch_name=check_text(name, "batch name"))

    def on_queue(self, name: str) -> BatchBuilder:
        """Run the jobs that set no queue of their own on ``name``."""
        return attrs.evolve(self, queue=check_text(name, "queue name"))

    def allow_failures(self, allow: bool = True) -> BatchBuilder:
        """Keep running the other jobs when one fails (``catch`` still runs once)."""
        if not isinstance(allow, bool):
            raise TypeError(f"allow_failures takes a bool, got {allow!r}")
        return attrs.evolve(self, allows_failures=allow)

    def progress(self, callback: BatchCallback) -> BatchBuilder:
        """Call ``callback(state)`` after each job finishes, successfully or not."""
        check_callback(callback, "progress callback")
        return attrs.evolve(self, progress_callback=callback)

    def then(self, callback: BatchCallback) -> BatchBuilder:
        """Call ``callback(state)`` once, at the end, if every job succeeded."""
        check_callback(callback, "then callback")
        return attrs.evolve(self, then_callback=callback)

    def catch(self, callback: BatchCatch) -> BatchBuilder:
        """Call ``callback(state, error)`` once, at the batch's first failure."""
        check_callback(callback, "catch callback")
        return attrs.evolve(self, catch_callback=callback)

    def finally_(self, callback: BatchCallback) -> BatchBuilder:
        """Call ``callback(state)`` once when the batch is over, whatever happened."""
        check_callback(callback, "finally_ callback")
        return attrs.evolve(self, finally_callback=callback)

    async def dispatch(self) -> str:
        """Store the batch, queue its jobs, and return the batch id."""
        return await self._owner._submit_batch(self)
