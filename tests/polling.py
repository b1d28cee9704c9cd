"""Bounded polling for tests with real processes and servers, where no event crosses over."""

from __future__ import annotations

from collections.abc import Callable

import trio


async def until(done: Callable[[], bool], within: float, *, every: float = 0.05) -> None:
    """Poll ``done`` every ``every`` seconds until it is true; fail after ``within``."""
    with trio.fail_after(within):
        while True:
            if done():
                return
            await trio.sleep(every)
