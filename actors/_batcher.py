"""Batcher: per key, load a resource once, apply every op that arrives within a window, save once.

>>> async with actors.open_batcher(load=load_balance, save=save_balance, min_duration=0.1) as b:
...     balance = await b.run("account:1", lambda balance: balance + 5)

Each key is a keyed actor. Its first op opens a batch: the actor waits for an I/O slot, loads
the key's resource and keeps the window open for ``min_duration`` from the load's start; ops
told to the key meanwhile wait in its mailbox. When the window closes the actor takes those
that arrived before it closed, applies them in arrival order, saves, and answers every caller.
(An op arriving at the very instant the window closes may land in either batch.) Ops arriving
after that wait in the mailbox for the next batch, which loads after this save.

The I/O slots (``max_concurrent_io``) serve a waiting save before a waiting load: a save
finishes a batch and answers its callers, a load only starts another one, so a burst over
many keys cannot starve the saves. Time spent waiting for a slot (or for a busy event loop
to wake the batch after its window) is not the batch's time.

Protecting the resource from an op that raises costs O(1) per op that succeeds: by default
ops return a new resource and leave the one they were given alone (so the batch simply
keeps the old one when an op raises); with ``journal=True`` a dict resource is changed in
place through a view that remembers the old value of each key an op writes, and undoes
those writes if the op raises.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import attrs
import trio

from ._checks import check_async_fn, check_duration, check_positive_int
from ._errors import ActorsError, ComponentClosed
from ._keyed import KeyedActors, open_keyed
from ._keys import check_key
from ._reply import Reply

Res = TypeVar("Res")

log = logging.getLogger("actors.batcher")

#: How many `BatchReport` records `Batcher.stats` keeps (the most recent ones).
RECENT_BATCHES = 64


class BatchFailed(ActorsError, RuntimeError):
    """The batch this op was in failed in ``load`` or ``save`` (or ran out of time there).

    Every caller of the batch gets an error object of its own; ``__cause__`` is the batch's
    error (a `TimeoutError` naming what ran out of time, or what ``load``/``save`` raised).
    """

    def __init__(self, key: str, stage: str, error: BaseException) -> None:
        super().__init__(f"the batch for key {key!r} failed in {stage}: {error}")
        self.key = key
        self.stage = stage
        """``"load"`` or ``"save"``."""
        self.__cause__ = error


@attrs.frozen
class BatchReport:
    """What one batch did: its figures, for `Batcher.stats` and the ``on_batch`` observer."""

    key: str
    """The batch's key."""
    started_at: float
    """Trio time the batch's load started (after it got its I/O slot)."""
    ops: int
    """Ops applied, those that raised included (ops whose callers left first are not)."""
    failed_ops: int
    """Ops that raised (each failed its own `run` only)."""
    load_duration: float
    """Seconds ``load`` ran (0 with a ``factory``)."""
    save_duration: float | None
    """Seconds ``save`` ran; `None` when no save ran (the load failed, every caller left,
    or there is no ``save``)."""
    total_duration: float
    """Seconds from the load's start to the batch's end, I/O slot waits included."""
    error: BaseException | None
    """The load's or save's error that failed the batch, or `None`."""


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
    """``load``/``save`` calls holding an I/O slot now (at most ``max_concurrent_io``)."""
    io_waiting: int = 0
    """Batches waiting for an I/O slot now (loads and saves)."""
    skipped_saves_total: int = 0
    """Batches not saved because every caller had given up (been cancelled) meanwhile."""
    recent_batches: tuple[BatchReport, ...] = ()
    """The last few batches (up to 64), oldest first."""


