"""Batcher: per key, load a resource once, apply every op that arrives within a window, save once.

>>> async with actors.open_batcher(load=load_balance, save=save_balance, min_duration=0.1) as b:
...     balance = await b.run("account:1", lambda balance: balance + 5)

Each key is a keyed actor. Its first op opens a batch: the actor loads the key's resource
and keeps the window open for ``min_duration``; ops told to the key meanwhile wait in its
mailbox. When the window closes the actor takes those that arrived before it closed, applies
them in arrival order, saves, and answers every caller. (An op arriving at the very instant
the window closes may land in either batch.) Ops arriving after that wait in the mailbox
for the next batch, which loads after this save.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import attrs
import outcome
import trio

from ._checks import check_async_fn, check_duration, check_positive_int
from ._errors import ComponentClosed
from ._keyed import KeyedActors, open_keyed
from ._keys import check_key

Res = TypeVar("Res")


@attrs.frozen
class BatcherStats:
    """A snapshot of a `Batcher`."""

    live_keys: int
    """Keys with an actor record (busy, or idle and not reaped yet)."""
    batches_total: int
    """Batches finished, successfully or not: one ``load`` and at most one ``save`` each."""
    failed_batches_total: int
    """Batches whose ``load`` or ``save`` failed or ran out of time."""
    ops_total: int
    """Ops applied (including ops that raised)."""
    io_in_flight: int
    """``load``/``save`` calls running right now (at most ``max_concurrent_io``)."""


class _Op(Generic[Res]):
    """One op travelling to its key's actor, with the slot its caller waits on."""

    __slots__ = ("abandoned", "arrived", "done", "fn", "result")

    def __init__(self, fn: Callable[[Res], Res]) -> None:
        self.fn = fn
        self.arrived = trio.current_time()
        self.done = trio.Event()
        self.result: outcome.Outcome[Res] | None = None
        self.abandoned = False

    def answer(self, result: outcome.Outcome[Res]) -> None:
        self.result = result
        self.done.set()


