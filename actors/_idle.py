"""Idle keys are bare floats (the Trio time they went idle): forgetting the stale ones.

Lanes and keyed registries keep every key in one dict, an idle key as a float. Reaping drops
the floats older than the timeout; once most keys are gone the dict is rebuilt, because a
Python dict never shrinks on delete and the reaped keys' memory would stay held.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

V = TypeVar("V")


def reap_stale(keys: dict[str, V], idle_before: float) -> tuple[dict[str, V], int]:
    """Remove the keys idle since before ``idle_before``; return the dict to keep and how many."""
    stale = [k for k, v in keys.items() if v.__class__ is float and v < idle_before]  # type: ignore[operator]
    for key in stale:
        del keys[key]
    if stale and len(stale) >= len(keys):
        keys = dict(keys)
    return keys, len(stale)


async def reap_forever(idle_timeout: float, reap: Callable[[], Awaitable[int]]) -> None:
    """Reap every half ``idle_timeout``: a key goes 1 to 1.5 timeouts after its last use."""
    while True:
        await trio.sleep(idle_timeout / 2)
        await reap()