class _IoSlots:
    """At most ``size`` loads and saves at once; a waiting save is served before a waiting load.

    A released slot passes straight to the next waiter, so no newcomer can overtake it.
    """

    __slots__ = ("_loads", "_saves", "in_use", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.in_use = 0
        self._saves = trio.lowlevel.ParkingLot()
        self._loads = trio.lowlevel.ParkingLot()

    @property
    def waiting(self) -> int:
        return len(self._saves) + len(self._loads)

    async def acquire(self, *, save: bool) -> None:
        if self.in_use < self.size and not self._saves and (save or not self._loads):
            self.in_use += 1
            await trio.lowlevel.checkpoint()
            return
        await (self._saves if save else self._loads).park()  # woken holding the slot

    def release(self) -> None:
        for lot in (self._saves, self._loads):
            if lot:
                lot.unpark()  # hand the slot over: in_use stays
                return
        self.in_use -= 1


_MISSING: Any = object()


class _Trial(MutableMapping[Any, Any]):
    """One op's view of a dict resource: writes go through, the first write of a key is noted.

    `rollback` puts back every key the op wrote. Cost: O(keys written), whatever the size.
    """

    __slots__ = ("_data", "_undo")

    def __init__(self, data: MutableMapping[Any, Any]) -> None:
        self._data = data
        self._undo: dict[Any, Any] = {}

    def _note(self, key: Any) -> None:
        if key not in self._undo:
            self._undo[key] = self._data.get(key, _MISSING)

    def __getitem__(self, key: Any) -> Any:
        return self._data[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._note(key)
        self._data[key] = value

    def __delitem__(self, key: Any) -> None:
        self._note(key)
        del self._data[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"_Trial({self._data!r})"

    def rollback(self) -> None:
        data = self._data
        for key, old in self._undo.items():
            if old is _MISSING:
                data.pop(key, None)
            else:
                data[key] = old


# A message to a key's actor: the op, when its `run` was called, and where its caller waits.
_Request = tuple[Callable[[Any], Any], float, Reply[Any]]


class Batcher(Generic[Res]):
    """Runs ops on per-key resources in batches. Made by `open_batcher`."""

    def __init__(
        self,
        load: Callable[[str], Awaitable[Res]] | None,
        save: Callable[[str, Res], Awaitable[object]] | None,
        factory: Callable[[], Res] | None,
        min_duration: float,
        max_duration: float,
        max_concurrent_io: int,
        copy_resource: Callable[[Res], Res] | None,
        journal: bool,
        on_batch: Callable[[BatchReport], object] | None,
    ) -> None:
        self._load = load
        self._save = save
        self._factory = factory
        self._copy = copy_resource
        self._journal = journal
        self._on_batch = on_batch
        self._waiting: set[Reply[Any]] = set()
        self._min_duration = min_duration
        self._max_duration = max_duration
        self._io = _IoSlots(max_concurrent_io)
        self._keyed: KeyedActors[_Request, None] | None = None
        self._closed = False
        self._batches_total = 0
        self._failed_batches_total = 0
        self._skipped_saves_total = 0
        self._ops_total = 0
        self._recent: deque[BatchReport] = deque(maxlen=RECENT_BATCHES)

    async def run(self, key: str, op: Callable[[Res], Res]) -> Res:
        """Apply ``op`` to ``key``'s resource in the current (or next) batch; return its result.

        ``op(resource)`` must be a fast, sync function returning the new resource; what it
        returns is what `run` returns, once the batch is saved. If ``op`` raises, only this
        call fails (with that exception) and the batch goes on with the resource as it was
        before ``op``; if ``load`` or ``save`` fails or runs out of time, every call in the
        batch raises a `BatchFailed` of its own whose ``__cause__`` is that error.
        """
        if self._closed:
            raise ComponentClosed("the batcher is closed: call run inside its `async with` block")
        check_key(key)
        if not callable(op) or inspect.iscoroutinefunction(op):
            raise TypeError(f"op must be a sync function resource -> resource, got {op!r}")
        assert self._keyed is not None
        reply: Reply[Res] = Reply()
        self._waiting.add(reply)
        try:
            await self._keyed.tell(key, (op, trio.current_time(), reply))
            return await reply.wait()
        finally:
            self._waiting.discard(reply)

    def _answer_the_rest(self) -> None:
        """The batcher is gone: answer every op still waiting (queued for a batch never run)."""
        for reply in list(self._waiting):
            reply.fail(ComponentClosed("the batcher closed before this op ran"))

    def stats(self) -> BatcherStats:
        """A snapshot of keys, batches, ops and I/O so far, with the last few batches."""
        assert self._keyed is not None
        return BatcherStats(
            live_keys=self._keyed.stats().live,
            batches_total=self._batches_total,
            failed_batches_total=self._failed_batches_total,
            ops_total=self._ops_total,
            io_in_flight=self._io.in_use,
            io_waiting=self._io.waiting,
            skipped_saves_total=self._skipped_saves_total,
            recent_batches=tuple(self._recent),
        )

    # ---------------------------------------------------------------- one batch

    async def _batch(self, key: str, first: _Request) -> None:
        """The key's actor handling one batch, opened by ``first``."""
        requests = [first]
        try:
            await self._run_batch(key, requests)
        except BaseException:
            for _, _, reply in requests:
                reply.fail(ComponentClosed("the batcher shut down before this batch was saved"))
            raise

    async def _io_call(
        self, what: str, fn: Callable[[], Awaitable[Any]], *, save: bool, used: float = 0.0
    ) -> tuple[Any, float, float]:
        """Run ``fn`` in an I/O slot; return its value, when it started and how long it ran.

        It may run for what is left of ``max_duration`` after ``used`` seconds of the batch's
        own time (its load and window); waiting for the slot, or for the event loop to wake
        the batch after its window, is not the batch's time.
        """
        await self._io.acquire(save=save)
        try:
            started = trio.current_time()
            with trio.move_on_at(started + self._max_duration - used) as scope:
                value = await fn()
            ran = trio.current_time() - started
            if scope.cancelled_caught:
                before = f"load and window {used:g}s, then " if save else ""
                raise TimeoutError(
                    f"{what} did not finish within max_duration={self._max_duration}s of the "
                    f"batch's load start ({before}{what} ran {ran:g}s; waits for an I/O slot do "
                    "not count); raise max_duration or make it faster"
                )
            return value, started, ran
        finally:
            self._io.release()

    async def _run_batch(self, key: str, requests: list[_Request]) -> None:
        assert self._keyed is not None
        load = self._load
        started = trio.current_time()
        load_duration = 0.0
        error: BaseException | None = None
        stage = "load"
        resource: Any = None
        if load is None:
            assert self._factory is not None
            try:
                resource = self._factory()
            except Exception as exc:
                error = exc
        else:
            # Ops told meanwhile wait in the mailbox: loading first costs no task of its own.
            try:
                resource, started, load_duration = await self._io_call(
                    f"load({key!r})", lambda: load(key), save=False
                )
            except Exception as exc:
                error = exc
        if error is None and self._journal and not isinstance(resource, MutableMapping):
            error = TypeError(
                f"journal=True needs a dict-like resource (a MutableMapping), got "
                f"{type(resource).__name__}; or use ops that return a new resource"
            )
        window_end = started + self._min_duration
        await trio.sleep_until(window_end)
        requests.extend(self._keyed.take_pending(key, lambda request: request[1] <= window_end))

        self._batches_total += 1
        if error is None:
            resource, answers, failed_ops = self._apply(resource, requests)
            save_duration: float | None = None
            if self._save is None:
                pass
            elif all(reply.abandoned for _, _, reply in requests):
                self._skipped_saves_total += 1  # nobody waits for it: a pointless write
            else:
                save = self._save
                final = resource
                try:
                    _, _, save_duration = await self._io_call(
                        f"save({key!r})",
                        lambda: save(key, final),
                        save=True,
                        used=max(window_end, started + load_duration) - started,
                    )
                except Exception as exc:
                    error, stage = exc, "save"
            if error is None:
                for reply, answer in answers:
                    if isinstance(answer, BaseException):
                        reply.fail(answer)
                    else:
                        reply.succeed(answer)
        else:
            answers, failed_ops, save_duration = [], 0, None
        if error is not None:
            self._failed_batches_total += 1
            for _, _, reply in requests:
                reply.fail(BatchFailed(key, stage, error))  # one object per caller
        self._report(
            BatchReport(
                key=key,
                started_at=started,
                ops=len(answers),
                failed_ops=failed_ops,
                load_duration=load_duration,
                save_duration=save_duration,
                total_duration=trio.current_time() - started,
                error=error,
            )
        )

    def _apply(
        self, resource: Any, requests: list[_Request]
    ) -> tuple[Any, list[tuple[Reply[Any], Any]], int]:
        """Apply the ops of callers still waiting, in order; an op that raises changes nothing."""
        answers: list[tuple[Reply[Any], Any]] = []
        failed = 0
        copy, journal = self._copy, self._journal
        for fn, _, reply in requests:
            if reply.abandoned:
                continue
            self._ops_total += 1
            trial: _Trial | None = None
            try:
                if journal:
                    trial = _Trial(resource)
                    after = fn(trial)
                    if after is trial:
                        after = resource
                elif copy is not None:
                    after = fn(copy(resource))
                else:
                    after = fn(resource)
            except Exception as exc:
                if trial is not None:
                    trial.rollback()
                failed += 1
                answers.append((reply, exc))
            else:
                if not journal:  # with a journal the resource is the same dict throughout
                    resource = after
                answers.append((reply, after))
        return resource, answers, failed

    def _report(self, report: BatchReport) -> None:
        self._recent.append(report)
        if self._on_batch is None:
            return
        try:
            self._on_batch(report)
        except Exception:
            log.exception("batcher: on_batch failed for key %r", report.key)


@asynccontextmanager
async def open_batcher(
    load: Callable[[str], Awaitable[Res]] | None = None,
    save: Callable[[str, Res], Awaitable[object]] | None = None,
    *,
    factory: Callable[[], Res] | None = None,
    min_duration: float = 0.1,
    max_duration: float | None = None,
    max_concurrent_io: int = 64,
    idle_timeout: float = 60.0,
    mailbox_size: int = 10_000,
    journal: bool = False,
    copy_resource: Callable[[Res], Res] | None = None,
    on_batch: Callable[[BatchReport], object] | None = None,
) -> AsyncIterator[Batcher[Res]]:
    """Open a batcher over ``load(key) -> resource`` and ``save(key, resource)``.

    ``load`` and ``save`` are optional: without ``load`` each batch starts from
    ``factory()`` (say ``dict``), without ``save`` nothing is written.
    ``min_duration`` (> 0, finite): how long a batch accepts ops, from its load's start.
    ``max_duration`` (> ``min_duration``, default twice it): the deadline for ``load`` and
    ``save``, from the load's start; waiting for an I/O slot does not count.
    ``max_concurrent_io``: how many loads and saves may run at once across all keys, so a
    burst of keys cannot open a thousand database connections (waiting saves go first).
    ``mailbox_size``: ops that may wait for one key before further callers wait to send
    theirs (backpressure); a window gathers at most this many ops, the rest go to the next.

    How an op that raises leaves the resource as it was, at O(1) per op that succeeds:

    * default: ops return the new resource and do not change the one they get (ints, tuples,
      frozen attrs classes, ``value | {k: v}``); the batch keeps the old one if an op raises.
    * ``journal=True``: the resource is a dict changed in place; each op gets a view of it that
      undoes the op's writes if the op raises (replace values, do not mutate them in place).
      What the op returns is only what its `run` returns (the view itself stands for the
      dict); the batch saves the dict.
    * ``copy_resource``: each op gets ``copy_resource(resource)`` (say ``copy.deepcopy``) and
      may mutate it freely, at the cost of a copy per op: only for small resources.

    ``on_batch(report)``: called with a `BatchReport` after each batch (errors it raises are
    logged and ignored); the last few reports are also in ``stats().recent_batches``.
    """
    if load is not None:
        check_async_fn(load, "load")
    if save is not None:
        check_async_fn(save, "save")
    if load is None and factory is None:
        raise TypeError("open_batcher() needs load= (async, key -> resource) or factory=")
    if load is not None and factory is not None:
        raise TypeError("open_batcher() takes load= or factory=, not both")
    if factory is not None and not callable(factory):
        raise TypeError(f"factory must be a function () -> resource, got {factory!r}")
    if copy_resource is not None and not callable(copy_resource):
        raise TypeError(f"copy_resource must be a function or None, got {copy_resource!r}")
    if not isinstance(journal, bool):
        raise TypeError(f"journal must be True or False, got {journal!r}")
    if journal and copy_resource is not None:
        raise TypeError("pass journal=True or copy_resource=, not both: each protects on its own")
    if on_batch is not None and not callable(on_batch):
        raise TypeError(f"on_batch must be a function (BatchReport) -> None, got {on_batch!r}")
    min_duration = check_duration(min_duration, "min_duration", allow_zero=False)
    if math.isinf(min_duration):
        raise ValueError(
            "min_duration must be a finite number of seconds (how long a batch gathers ops), "
            "got inf"
        )
    if max_duration is None:
        max_duration = 2 * min_duration
    max_duration = check_duration(max_duration, "max_duration", allow_zero=False)
    if not max_duration > min_duration:
        raise ValueError(
            f"max_duration ({max_duration}) must be greater than min_duration ({min_duration})"
        )
    check_positive_int(max_concurrent_io, "max_concurrent_io")
    check_positive_int(mailbox_size, "mailbox_size")
    batcher = Batcher(
        load,
        save,
        factory,
        min_duration,
        max_duration,
        max_concurrent_io,
        copy_resource,
        journal,
        on_batch,
    )
    try:
        async with open_keyed(
            batcher._batch,
            idle_timeout=idle_timeout,
            mailbox_size=mailbox_size,
            name="the batcher's key actors",
        ) as keyed:
            batcher._keyed = keyed
            yield batcher
    finally:
        batcher._closed = True
        batcher._answer_the_rest()
