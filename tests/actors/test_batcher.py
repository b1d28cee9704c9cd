from __future__ import annotations

import math
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from actors import BatcherStats, BatchFailed, BatchReport, ComponentClosed, open_batcher


@attrs.define
class FakeDb:
    """A slow database of integers that records every call with its time."""

    data: dict[str, int] = attrs.field(factory=dict)
    calls: list[tuple[str, str, float]] = attrs.field(factory=list)
    load_delay: float = 0.0
    save_delay: float = 0.0
    fail_load: Exception | None = None
    fail_save: Exception | None = None
    io_now: int = 0
    io_max: int = 0

    async def load(self, key: str) -> int:
        self.calls.append(("load", key, trio.current_time()))
        self.io_now += 1
        self.io_max = max(self.io_max, self.io_now)
        try:
            await trio.sleep(self.load_delay)
            if self.fail_load is not None:
                raise self.fail_load
            return self.data.get(key, 0)
        finally:
            self.io_now -= 1

    async def save(self, key: str, value: int) -> None:
        self.calls.append(("save", key, trio.current_time()))
        self.io_now += 1
        self.io_max = max(self.io_max, self.io_now)
        try:
            await trio.sleep(self.save_delay)
            if self.fail_save is not None:
                raise self.fail_save
            self.data[key] = value
        finally:
            self.io_now -= 1


def _frames(exc: BaseException) -> list[Any]:
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames


def add(n: int) -> Any:
    return lambda value: value + n


async def test_ops_within_the_window_share_one_load_and_one_save(autojump_clock: Any) -> None:
    db = FakeDb(data={"k": 100})
    results: dict[int, int] = {}
    finished: dict[int, float] = {}

    async with open_batcher(db.load, db.save, min_duration=1.0) as batcher:

        async def op(i: int, at: float) -> None:
            await trio.sleep_until(at)
            results[i] = await batcher.run("k", add(i))
            finished[i] = trio.current_time()

        async with trio.open_nursery() as nursery:
            for i, at in enumerate([0.0, 0.2, 0.5, 0.9, 1.5]):
                nursery.start_soon(op, i, at)
    # batch 1: t=0..1 holds ops 0-3 in arrival order; op 4 (t=1.5) opens batch 2 at t=1.5
    assert results == {0: 100, 1: 101, 2: 103, 3: 106, 4: 110}
    assert db.calls == [
        ("load", "k", 0.0),
        ("save", "k", 1.0),
        ("load", "k", 1.5),
        ("save", "k", 2.5),
    ]
    assert finished == {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0, 4: 2.5}
    assert db.data == {"k": 110}
    assert batcher.stats() == BatcherStats(
        live_keys=1,
        batches_total=2,
        failed_batches_total=0,
        ops_total=5,
        io_in_flight=0,
        recent_batches=(
            BatchReport("k", 0.0, 4, 0, 0.0, 0.0, 1.0, None),
            BatchReport("k", 1.5, 1, 0, 0.0, 0.0, 1.0, None),
        ),
    )


async def test_op_arriving_while_saving_waits_for_the_next_batch(autojump_clock: Any) -> None:
    db = FakeDb(save_delay=0.5)
    async with open_batcher(db.load, db.save, min_duration=1.0, max_duration=3.0) as batcher:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(batcher.run, "k", add(1))
            await trio.sleep(1.2)  # the first batch is saving (t=1.0..1.5)
            assert await batcher.run("k", add(10)) == 11
    # the next batch loaded after the first save, and saw its result
    assert db.calls == [
        ("load", "k", 0.0),
        ("save", "k", 1.0),
        ("load", "k", 1.5),
        ("save", "k", 2.5),
    ]


async def test_different_keys_batch_independently(autojump_clock: Any) -> None:
    db = FakeDb()
    async with open_batcher(db.load, db.save, min_duration=1.0) as batcher:
        async with trio.open_nursery() as nursery:
            for key in ["a", "b", "a", "b", "c"]:
                nursery.start_soon(batcher.run, key, add(1))
    assert db.data == {"a": 2, "b": 2, "c": 1}
    assert sorted(c[:2] for c in db.calls if c[0] == "load") == [
        ("load", "a"),
        ("load", "b"),
        ("load", "c"),
    ]
    assert trio.current_time() == 1.0


