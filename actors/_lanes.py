"""Lanes: per-key serialization. Every key is a keyed actor whose messages are your jobs.

>>> async with actors.open_lanes(idle_timeout=600.0) as lanes:
...     balance = await lanes.run(Key.namespace("account", "42"), deposit, 100)
...     await lanes.run_multi(["account:1", "account:2"], transfer, "account:1", "account:2", 5)
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs

from ._checks import check_async_fn, check_duration, check_positive_int
from ._keyed import KeyedActors, open_keyed

T = TypeVar("T")

_Job = tuple[Callable[..., Awaitable[Any]], tuple[Any, ...]]


@attrs.frozen
class LaneStats:
    """A snapshot of a `Lanes` manager."""

    live: int
    """Lanes that exist: busy ones and idle ones not reaped yet."""
    busy: int
    """Lanes running a job (or held by `Lanes.run_multi`) right now."""
    queued: int
    """Jobs waiting for their lane."""
    jobs_total: int
    """Jobs started since the manager opened (a `run_multi` counts once per key it holds)."""
    reaped_total: int
    """Idle lanes reaped since the manager opened."""


async def _call(key: str, job: _Job) -> Any:
    fn, args = job
    result = fn(*args)
    if not inspect.isawaitable(result):
        raise TypeError(
            f"lanes.run() needs an async function; {fn!r} returned {type(result).__name__}"
        )
    return await result


class Lanes:
    """Runs jobs one at a time per key, in arrival order; different keys run in parallel.

    Made by `open_lanes`. An idle lane is a float in a dict until it is reaped: no task.
    """

    def __init__(self, keyed: KeyedActors[_Job, Any]) -> None:
        self._keyed = keyed
        self._checked: object = None  # the last async_fn that passed the check

    def _check_fn(self, async_fn: object) -> None:
        # Callers usually send the same function again and again: check it once, not per job.
        if async_fn is not self._checked:
            check_async_fn(async_fn, "async_fn")
            self._checked = async_fn

    async def run(self, key: str, async_fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await async_fn(*args)`` after the jobs sent to ``key`` before; return its result.

        The job's exception is raised here unchanged and the lane goes on. Cancelled while
        queued: the job never runs. Cancelled while running: the job is cancelled.
        """
        self._check_fn(async_fn)
        result: T = await self._keyed.ask(key, (async_fn, args))
        return result

    async def run_multi(
        self, keys: Iterable[str], async_fn: Callable[..., Awaitable[T]], *args: Any
    ) -> T:
        """Run ``await async_fn(*args)`` while holding every lane in ``keys``.

        Lanes are taken in sorted order and duplicates count once, so overlapping multi-key
        jobs cannot deadlock. The job runs in the caller's task. Do not `run` one of the held
        keys from inside it: that job would wait for this one.
        """
        if isinstance(keys, str):
            raise TypeError("run_multi() takes a list of keys; for one key use run(key, ...)")
        self._check_fn(async_fn)
        async with self._keyed.hold(keys):
            return await async_fn(*args)

    def stats(self) -> LaneStats:
        """A snapshot of live, busy and queued lanes, and the totals so far."""
        s = self._keyed.stats()
        return LaneStats(
            live=s.live,
            busy=s.busy,
            queued=s.queued,
            jobs_total=s.messages_total,
            reaped_total=s.reaped_total,
        )

    async def reap_idle(self) -> int:
        """Reap the lanes idle longer than ``idle_timeout`` now; return how many were reaped."""
        return await self._keyed.reap_idle()


@asynccontextmanager
async def open_lanes(
    idle_timeout: float = 600.0, *, mailbox_size: int = 1024
) -> AsyncIterator[Lanes]:
    """Open a lane manager. Leaving the block lets queued jobs finish; cancelling stops them.

    ``idle_timeout``: seconds a lane may stay idle before the background reaper forgets it.
    ``mailbox_size``: jobs that may queue on one lane before more callers wait to queue.
    """
    check_duration(idle_timeout, "idle_timeout", allow_zero=False)
    check_positive_int(mailbox_size, "mailbox_size")
    async with open_keyed(
        _call, idle_timeout=idle_timeout, mailbox_size=mailbox_size, name="lanes"
    ) as keyed:
        yield Lanes(keyed)
