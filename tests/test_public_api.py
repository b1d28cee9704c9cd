"""The public surface: what DESIGN.md promises is importable from the package roots."""

from __future__ import annotations

import importlib
import importlib.resources

import pytest

PUBLIC = {
    "actors": [
        "Key",
        "open_lanes",
        "Lanes",
        "LaneStats",
        "Actor",
        "ActorRef",
        "spawn",
        "open_keyed",
        "KeyedActors",
        "KeyedStats",
        "ActorsError",
        "ComponentClosed",
        "ActorCrashed",
        "trio_clock",
        "WouldDeadlock",
        "open_batcher",
        "Batcher",
        "BatcherStats",
        "open_scheduler",
        "Scheduler",
        "ScheduledJob",
        "Cron",
        "Every",
        "TickResult",
        "JobResult",
        "SchedulerStats",
        "SkippedDuplicate",
        "JobCrashed",
        "NotStarted",
        "open_pool",
        "Pool",
        "PoolStats",
        "RetryPolicy",
        "Retry",
    ],
    "supervisors": [
        "open_supervisor",
        "Supervisor",
        "ChildInfo",
        "RestartBackoff",
        "RestartIntensityExceeded",
        "SupervisorClosed",
        "SupervisorError",
    ],
}


#: Every package's `__all__`, exactly: a name added or removed is a change of the public
#: surface and must show up here.
PINNED = {
    "actors": [
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
    ],
    "actors.bus": [
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
    ],
    "supervisors": [
        "ChildInfo",
        "ChildState",
        "ChildTree",
        "RestartBackoff",
        "RestartIntensityExceeded",
        "RestartType",
        "Strategy",
        "Supervisor",
        "SupervisorClosed",
        "SupervisorError",
        "SupervisorEvent",
        "SupervisorEventKind",
        "SupervisorState",
        "SupervisorTree",
        "open_supervisor",
        "shutting_down",
    ],
}


def test_all_is_pinned_for_every_package() -> None:
    for module, names in PINNED.items():
        assert sorted(importlib.import_module(module).__all__) == names, module


@pytest.mark.parametrize(("module", "name"), [(m, n) for m, ns in PUBLIC.items() for n in ns])
def test_public_name_is_exported(module: str, name: str) -> None:
    mod = importlib.import_module(module)
    assert hasattr(mod, name), f"{module}.{name} is missing"


@pytest.mark.parametrize("module", list(PINNED))
def test_all_lists_exactly_the_public_names(module: str) -> None:
    mod = importlib.import_module(module)
    exported = {name for name in vars(mod) if not name.startswith("_")}
    exported -= {"annotations"}
    assert set(mod.__all__) == {n for n in exported if not isinstance(getattr(mod, n), type(mod))}


@pytest.mark.parametrize("module", ["actors", "supervisors"])
def test_package_is_typed(module: str) -> None:
    mod = importlib.import_module(module)
    assert mod.__file__ is not None
    assert (importlib.resources.files(module) / "py.typed").is_file()