async def test_a_failing_op_fails_only_its_own_run_and_leaves_the_resource(
    autojump_clock: Any,
) -> None:
    db = FakeDb(data={"k": 1})

    def explode(value: int) -> int:
        raise ArithmeticError(f"cannot use {value}")

    async with open_batcher(db.load, db.save, min_duration=1.0) as batcher:
        results: dict[int, object] = {}

        async def op(i: int, fn: Any) -> None:
            try:
                results[i] = await batcher.run("k", fn)
            except ArithmeticError as exc:
                results[i] = str(exc)

        async with trio.open_nursery() as nursery:
            for i, fn in enumerate([add(1), explode, add(10)]):
                nursery.start_soon(op, i, fn)
                await trio.testing.wait_all_tasks_blocked()
    assert results == {0: 2, 1: "cannot use 2", 2: 12}
    assert db.data == {"k": 12}
    assert batcher.stats().failed_batches_total == 0


@pytest.mark.parametrize("which", ["load", "save"])
async def test_load_or_save_failure_fails_every_run_in_the_batch(
    autojump_clock: Any, which: str
) -> None:
    error = ConnectionError("database down")
    db = FakeDb(fail_load=error if which == "load" else None)
    if which == "save":
        db.fail_save = error
    async with open_batcher(db.load, db.save, min_duration=1.0) as batcher:
        errors: list[BaseException] = []

        async def op() -> None:
            try:
                await batcher.run("k", add(1))
            except BatchFailed as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(op)
        # one error object per caller (defect 3), each caused by the batch's error, each
        # traceback holding that caller's frames only
        assert len({id(e) for e in errors}) == 3
        assert [e.__cause__ for e in errors] == [error, error, error]
        assert max(len(_frames(e)) for e in errors) < 10
        assert [e.stage for e in errors] == [which] * 3  # type: ignore[attr-defined]
        assert batcher.stats().failed_batches_total == 1
        # the next batch works again
        db.fail_load = db.fail_save = None
        assert await batcher.run("k", add(5)) == 5


@pytest.mark.parametrize("which", ["load", "save"])
async def test_load_or_save_past_max_duration_is_a_timeout(autojump_clock: Any, which: str) -> None:
    db = FakeDb()
    if which == "load":
        db.load_delay = 5.0
    else:
        db.save_delay = 5.0
    async with open_batcher(db.load, db.save, min_duration=1.0, max_duration=2.5) as batcher:
        with pytest.raises(BatchFailed, match=rf"{which}\('k'\) did not finish within") as info:
            await batcher.run("k", add(1))
        assert isinstance(info.value.__cause__, TimeoutError)
        # the deadline counts from the batch start
        assert trio.current_time() == 2.5
    assert "k" not in db.data


async def test_at_most_max_concurrent_io_loads_and_saves(autojump_clock: Any) -> None:
    db = FakeDb(load_delay=0.1, save_delay=0.1)
    async with open_batcher(
        db.load, db.save, min_duration=1.0, max_duration=10.0, max_concurrent_io=3
    ) as batcher:
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(batcher.run, f"k{i}", add(1))
    assert db.io_max == 3
    assert db.data == {f"k{i}": 1 for i in range(20)}


async def test_cancelled_caller_before_the_window_closes_is_not_applied(
    autojump_clock: Any,
) -> None:
    db = FakeDb()
    async with open_batcher(db.load, db.save, min_duration=1.0) as batcher:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(batcher.run, "k", add(1))
            with trio.move_on_after(0.5):
                await batcher.run("k", add(100))
    assert db.data == {"k": 1}


async def test_closed_batcher() -> None:
    db = FakeDb()
    async with open_batcher(db.load, db.save) as batcher:
        pass
    with pytest.raises(ComponentClosed, match="batcher"):
        await batcher.run("k", add(1))


async def _async_op(value: int) -> int:
    return value


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"min_duration": 0}, ValueError, "min_duration"),
        ({"min_duration": -1}, ValueError, "min_duration"),
        ({"min_duration": math.nan}, ValueError, "min_duration"),
        ({"min_duration": 1.0, "max_duration": 1.0}, ValueError, "greater than min_duration"),
        ({"min_duration": 1.0, "max_duration": 0.5}, ValueError, "greater than min_duration"),
        ({"max_concurrent_io": 0}, ValueError, "max_concurrent_io"),
        ({"load": None}, TypeError, "load"),
    ],
)
async def test_bad_configuration_fails_at_once(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    db = FakeDb()
    args: dict[str, Any] = {"load": db.load, "save": db.save, **kwargs}
    with pytest.raises(error, match=match):
        async with open_batcher(**args):
            pass


async def test_bad_run_input_fails_at_once() -> None:
    db = FakeDb()
    async with open_batcher(db.load, db.save) as batcher:
        with pytest.raises(ValueError, match="empty"):
            await batcher.run("", add(1))
        with pytest.raises(TypeError, match="sync function"):
            await batcher.run("k", _async_op)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="sync function"):
            await batcher.run("k", 3)  # type: ignore[arg-type]
    assert db.calls == []


