"""actors.bus: a job bus whose chains and batches are coordinated by actors.

::

    from actors.bus import Job, JobContext, open_bus

    async with open_bus(queues={"default": 4}) as bus:
        @bus.handler("emails:send")
        async def send(ctx: JobContext) -> None:
            await smtp.send(ctx.payload["to"])

        await bus.dispatch(Job("emails:send", {"to": "a@b"}).retry(3).backoff(0.5))
        await bus.wait_idle()

Jobs run on queue workers; each chain and each batch has a coordinator, a keyed actor that
alone advances the chain or counts the batch and runs its callbacks, with its state in a
`Store` (`MemoryStore`, or `SQLiteStore` to survive restarts). Test your own code against
`FakeBus` (the ``fake_bus`` pytest fixture).
"""

from ._builders import BatchBuilder as BatchBuilder
from ._builders import ChainBuilder as ChainBuilder
from ._bus import Bus as Bus
from ._bus import BusStats as BusStats
from ._bus import Handler as Handler
from ._bus import Observer as Observer
from ._bus import open_bus as open_bus
from ._errors import BusClosed as BusClosed
from ._errors import BusError as BusError
from ._errors import DuplicateJob as DuplicateJob
from ._errors import NotFound as NotFound
from ._errors import Release as Release
from ._errors import UnknownJobType as UnknownJobType
from ._events import Event as Event
from ._events import EventKind as EventKind
from ._fake import BatchSpec as BatchSpec
from ._fake import FakeBus as FakeBus
from ._middleware import CallNext as CallNext
from ._middleware import FailOnError as FailOnError
from ._middleware import Lock as Lock
from ._middleware import Locker as Locker
from ._middleware import MemoryLocker as MemoryLocker
from ._middleware import MemoryRateLimiter as MemoryRateLimiter
from ._middleware import Middleware as Middleware
from ._middleware import RateLimit as RateLimit
from ._middleware import RateLimiter as RateLimiter
from ._middleware import SkipWhen as SkipWhen
from ._middleware import WithoutOverlapping as WithoutOverlapping
from ._model import BatchState as BatchState
from ._model import ChainNode as ChainNode
from ._model import ChainState as ChainState
from ._model import DispatchResult as DispatchResult
from ._model import Job as Job
from ._model import JobContext as JobContext
from ._model import JobOptions as JobOptions
from ._model import JobRecord as JobRecord
from ._model import QueuedJob as QueuedJob
from ._queue import MemoryQueue as MemoryQueue
from ._queue import Queue as Queue
from ._queue import QueueStats as QueueStats
from ._redis_broker import RedisBroker as RedisBroker
from ._sqlite import SQLiteStore as SQLiteStore
from ._sqlite_broker import SQLiteBroker as SQLiteBroker
from ._store import BatchRecord as BatchRecord
from ._store import BatchUpdate as BatchUpdate
from ._store import ChainRecord as ChainRecord
from ._store import ChainStep as ChainStep
from ._store import JobOutcome as JobOutcome
from ._store import MemoryStore as MemoryStore
from ._store import Store as Store

__all__ = [
    "BatchBuilder",
    "BatchRecord",
    "BatchSpec",
    "BatchState",
    "BatchUpdate",
    "Bus",
    "BusClosed",
    "BusError",
    "BusStats",
    "CallNext",
    "ChainBuilder",
    "ChainNode",
    "ChainRecord",
    "ChainState",
    "ChainStep",
    "DispatchResult",
    "DuplicateJob",
    "Event",
    "EventKind",
    "FailOnError",
    "FakeBus",
    "Handler",
    "Job",
    "JobContext",
    "JobOptions",
    "JobOutcome",
    "JobRecord",
    "Lock",
    "Locker",
    "MemoryLocker",
    "MemoryQueue",
    "MemoryRateLimiter",
    "MemoryStore",
    "Middleware",
    "NotFound",
    "Observer",
    "Queue",
    "QueueStats",
    "QueuedJob",
    "RateLimit",
    "RateLimiter",
    "RedisBroker",
    "Release",
    "SQLiteBroker",
    "SQLiteStore",
    "SkipWhen",
    "Store",
    "UnknownJobType",
    "WithoutOverlapping",
    "open_bus",
]
