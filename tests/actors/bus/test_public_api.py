"""The public surface of actors.bus: the contract's names, the error hierarchy, `__all__`."""

from __future__ import annotations

import trio

import actors
import actors.bus
from actors.bus import BusClosed, BusError, DuplicateJob, NotFound, Release, UnknownJobType

CONTRACT = [
    "open_bus",
    "Bus",
    "Job",
    "JobContext",
    "ChainState",
    "BatchState",
    "SkipWhen",
    "FailOnError",
    "RateLimit",
    "WithoutOverlapping",
    "EventKind",
    "Event",
    "MemoryStore",
    "PostgresStore",
    "SQLiteStore",
    "Store",
    "FakeBus",
    "BatchSpec",
    "DuplicateJob",
    "UnknownJobType",
    "BusError",
    "BusClosed",
    "Queue",
    "MemoryQueue",
    "Handlers",
    "BusLike",
    "MemoryBroker",
    "Broker",
    "BrokerQueue",
    "Delivery",
    "FailedJob",
]


def test_the_contract_names_are_exported() -> None:
    missing = [name for name in CONTRACT if not hasattr(actors.bus, name)]
    assert missing == []


def test_every_public_name_comes_from_the_package() -> None:
    # (`__all__` itself is pinned, for every package, in tests/test_public_api.py)
    aliases = {"CallNext", "Handler", "Middleware", "Observer"}  # typing aliases
    for name in set(actors.bus.__all__) - aliases:
        assert getattr(actors.bus, name).__module__.startswith("actors.bus"), name


def test_errors_refine_the_builtins_they_mean() -> None:
    assert issubclass(BusError, actors.ActorsError)
    assert issubclass(UnknownJobType, BusError)
    assert issubclass(UnknownJobType, LookupError)
    assert issubclass(NotFound, LookupError)
    assert issubclass(DuplicateJob, BusError)
    assert issubclass(BusClosed, actors.ComponentClosed)
    assert issubclass(BusClosed, trio.ClosedResourceError)
    assert issubclass(Release, BusError)
