"""Store and broker URLs: ``"memory://"``, ``"sqlite:///rel.db"``, ``"sqlite:////abs.db"``,
``"redis://host:6379/0"``, ``"postgresql://user@host/db"``, with options in the query
(``?visibility_timeout=5``).

SQLite paths follow SQLAlchemy's convention: three slashes then a relative path, four for an
absolute one. `parse_url` checks the scheme and the options' names and types at once, so a
typo fails when the bus is configured, not when the first job arrives.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import attrs

from ._broker import Broker
from ._store import Store

#: What each scheme's options are, by name, and how to read them from the query text.
BROKER_OPTIONS: Mapping[str, Mapping[str, Callable[[str], Any]]] = {
    "memory": {},
    "sqlite": {
        "visibility_timeout": float,
        "claim_batch": int,
        "poll_interval": float,
        "max_payload": int,
        "busy_timeout": float,
    },
    "redis": {
        "visibility_timeout": float,
        "claim_batch": int,
        "poll_interval": float,
        "max_payload": int,
        "prefix": str,
        "reconnect_timeout": float,
    },
}
STORE_OPTIONS: Mapping[str, Mapping[str, Callable[[str], Any]]] = {
    "memory": {},
    "sqlite": {"busy_timeout": float},
    "postgresql": {"schema": str, "min_size": int, "max_size": int, "connect_timeout": float},
}

_ALIASES = {"postgres": "postgresql", "rediss": "redis", "unix": "redis"}


@attrs.frozen
class ServiceURL:
    """A parsed store or broker URL."""

    scheme: str
    """``memory``, ``sqlite``, ``redis`` or ``postgresql``."""
    target: str
    """The file path (sqlite), or the URL without its options (redis, postgresql); ``""``."""
    options: Mapping[str, Any] = attrs.field(factory=dict)
    """The query's options, converted (``{"visibility_timeout": 5.0}``)."""


def parse_url(url: str, *, what: str = "broker") -> ServiceURL:
    """Parse a ``what`` ("broker" or "store") URL, or raise `ValueError` saying what is wrong."""
    table = BROKER_OPTIONS if what == "broker" else STORE_OPTIONS
    if not isinstance(url, str):
        raise TypeError(f"a {what} URL must be a str, got {type(url).__name__}: {url!r}")
    parts = urlsplit(url)
    raw = parts.scheme.lower()
    scheme = _ALIASES.get(raw, raw).split("+")[0]
    if scheme not in table or "://" not in url:
        known = ", ".join(f"{name}://" for name in table)
        raise ValueError(
            f"unknown {what} URL {url!r}: the scheme must be one of {known} "
            '(e.g. "sqlite:///jobs.db" for a file next to you, "redis://localhost:6379/0")'
        )
    options = _options(url, parts.query, table[scheme], what)
    if scheme == "memory":
        return ServiceURL("memory", "", options)
    if scheme == "sqlite":
        # sqlite:///rel.db -> "rel.db"; sqlite:////abs.db -> "/abs.db"
        if parts.netloc:
            raise ValueError(
                f"{what} URL {url!r} names a host ({parts.netloc!r}); SQLite is a local file: "
                'use three slashes for a relative path ("sqlite:///jobs.db") or four for an '
                'absolute one ("sqlite:////var/lib/app/jobs.db")'
            )
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path:
            raise ValueError(f'{what} URL {url!r} has no file path; e.g. "sqlite:///jobs.db"')
        return ServiceURL("sqlite", path, options)
    target = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    return ServiceURL(scheme, target, options)


def _options(
    url: str, query: str, known: Mapping[str, Callable[[str], Any]], what: str
) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, text in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if name not in known:
            names = ", ".join(sorted(known)) or "none"
            raise ValueError(
                f"unknown option {name!r} in the {what} URL {url!r}; this scheme takes: {names}"
            )
        try:
            options[name] = known[name](text)
        except ValueError:
            kind = getattr(known[name], "__name__", "value")
            raise ValueError(
                f"option {name}={text!r} in the {what} URL {url!r} is not a valid {kind}"
            ) from None
    return options


def broker_from_url(url: str) -> Broker:
    """The broker for ``url`` (`MemoryBroker`, `SQLiteBroker`, `RedisBroker`), not opened."""
    parsed = parse_url(url, what="broker")
    if parsed.scheme == "memory":
        from ._memory_broker import MemoryBroker

        return MemoryBroker()
    if parsed.scheme == "sqlite":
        from ._sqlite_broker import SQLiteBroker

        return SQLiteBroker(parsed.target, **parsed.options)
    if parsed.scheme == "redis":
        from ._redis_broker import RedisBroker

        return RedisBroker(parsed.target, **parsed.options)
    raise ValueError(f"broker URL {url!r}: no broker is made for {parsed.scheme}://")


def store_from_url(url: str) -> Store:
    """The store for ``url`` (`MemoryStore`, `SQLiteStore`, `PostgresStore`), not opened.

    The classes are imported only when named, so a store that is not installed (or not
    built) fails here with a clear error, not at import time.
    """
    parsed = parse_url(url, what="store")
    if parsed.scheme == "memory":
        from ._store import MemoryStore

        return MemoryStore()
    if parsed.scheme == "sqlite":
        from ._sqlite import SQLiteStore

        return SQLiteStore(parsed.target, **parsed.options)
    try:
        module = importlib.import_module("._postgres", __package__)
        made: Store = module.PostgresStore(parsed.target, **parsed.options)
    except (ImportError, AttributeError) as exc:
        raise ValueError(
            f"store URL {url!r}: PostgresStore is not available here ({exc}); install the "
            "postgres extra (pip install 'trio-lanes[postgres]') or use a sqlite:/// store"
        ) from exc
    return made
