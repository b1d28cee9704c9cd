"""trio-lanes: an actor-model framework on Trio.

Every key is an actor: a task with a mailbox, spawned lazily the first time its key is used,
handling one message at a time, and reaped when idle. Lanes, Batcher, Bus, Scheduler and Pool
are built on that idea; `supervisors` keeps them running.
"""

import logging as _logging

from . import bus as bus  # `actors.bus.open_bus(...)` after a plain `import actors`
from ._actor import Actor as Actor
from ._actor import ActorRef as ActorRef
from ._actor import spawn as spawn
from ._batcher import Batcher as Batcher
from ._batcher import BatcherStats as BatcherStats
from ._batcher import BatchFailed as BatchFailed
from ._batcher import BatchReport as BatchReport
from ._batcher import open_batcher as open_batcher
from ._clock import trio_clock as trio_clock
from ._cron import Cron as Cron
from ._cron import Every as Every
from ._errors import ActorCrashed as ActorCrashed
from ._errors import ActorsError as ActorsError
from ._errors import ComponentClosed as ComponentClosed
from ._errors import LeaseLost as LeaseLost
from ._errors import WouldDeadlock as WouldDeadlock
from ._fence import current_fence as current_fence
from ._keyed import KeyedActors as KeyedActors
from ._keyed import KeyedStats as KeyedStats
from ._keyed import open_keyed as open_keyed
from ._keys import Key as Key
from ._lanes import Lanes as Lanes
from ._lanes import LaneStats as LaneStats
from ._lanes import open_lanes as open_lanes
from ._pool import Pool as Pool
from ._pool import PoolStats as PoolStats
from ._pool import open_pool as open_pool
from ._retry import Retry as Retry
from ._retry import RetryPolicy as RetryPolicy
from ._scheduler import JobCrashed as JobCrashed
from ._scheduler import JobResult as JobResult
from ._scheduler import NotStarted as NotStarted
from ._scheduler import ScheduledJob as ScheduledJob
from ._scheduler import Scheduler as Scheduler
from ._scheduler import SchedulerStats as SchedulerStats
from ._scheduler import SkippedDuplicate as SkippedDuplicate
from ._scheduler import TickResult as TickResult
from ._scheduler import open_scheduler as open_scheduler

__all__ = [
    "Actor",
    "ActorCrashed",
    "ActorRef",
    "ActorsError",
    "BatchFailed",
    "BatchReport",
    "Batcher",
    "BatcherStats",
    "ComponentClosed",
    "Cron",
    "Every",
    "JobCrashed",
    "JobResult",
    "Key",
    "KeyedActors",
    "KeyedStats",
    "LaneStats",
    "Lanes",
    "LeaseLost",
    "NotStarted",
    "Pool",
    "PoolStats",
    "Retry",
    "RetryPolicy",
    "ScheduledJob",
    "Scheduler",
    "SchedulerStats",
    "SkippedDuplicate",
    "TickResult",
    "WouldDeadlock",
    "current_fence",
    "open_batcher",
    "open_keyed",
    "open_lanes",
    "open_pool",
    "open_scheduler",
    "spawn",
    "trio_clock",
]

# A library logs, the application decides where it goes: without a handler of its own, an
# expected, supervised crash would reach Python's last-resort handler and print a traceback.
_logging.getLogger("actors").addHandler(_logging.NullHandler())
