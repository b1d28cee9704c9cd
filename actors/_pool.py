"""Pool: run many tasks with at most ``limit`` at once, retrying the ones that fail.

>>> async with actors.open_pool(limit=5) as pool:
...     for url in urls:
...         await pool.submit(fetch, url, retry=RetryPolicy.exponential(max_attempts=5))
>>> pool.outputs, pool.errors      # completion order; the final exception of each failure

For a stream in input order, ``async for page in pool.map(fetch, urls): ...``.

Memory stays bounded however many tasks fail: a task waiting to retry holds no running slot,
but it still counts toward ``max_pending`` (default ``10 * limit``), and ``submit`` waits while
that many tasks are running or waiting to retry.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import attrs
import outcome
import trio

from ._checks import check_async_fn, check_positive_int
from ._errors import ComponentClosed
from ._nursery import open_component_nursery
from ._retry import Retry, RetryPolicy

T = TypeVar("T")
R = TypeVar("R")

_DEFAULT_RETRY = RetryPolicy.exponential()
_NO_FN = object()  # no function checked yet (None is a bad function, not "none yet")


@attrs.frozen
class PoolStats:
    """A snapshot of a `Pool`."""

    running: int
    """Attempts running now (each holds one of the ``limit`` slots)."""
    retrying: int
    """Tasks waiting out the delay before their next attempt (they hold no slot)."""
    submitted_total: int
    """Tasks started so far (``submit`` and ``map`` items)."""
    retries_total: int
    """Retries so far (attempts after the first)."""
    succeeded_total: int
    """Tasks that returned a value."""
    failed_total: int
    """Tasks that failed after their last attempt."""
    pending: int = 0
    """Tasks started and not ended: running, waiting to retry, or waiting for a slot again."""
    max_pending: int = 0
    """The most tasks pending at once; ``submit`` waits while that many are."""


class _MapSlot:
    """Where one ``map`` item's outcome waits for its turn to be yielded.

    Not the core's `Reply`: the reader does not wait on this slot's event but fills the
    window (waiting for slots) meanwhile, and the head's delivery must cancel that wait.
    """

    __slots__ = ("owner", "result")

    def __init__(self, owner: _PoolMap[Any, Any]) -> None:
        self.owner = owner
        self.result: outcome.Outcome[Any] | None = None

    def deliver(self, result: outcome.Outcome[Any]) -> None:
        self.result = result
        owner = self.owner
        if owner._head_wait is not None and owner._pending[0] is self:
            owner._head_wait.cancel()  # the reader stops filling and takes this result


def _check_policy(retry: object) -> RetryPolicy | None:
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise TypeError(
            f"retry must be a RetryPolicy (e.g. RetryPolicy.exponential()) or None, got {retry!r}"
        )
    return retry


class Pool:
    """A bounded set of workers: at most ``limit`` attempts run at once. Made by `open_pool`.

    ``outputs`` holds the values of the tasks that succeeded, in completion order;
    ``errors`` the final exception of each task that failed (the original one, never a
    `Retry` wrapper). Read them after the block (or after `wait`), when every task has ended.
    """

    __slots__ = (
        "_alive",
        "_closed",
        "_idle",
        "_last_fn",
        "_limiter",
        "_name",
        "_nursery",
        "_retries_total",
        "_retrying",
        "_room",
        "_submitted_total",
        "errors",
        "limit",
        "max_pending",
        "outputs",
    )

    def __init__(self, nursery: trio.Nursery, limit: int, max_pending: int, name: str) -> None:
        self._nursery = nursery
        self._limiter = trio.CapacityLimiter(limit)
        self._alive = 0  # tasks holding a pending place: at most max_pending
        self._room = trio.lowlevel.ParkingLot()  # submitters waiting for a pending place
        self._idle = trio.lowlevel.ParkingLot()
        self._name = name
        self._closed = False
        self._last_fn: object = _NO_FN
        self._retrying = 0
        self._submitted_total = 0
        self._retries_total = 0
        self.limit = limit
        """The most attempts that run at once."""
        self.max_pending = max_pending
        """The most tasks running or waiting to retry at once."""
        self.outputs: list[Any] = []
        """Values of the tasks that succeeded, in completion order."""
        self.errors: list[Exception] = []
        """Final exception of each task that failed after its attempts, in completion order."""

    def _check_open(self) -> None:
        if self._closed:
            raise ComponentClosed(f"{self._name} is closed: submit inside its `async with` block")

    async def submit(
        self, async_fn: Callable[..., Awaitable[Any]], *args: Any, retry: RetryPolicy | None = None
    ) -> None:
        """Start ``await async_fn(*args)`` as soon as a slot is free; return once it started.

        Waits first while ``max_pending`` tasks are running or waiting to retry, then for a
        running slot. Without ``retry`` a task that raises fails at once (unless it raises
        `Retry`); with it, any ``Exception`` is retried under that policy. The value lands in
        ``outputs``, the final exception in ``errors``. Tasks may submit more work while the
        pool drains after its block, but a task that waits in ``submit`` holds its own slot
        meanwhile.
        """
        self._check_open()
        if async_fn is not self._last_fn:  # a loop submits the same function: check it once
            check_async_fn(async_fn, "async_fn")
            self._last_fn = async_fn
        policy = _check_policy(retry)
        token = object()
        await self._acquire(token)
        self._submitted_total += 1
        self._nursery.start_soon(self._run, token, async_fn, args, policy, None)

    async def wait(self) -> None:
        """Wait until every task submitted so far (and any they submitted) has ended.

        Leaving the ``async with`` block waits too; this is for a phase inside it, e.g.
        reading ``outputs`` before submitting the next round. For a time limit, wrap it in
        `trio.move_on_after`: the tasks go on, only the wait ends.
        """
        self._check_open()
        if not self._alive:
            await trio.lowlevel.checkpoint()
            return
        while self._alive:
            await self._idle.park()

    async def _acquire(self, token: object) -> None:
        """Take a pending place, then a running slot, for a new task (both or neither)."""
        if self._alive < self.max_pending and not self._room:
            self._alive += 1
        else:
            await self._room.park()  # woken holding the place a task handed over
        try:
            await self._limiter.acquire_on_behalf_of(token)
        except BaseException:
            self._ended()
            raise

    def _acquire_nowait(self, token: object) -> None:
        if self._alive >= self.max_pending or self._room:
            raise trio.WouldBlock
        self._limiter.acquire_on_behalf_of_nowait(token)
        self._alive += 1

    def _ended(self) -> None:
        """A task ended (it holds no running slot by now): pass its pending place on."""
        if self._room:
            self._room.unpark()  # the place goes straight to the oldest waiting submitter
            return
        self._alive -= 1
        if not self._alive:
            self._idle.unpark_all()

    def map(
        self,
        async_fn: Callable[[T], Awaitable[R]],
        iterable: Iterable[T],
        *,
        retry: RetryPolicy | None = None,
    ) -> AsyncIterator[R]:
        """Yield ``await async_fn(item)`` for each item, in input order, through the pool.

        Items start as slots free up, sharing the pool's ``limit`` with `submit`, and at most
        ``2 * limit`` results wait ahead of the one you are reading. A failed item (after its
        retries) raises its exception from the iteration at its place, and the iteration ends.
        Results go to the iterator only, not to ``outputs``/``errors``. If you stop early,
        the items already started finish in the pool and their results are dropped.
        """
        self._check_open()
        check_async_fn(async_fn, "async_fn")
        policy = _check_policy(retry)
        if isinstance(iterable, str | bytes) or not isinstance(iterable, Iterable):
            raise TypeError(f"map() needs an iterable of items, got {type(iterable).__name__}")
        return _PoolMap(self, async_fn, iter(iterable), policy)

    def stats(self) -> PoolStats:
        """A snapshot of running and retrying tasks and the totals so far."""
        return PoolStats(
            running=self._limiter.borrowed_tokens,
            retrying=self._retrying,
            pending=self._alive,
            max_pending=self.max_pending,
            submitted_total=self._submitted_total,
            retries_total=self._retries_total,
            succeeded_total=len(self.outputs),
            failed_total=len(self.errors),
        )

    async def _run(
        self,
        token: object,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        submit_policy: RetryPolicy | None,
        slot: _MapSlot | None,
    ) -> None:
        """One task: attempts under a slot, waits between them without one.

        A `Retry` picks the policy for its own retry only; a plain exception is retried under
        ``submit_policy``. The attempt count runs across both. ``token`` holds a pending place
        from start to end, and a running slot during each attempt.
        """
        try:
            attempt = 1
            while True:
                try:
                    value = await fn(*args)
                except Exception as exc:
                    failure: Exception = exc
                else:
                    if slot is None:
                        self.outputs.append(value)
                    else:
                        slot.deliver(outcome.Value(value))
                    return
                finally:
                    self._limiter.release_on_behalf_of(token)
                policy = submit_policy
                if isinstance(failure, Retry):
                    policy = failure.policy or submit_policy or _DEFAULT_RETRY
                    failure = failure.exception
                if policy is None or attempt >= policy.max_attempts:
                    if slot is None:
                        self.errors.append(failure)
                    else:
                        slot.deliver(outcome.Error(failure))
                    return
                delay = policy.delay(attempt)
                del failure
                self._retrying += 1
                try:
                    await trio.sleep(delay)
                finally:
                    self._retrying -= 1
                await self._limiter.acquire_on_behalf_of(token)
                attempt += 1
                self._retries_total += 1
        finally:
            self._ended()


class _PoolMap(Generic[T, R]):
    """The async iterator `Pool.map` returns: starts items lazily, yields them in order.

    While the reader waits for the head item it also waits for slots to start the items
    after it (up to the window); the head's delivery cancels that wait, so a ready result is
    yielded at once. When the head is ready the window is refilled only from free slots.
    """

    __slots__ = ("_done", "_fn", "_head_wait", "_items", "_pending", "_policy", "_pool", "_window")

    def __init__(
        self,
        pool: Pool,
        fn: Callable[[T], Awaitable[R]],
        items: Iterator[T],
        policy: RetryPolicy | None,
    ) -> None:
        self._pool = pool
        self._fn = fn
        self._items: Iterator[T] | None = items
        self._policy = policy
        self._pending: deque[_MapSlot] = deque()
        self._window = 2 * pool.limit
        self._done = False
        self._head_wait: trio.CancelScope | None = None  # while the reader waits for the head

    def __aiter__(self) -> _PoolMap[T, R]:
        return self

    def _start_next(self, token: object) -> None:
        """Start the next item under ``token`` (a slot already taken), or give the slot back."""
        assert self._items is not None
        pool = self._pool
        try:
            item = next(self._items)
        except BaseException as exc:
            pool._limiter.release_on_behalf_of(token)
            pool._ended()
            self._items = None
            if not isinstance(exc, StopIteration):
                self._done = True
                raise
            return
        slot = _MapSlot(self)
        self._pending.append(slot)
        pool._submitted_total += 1
        pool._nursery.start_soon(pool._run, token, self._fn, (item,), self._policy, slot)

    async def _fill(self) -> None:
        """Start items as slots free up until the window is full or the items ran out."""
        # Take the slot first, then the item: a cancel while waiting loses no item.
        while self._items is not None and len(self._pending) < self._window:
            token = object()
            await self._pool._acquire(token)
            self._start_next(token)

    def _fill_nowait(self) -> None:
        """Start items on the slots free right now, without waiting for more."""
        pool = self._pool
        while self._items is not None and len(self._pending) < self._window:
            token = object()
            try:
                pool._acquire_nowait(token)
            except trio.WouldBlock:
                return
            self._start_next(token)

    async def __anext__(self) -> R:
        if self._done:
            await trio.lowlevel.checkpoint()
            raise StopAsyncIteration
        self._pool._check_open()
        checkpointed = False
        if not self._pending and self._items is not None:
            token = object()  # nothing started to wait for: wait for a slot for the next item
            await self._pool._acquire(token)
            checkpointed = True
            self._start_next(token)
        if not self._pending:
            self._done = True
            if not checkpointed:
                await trio.lowlevel.checkpoint()
            raise StopAsyncIteration
        slot = self._pending[0]
        if slot.result is None:
            with trio.CancelScope() as head_wait:  # cancelled by the head's delivery
                self._head_wait = head_wait
                try:
                    await self._fill()
                    await trio.sleep_forever()
                finally:
                    self._head_wait = None
            checkpointed = True
        assert slot.result is not None
        self._fill_nowait()
        if not checkpointed:
            await trio.lowlevel.checkpoint()
        self._pending.popleft()
        try:
            value: R = slot.result.unwrap()
        except BaseException:
            self._done = True
            raise
        return value


@asynccontextmanager
async def open_pool(
    limit: int = 5, *, max_pending: int | None = None, name: str = "pool"
) -> AsyncIterator[Pool]:
    """Open a pool running at most ``limit`` attempts at once.

    ``max_pending`` (default ``10 * limit``, at least ``limit``): tasks running or waiting to
    retry at once; ``submit`` waits while that many are, so memory stays bounded however many
    tasks fail. Leaving the block waits for every task, retries included, then closes the
    pool (`Pool.wait` does the same wait inside the block); cancelling the enclosing scope
    cancels them at once. ``submit`` after the block raises `ComponentClosed`.
    """
    check_positive_int(limit, "limit")
    if max_pending is None:
        max_pending = 10 * limit
    check_positive_int(max_pending, "max_pending", minimum=limit)
    pool: Pool | None = None
    try:
        async with open_component_nursery() as nursery:
            pool = Pool(nursery, limit, max_pending, name)
            yield pool
    finally:
        if pool is not None:
            pool._closed = True