async def test_an_op_that_mutates_then_raises_leaves_the_resource_as_before(
    autojump_clock: Any,
) -> None:
    saved: list[list[str]] = []

    async def load(key: str) -> list[str]:
        return []

    async def save(key: str, value: list[str]) -> None:
        saved.append(value)

    def good(items: list[str]) -> list[str]:
        items.append("good")
        return items

    def bad(items: list[str]) -> list[str]:
        items.append("bad")
        raise ValueError("changed my mind")

    errors: list[str] = []

    async def run(batcher: Any, fn: Any) -> None:
        try:
            await batcher.run("k", fn)
        except ValueError as exc:
            errors.append(str(exc))

    # ops that change a list in place opt in to a copy per op (journal=True is for dicts)
    async with open_batcher(load, save, min_duration=1.0, copy_resource=list) as batcher:
        async with trio.open_nursery() as nursery:
            for fn in [good, bad, good]:
                nursery.start_soon(run, batcher, fn)
                await trio.testing.wait_all_tasks_blocked()
    assert errors == ["changed my mind"]
    assert saved == [["good", "good"]]


async def test_a_full_window_of_thousands_of_ops_is_one_batch(autojump_clock: Any) -> None:
    db = FakeDb()
    async with open_batcher(db.load, db.save, min_duration=0.1) as batcher:
        async with trio.open_nursery() as nursery:
            for _ in range(3_000):
                nursery.start_soon(batcher.run, "k", add(1))
    assert [c[0] for c in db.calls] == ["load", "save"]
    assert db.data == {"k": 3_000}
    assert trio.current_time() == 0.1


async def test_past_the_mailbox_size_senders_wait_for_the_next_batch(autojump_clock: Any) -> None:
    db = FakeDb()
    async with open_batcher(db.load, db.save, min_duration=1.0, mailbox_size=2) as batcher:
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(batcher.run, "k", add(1))
    # the first op opens the batch, two fill the mailbox, two wait: two batches
    assert [c[:2] for c in db.calls] == [("load", "k"), ("save", "k")] * 2
    assert db.data == {"k": 5}


async def test_default_max_duration_is_twice_min_duration(autojump_clock: Any) -> None:
    db = FakeDb(load_delay=5.0)
    async with open_batcher(db.load, db.save, min_duration=1.0) as batcher:
        with pytest.raises(BatchFailed, match=r"max_duration=2\.0s"):
            await batcher.run("k", add(1))
        assert trio.current_time() == 2.0


async def test_ops_still_queued_when_the_batcher_is_cancelled_are_answered(
    autojump_clock: Any,
) -> None:
    db = FakeDb(save_delay=0.05)
    outcomes: dict[str, str] = {}

    async def op(name: str, at: float, batcher: Any) -> None:
        await trio.sleep_until(at)
        try:
            await batcher.run("k", add(1))
            outcomes[name] = "ok"
        except ComponentClosed:
            outcomes[name] = "closed"

    async with trio.open_nursery() as outer:
        with trio.move_on_after(0.13):
            async with open_batcher(db.load, db.save, min_duration=0.1) as batcher:
                outer.start_soon(op, "in the batch being saved", 0.0, batcher)
                outer.start_soon(op, "queued for the next batch", 0.12, batcher)
                await trio.sleep_forever()
    assert outcomes == {"in the batch being saved": "closed", "queued for the next batch": "closed"}
    assert trio.current_time() == 0.13


async def _async_load(key: str) -> int:
    return 0


async def test_sync_load_or_save_is_refused_at_open() -> None:
    def sync_load(key: str) -> int:
        return 0

    with pytest.raises(TypeError, match="load must be an async function"):
        async with open_batcher(sync_load, FakeDb().save):  # type: ignore[arg-type]
            pass
    with pytest.raises(TypeError, match="copy_resource"):
        async with open_batcher(_async_load, FakeDb().save, copy_resource=3):  # type: ignore[arg-type]
            pass
