"""Small helpers of the Redis modules: reading coredis's replies and errors."""

from __future__ import annotations

from typing import Any


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc``, groups flattened (coredis raises from task groups)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


def fields(raw: Any) -> dict[str, str]:
    """A stream entry's fields as a dict, whether coredis gave a dict or a flat list."""
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    items = list(raw)
    return {str(items[i]): str(items[i + 1]) for i in range(0, len(items), 2)}
