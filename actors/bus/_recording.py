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
    """Runs store writes until they commit, and counts the ones that had to wait."""

    def __init__(self, store: object) -> None:
        self._store = store
        self.waiting = 0
        """Writes that failed at least once and have not committed yet."""
        self.errors = 0
        """Failed tries so far."""

    async def write(
        self, what: str, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any
    ) -> T | None:
        """``await fn(*args)`` until it returns; ``None`` if the record is gone (`NotFound`).

        ``what`` names the write in logs ("the outcome of job 1a-2 of batch 1a-1").
        """
        try:
            return await fn(*args, **kwargs)
        except LeaseLost:  # a lane job's stale holder: refused, not a store failure
            raise
        except NotFound as exc:
            log.error("bus: cannot record %s: %s; dropped", what, exc)
            return None
        except Exception as exc:
            first = exc
        self.waiting += 1
        try:
            return await self._retry(what, lambda: fn(*args, **kwargs), first)
        finally:
            self.waiting -= 1

    async def _retry(self, what: str, call: Callable[[], Awaitable[T]], exc: Exception) -> T | None:
        pause, tries = FIRST_PAUSE, 0
        while True:
            self.errors += 1
            tries += 1
            log.warning(
                "bus: recording %s in %r failed (%s: %s); retrying in %gs",
                what,
                self._store,
                type(exc).__name__,
                exc,
                pause,
            )
            await trio.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE)
            try:
                result = await call()
            except LeaseLost:
                raise
            except NotFound as gone:
                log.error("bus: cannot record %s: %s; dropped", what, gone)
                return None
            except Exception as again:
                exc = again
                continue
            log.warning("bus: recorded %s after %d failed tries", what, tries)
            return result