class Batcher(Generic[Res]):
    """Runs ops on per-key resources in batches. Made by `open_batcher`."""

    def __init__(
        self,
        load: Callable[[str], Awaitable[Res]],
        save: Callable[[str, Res], Awaitable[object]],
        min_duration: float,
        max_duration: float,
        max_concurrent_io: int,
        copy_resource: Callable[[Res], Res] | None,
    ) -> None:
        self._load = load
        self._copy = copy_resource
        self._waiting: set[_Op[Res]] = set()
        self._save = save
        self._min_duration = min_duration
        self._max_duration = max_duration
        self._io = trio.CapacityLimiter(max_concurrent_io)
        self._keyed: KeyedActors[_Op[Res], None] | None = None
        self._batches_total = 0
        self._failed_batches_total = 0
        self._ops_total = 0

    async def run(self, key: str, op: Callable[[Res], Res]) -> Res:
        """Apply ``op`` to ``key``'s resource in the current (or next) batch; return its result.

        ``op(resource)`` must be a fast, sync function returning the new resource; what it
        returns is what `run` returns, once the batch is saved. If ``op`` raises, only this
        call fails and the resource stays as it was before ``op``; if ``load`` or ``save``
        fails or runs out of time, every call in the batch raises that error.
        """
        check_key(key)
        if not callable(op) or inspect.iscoroutinefunction(op):
            raise TypeError(f"op must be a sync function resource -> resource, got {op!r}")
        assert self._keyed is not None
        item: _Op[Res] = _Op(op)
        self._waiting.add(item)
        try:
            await self._keyed.tell(key, item)
            await item.done.wait()
        except BaseException:
            item.abandoned = True
            raise
        finally:
            self._waiting.discard(item)
        assert item.result is not None
        return item.result.unwrap()

    def _answer_the_rest(self) -> None:
        """The batcher is gone: answer every op still waiting (queued for a batch never run)."""
        for item in list(self._waiting):
            if not item.done.is_set():
                item.answer(outcome.Error(ComponentClosed("the batcher closed before this op ran")))

    def stats(self) -> BatcherStats:
        """A snapshot of keys, batches and ops so far."""
        assert self._keyed is not None
        return BatcherStats(
            live_keys=self._keyed.stats().live,
            batches_total=self._batches_total,
            failed_batches_total=self._failed_batches_total,
            ops_total=self._ops_total,
            io_in_flight=self._io.borrowed_tokens,
        )

    async def _io_call(self, deadline: float, what: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        try:
            with trio.fail_at(deadline):
                async with self._io:
                    return await fn()
        except trio.TooSlowError:
            raise TimeoutError(
                f"{what} did not finish within max_duration={self._max_duration}s of the "
                "batch start; raise max_duration or make it faster"
            ) from None

    async def _batch(self, key: str, first: _Op[Res]) -> None:
        """The key's actor handling one batch, opened by ``first``."""
        ops = [first]
        try:
            await self._run_batch(key, ops)
        except BaseException as exc:
            error = (
                exc
                if isinstance(exc, Exception)
                else ComponentClosed("the batcher shut down before this batch was saved")
            )
            for op in ops:
                if not op.done.is_set():
                    op.answer(outcome.Error(error))
            raise

    async def _run_batch(self, key: str, ops: list[_Op[Res]]) -> None:
        assert self._keyed is not None
        start = trio.current_time()
        deadline = start + self._max_duration
        window_end = start + self._min_duration
        # Ops told meanwhile wait in the mailbox: loading first costs no task of its own.
        loaded: outcome.Outcome[Res]
        try:
            loaded = outcome.Value(
                await self._io_call(deadline, f"load({key!r})", lambda: self._load(key))
            )
        except Exception as exc:
            loaded = outcome.Error(exc)
        await trio.sleep_until(window_end)
        ops.extend(self._keyed.take_pending(key, lambda op: op.arrived <= window_end))

        self._batches_total += 1
        if isinstance(loaded, outcome.Error):
            self._fail(ops, loaded.error)
            return
        resource = loaded.unwrap()
        answers: list[tuple[_Op[Res], outcome.Outcome[Res]]] = []
        for op in ops:
            if op.abandoned:
                continue
            self._ops_total += 1
            try:
                # a copy, so an op that changes the resource in place and then raises leaves
                # nothing behind
                resource_after = op.fn(resource if self._copy is None else self._copy(resource))
            except Exception as exc:
                answers.append((op, outcome.Error(exc)))
            else:
                resource = resource_after
                answers.append((op, outcome.Value(resource_after)))
        final = resource
        try:
            await self._io_call(deadline, f"save({key!r})", lambda: self._save(key, final))
        except Exception as exc:
            self._fail([op for op, _ in answers], exc)
            return
        for op, applied in answers:
            op.answer(applied)

    def _fail(self, ops: list[_Op[Res]], error: BaseException) -> None:
        self._failed_batches_total += 1
        for op in ops:
            op.answer(outcome.Error(error))  # an outcome unwraps once: one per caller


@asynccontextmanager
async def open_batcher(
    load: Callable[[str], Awaitable[Res]],
    save: Callable[[str, Res], Awaitable[object]],
    *,
    min_duration: float = 0.1,
    max_duration: float | None = None,
    max_concurrent_io: int = 64,
    idle_timeout: float = 60.0,
    mailbox_size: int = 10_000,
    copy_resource: Callable[[Res], Res] | None = copy.deepcopy,
) -> AsyncIterator[Batcher[Res]]:
    """Open a batcher over ``load(key) -> resource`` and ``save(key, resource)``.

    ``min_duration`` (> 0): how long a batch accepts ops. ``max_duration`` (> ``min_duration``,
    default twice it): the deadline for ``load`` and ``save``, from the batch start.
    ``max_concurrent_io``: how many loads and saves may run at once across all keys, so a
    burst of keys cannot open a thousand database connections. ``mailbox_size``: ops that may
    wait for one key before further callers wait to send theirs (backpressure); a window
    gathers at most this many ops, the rest go to the next batch. ``copy_resource``: each op
    gets a copy of the resource (``copy.deepcopy`` by default), so an op that raises leaves
    the resource exactly as it was even if it changed it in place; pass ``None`` when ops
    never mutate the resource (ints, tuples, frozen attrs classes) to skip the copy.
    """
    check_async_fn(load, "load")
    check_async_fn(save, "save")
    if copy_resource is not None and not callable(copy_resource):
        raise TypeError(f"copy_resource must be a function or None, got {copy_resource!r}")
    min_duration = check_duration(min_duration, "min_duration", allow_zero=False)
    if max_duration is None:
        max_duration = 2 * min_duration
    max_duration = check_duration(max_duration, "max_duration", allow_zero=False)
    if not max_duration > min_duration or math.isinf(min_duration):
        raise ValueError(
            f"max_duration ({max_duration}) must be greater than min_duration ({min_duration})"
        )
    check_positive_int(max_concurrent_io, "max_concurrent_io")
    check_positive_int(mailbox_size, "mailbox_size")
    batcher = Batcher(load, save, min_duration, max_duration, max_concurrent_io, copy_resource)
    try:
        async with open_keyed(
            batcher._batch, idle_timeout=idle_timeout, mailbox_size=mailbox_size, name="batcher"
        ) as keyed:
            batcher._keyed = keyed
            yield batcher
    finally:
        batcher._answer_the_rest()
