"""Writing outcomes to the store: retried until the write commits, never dropped, never silent.

A job's outcome (a chain step, a batch job, a failed-job record, a callback claim) is what
the rest of the bus waits for, so a failing write is retried: after 0.05 s, doubling up to
5 s, for as long as it takes. Every failed try is logged at WARNING with the store and the
error, counted in `Bus.stats` (``store_errors``; ``unrecorded`` while writes wait), and the
job stays outstanding, so `Bus.wait_idle` does not return while an outcome waits to be
recorded. A store raises only for a write that did not commit (its transaction rolled back),
so a retry is that write's first effect; and outcomes are counted once by job id, so the same
outcome delivered twice (a redelivered job) counts once.

`NotFound` is not retried: the chain or batch is gone (pruned, or never in this store), so
there is nothing to record into; it is logged at ERROR and the outcome is dropped. Nor is
`LeaseLost`: the store refused a lane job's holder whose lease lapsed (`actors.bus._fences`),
and the caller lets the job go.

The store reads that finishing an outcome needs (a coordinator's `Store.get_chain` and
`Store.job_callbacks`) are retried the same way (`Recorder.read`), logged and counted alike;
for them `NotFound` goes back to the caller, which knows what a gone record means.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from ._errors import LeaseLost, NotFound

log = logging.getLogger("actors.bus")

T = TypeVar("T")

FIRST_PAUSE = 0.05
MAX_PAUSE = 5.0


class Recorder:
    """Runs store writes until they commit (and coordinators' store reads until they
    answer), and counts the ones that had to wait."""

    def __init__(self, store: object) -> None:
        self._store = store
        self.waiting = 0
        """Writes (and reads) that failed at least once and have not succeeded yet."""
        self.errors = 0
        """Failed tries so far."""

    async def write(
        self, what: str, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any
    ) -> T | None:
        """``await fn(*args)`` until it returns; ``None`` if the record is gone (`NotFound`).

        ``what`` names the write in logs ("the outcome of job 1a-2 of batch 1a-1").
        """
        return await self.write_after(None, what, fn, *args, **kwargs)

    async def write_after(
        self,
        error: Exception | None,
        what: str,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        **kwargs: Any,
    ) -> T | None:
        """`write`, for a write whose first try (made elsewhere) failed with ``error``: it is
        logged, counted and retried from there, as if `write` had made it. None: `write`."""
        try:
            return await self._until_done(f"recording {what}", fn, args, kwargs, error)
        except NotFound as exc:
            log.error("bus: cannot record %s: %s; dropped", what, exc)
            return None

    async def read(self, what: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await fn(*args)`` until it answers, retried as `write` is: a coordinator that
        cannot read its chain's or batch's state or `Job` callbacks must wait, not drop the
        outcome it is finishing. `NotFound` is the caller's to handle (the record is gone).

        ``what`` names the read in logs ("the state of chain 1a-1").
        """
        return await self._until_done(f"reading {what}", fn, args, {})

    async def _until_done(
        self,
        doing: str,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        failed: Exception | None = None,
    ) -> T:
        """``await fn(*args, **kwargs)``, retried on every error but `NotFound` (raised);
        ``failed``: the first try was made already, and failed with this."""
        if failed is not None:
            error = failed
        else:
            try:
                return await fn(*args, **kwargs)
            except (NotFound, LeaseLost):  # a lane job's stale holder: refused, not failed
                raise
            except Exception as exc:
                error = exc
        self.waiting += 1
        try:
            pause, tries = FIRST_PAUSE, 0
            while True:
                self.errors += 1
                tries += 1
                log.warning(
                    "bus: %s in %r failed (%s: %s); retrying in %gs",
                    doing,
                    self._store,
                    type(error).__name__,
                    error,
                    pause,
                )
                await trio.sleep(pause)
                pause = min(pause * 2, MAX_PAUSE)
                try:
                    result = await fn(*args, **kwargs)
                except (NotFound, LeaseLost):
                    raise
                except Exception as again:
                    error = again
                    continue
                log.warning("bus: %s succeeded after %d failed tries", doing, tries)
                return result
        finally:
            self.waiting -= 1
