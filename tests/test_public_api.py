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


@pytest.mark.parametrize(("module", "name"), [(m, n) for m, ns in PUBLIC.items() for n in ns])
def test_public_name_is_exported(module: str, name: str) -> None:
    mod = importlib.import_module(module)
    assert hasattr(mod, name), f"{module}.{name} is missing"


@pytest.mark.parametrize("module", list(PUBLIC))
def test_all_lists_exactly_the_public_names(module: str) -> None:
    mod = importlib.import_module(module)
    exported = {name for name in vars(mod) if not name.startswith("_")}
    exported -= {"annotations"}
    assert set(mod.__all__) == {n for n in exported if not isinstance(getattr(mod, n), type(mod))}


@pytest.mark.parametrize("module", list(PUBLIC))
def test_package_is_typed(module: str) -> None:
    mod = importlib.import_module(module)
    assert mod.__file__ is not None
    assert (importlib.resources.files(module) / "py.typed").is_file()
