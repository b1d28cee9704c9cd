"""The error hierarchy of `actors.bus`.

Every error subclasses `BusError` (itself an `actors.ActorsError`) and the builtin or Trio
error it refines, so ``except LookupError`` or ``except trio.ClosedResourceError`` keep
working. Timeouts of jobs are the builtin `TimeoutError`.
"""

from __future__ import annotations

from .._checks import check_duration
from .._errors import ActorsError, ComponentClosed
from .._errors import LeaseLost as _LeaseLost


class BusError(ActorsError):
    """Base class of every error raised by the bus itself (not by your handlers)."""


class UnknownJobType(BusError, LookupError):
    """`Bus.dispatch` (or a chain or batch) named a job type no handler is registered for.

    Register it first: ``bus.register("emails:send", handler)``, or declare it on the
    `Handlers` given to ``open_bus(handlers=...)``.
    """


class DuplicateJob(BusError):
    """A job with ``unique_for(ttl)`` was dispatched again, same type and payload, within ttl.

    The first dispatch stands; drop this one, or wait until the window has passed.
    """


class NotFound(BusError, LookupError):
    """`find_batch`, `find_chain` or `cancel_batch` got an id the store does not know.

    The id is wrong, or `prune` removed the record.
    """


class BusClosed(ComponentClosed, BusError):
    """The bus was used after its ``async with open_bus(...)`` block ended.

    Move the call inside the block, or open the bus again.
    """


class Release(BusError):
    """Raised by middleware to put a job back on its queue, to run again in ``delay`` seconds.

    Not a failure: the attempt is not counted and the job is not retried for it. `RateLimit`
    and `WithoutOverlapping` raise it; your own middleware may too::

        async def business_hours(ctx, call_next):
            if not open_now():
                raise Release(delay=600.0)
            await call_next(ctx)
    """

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = check_duration(delay, "Release(delay)")
        super().__init__(f"job released back to its queue for {self.delay:g}s")


class StoreError(BusError):
    """A store operation failed; the message names the store (an SQLite file's path).

    The original error is the ``__cause__``. Recording a job's outcome retries on it until
    the write commits (see `Bus.stats`'s ``unrecorded``); elsewhere it reaches the caller.
    """


class InsideBus(BusError, RuntimeError):
    """A call that waits for the whole bus was made from the bus's own work (a handler, a
    callback): ``wait_idle()`` there would wait for itself. Call it from outside the bus."""


class LeaseLost(BusError, _LeaseLost):
    """A broker refused a lane job's ack or retry: its lease lapsed and another worker has
    the job now (its `Delivery.fence` is stale). The worker lets the job go; the outcome it
    computed must not take effect. ``except actors.LeaseLost`` catches it too."""
