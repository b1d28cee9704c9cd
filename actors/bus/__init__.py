"""actors.bus: a job bus whose chains and batches are coordinated by actors.

::

    from actors.bus import Handlers, Job, JobContext, open_bus

    handlers = Handlers()

    @handlers.handler("emails:send")
    async def send(ctx: JobContext) -> None:
        await smtp.send(ctx.payload["to"])

    async with open_bus(handlers=handlers, queues={"default": 4}) as bus:
        await bus.dispatch(Job("emails:send", {"to": "a@b"}).retry(3).backoff(0.5))
        await bus.wait_idle()

How a job flows (one way, each step a module):

1. ``_admission``: `Bus.dispatch` (or a chain's or batch's ``dispatch()``) checks the jobs
   (``_job_checks``), stores the chain or batch (``_store`` / ``_sqlite``; a batch through
   ``_batch_admission``), and puts the jobs on their queues in the broker (``_broker``;
   ``_memory_broker`` by default).
2. ``_worker``: a queue's worker gets a `Delivery`, runs it through the middleware
   (``_middleware``) and its handler, retries it on failure, and hands the final outcome on:
   a plain job is acknowledged; a chain's or batch's job is told to its coordinator. A
   memory worker (``_memory_worker``) runs ready jobs back to back, each in a fresh
   context, and yields after 16 of them, as an actor drains its mailbox.
3. ``_chains`` / ``_batches``: the coordinator (a keyed actor per chain or batch, the only
   writer of its state) records the outcome in the store (``_recording``: retried until it
   commits), acknowledges the delivery, queues a chain's next job or counts the batch
   (``_coordinators`` holds what the two registries share). Where no user could tell the
   difference (the memory broker, no observer, no callback due, the coordinator idle) the
   worker settles a chain step or a batch job's success itself (`Chains.finish`,
   `Batches.settle_now`), and takes the chain's next step itself if it is due now on its
   own queue, with no one woken for it (``_memory_chains`` keeps a chain's steps as their first
   attempts); on SQLite the writer settles a chain step once its group commits
   (``_sqlite_group`` runs a group's steps set-based).
4. ``_callbacks``: at the end, the coordinator claims each callback in the store and runs it
   (a callable) or queues it (a `Job`).

Events go to observers through ``_observe`` at every step; ``_parts`` is the plumbing the
roles share and ``_bus`` the face that wires them. Test your code against `FakeBus` (a
`BusLike`, like `Bus`; the ``fake_bus`` pytest fixture).
"""

from ._broker import Broker as Broker
from ._broker import BrokerQueue as BrokerQueue
from ._broker import Delivery as Delivery
from ._broker import QueueStats as QueueStats
from ._builders import BatchBuilder as BatchBuilder
from ._builders import ChainBuilder as ChainBuilder
from ._bus import Bus as Bus
from ._bus import BusStats as BusStats
from ._bus import open_bus as open_bus
from ._errors import BusClosed as BusClosed
from ._errors import BusError as BusError
from ._errors import DuplicateJob as DuplicateJob
from ._errors import InsideBus as InsideBus
from ._errors import LeaseLost as LeaseLost
from ._errors import NotFound as NotFound
from ._errors import Release as Release
from ._errors import StoreError as StoreError
from ._errors import UnknownJobType as UnknownJobType
from ._events import Event as Event
from ._events import EventKind as EventKind
from ._fake import BatchSpec as BatchSpec
from ._fake import FakeBus as FakeBus
from ._handlers import Handler as Handler
from ._handlers import Handlers as Handlers
from ._handlers import Observer as Observer
from ._memory_broker import MemoryBroker as MemoryBroker
from ._memory_broker import MemoryQueue as MemoryQueue
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
from ._model import LaneFence as LaneFence
from ._model import QueuedJob as QueuedJob
from ._postgres import PostgresStore as PostgresStore
from ._protocol import BusLike as BusLike
from ._redis_broker import RedisBroker as RedisBroker
from ._redis_limits import RedisLock as RedisLock
from ._redis_limits import RedisLocker as RedisLocker
from ._redis_limits import RedisRateLimiter as RedisRateLimiter
from ._rules import BatchRecord as BatchRecord
from ._rules import BatchUpdate as BatchUpdate
from ._rules import ChainRecord as ChainRecord
from ._rules import ChainStep as ChainStep
from ._rules import FailedJob as FailedJob
from ._rules import JobOutcome as JobOutcome
from ._sqlite import SQLiteStore as SQLiteStore
from ._sqlite_broker import SQLiteBroker as SQLiteBroker
from ._sqlite_limits import SQLiteLock as SQLiteLock
from ._sqlite_limits import SQLiteLocker as SQLiteLocker
from ._sqlite_limits import SQLiteRateLimiter as SQLiteRateLimiter
from ._store import MemoryStore as MemoryStore
from ._store import Store as Store

#: The `BrokerQueue` protocol under its older name: a broker makes the bus's queues.
Queue = BrokerQueue

__all__ = [
    "BatchBuilder",
    "BatchRecord",
    "BatchSpec",
    "BatchState",
    "BatchUpdate",
    "Broker",
    "BrokerQueue",
    "Bus",
    "BusClosed",
    "BusError",
    "BusLike",
    "BusStats",
    "CallNext",
    "ChainBuilder",
    "ChainNode",
    "ChainRecord",
    "ChainState",
    "ChainStep",
    "Delivery",
    "DispatchResult",
    "DuplicateJob",
    "Event",
    "EventKind",
    "FailOnError",
    "FailedJob",
    "FakeBus",
    "Handler",
    "Handlers",
    "InsideBus",
    "Job",
    "JobContext",
    "JobOptions",
    "JobOutcome",
    "JobRecord",
    "LaneFence",
    "LeaseLost",
    "Lock",
    "Locker",
    "MemoryBroker",
    "MemoryLocker",
    "MemoryQueue",
    "MemoryRateLimiter",
    "MemoryStore",
    "Middleware",
    "NotFound",
    "Observer",
    "PostgresStore",
    "Queue",
    "QueueStats",
    "QueuedJob",
    "RateLimit",
    "RateLimiter",
    "RedisBroker",
    "RedisLock",
    "RedisLocker",
    "RedisRateLimiter",
    "Release",
    "SQLiteBroker",
    "SQLiteLock",
    "SQLiteLocker",
    "SQLiteRateLimiter",
    "SQLiteStore",
    "SkipWhen",
    "Store",
    "StoreError",
    "UnknownJobType",
    "WithoutOverlapping",
    "open_bus",
]
