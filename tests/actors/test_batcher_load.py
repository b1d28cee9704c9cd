"""The Batcher under load and failure: bursts, I/O priority, protection, errors, figures."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import BatchFailed, BatchReport, ComponentClosed, open_batcher

from .test_batcher import FakeDb, add


async def run_quietly(batcher: Any, key: str, fn: Any) -> None:
    """Run an op whose own error is expected (and checked elsewhere)."""
    with contextlib.suppress(ArithmeticError, LookupError, ValueError):
        await batcher.run(key, fn)


async def test_a_burst_over_many_keys_succeeds(autojump_clock: Any) -> None:
    """Defect 1: the deadline counts from the load's start, and saves go before loads."""
    db = FakeDb(load_delay=0.01, save_delay=0.01)
    failures: list[BaseException] = []

    async def op(key: str) -> None:
        try:
            await batcher.run(key, add(1))
        except Exception as exc:
            failures.append(exc)

    async with open_batcher(db.load, db.save, min_duration=0.1, max_concurrent_io=8) as batcher:
        async with trio.open_nursery() as nursery:
            for i in range(400):
                for _ in range(3):
                    nursery.start_soon(op, f"k{i}")
    assert failures == []
    assert db.data == {f"k{i}": 3 for i in range(400)}
    assert db.io_max == 8
    assert batcher.stats().batches_total == 400


async def one_after_another(batcher: Any, keys: str) -> None:
    """Open a batch for each key in turn, each once the previous one is waiting."""
    async with trio.open_nursery() as nursery:
        for key in keys:
            nursery.start_soon(batcher.run, key, add(1))
            await trio.testing.wait_all_tasks_blocked()


async def test_a_waiting_save_goes_before_a_waiting_load(autojump_clock: Any) -> None:
    db = FakeDb(load_delay=0.1, save_delay=0.1)
    async with open_batcher(
        db.load, db.save, min_duration=0.05, max_duration=1.0, max_concurrent_io=1
    ) as batcher:
        await one_after_another(batcher, "abc")
    assert [(c[0], c[1], round(c[2], 6)) for c in db.calls] == [
        ("load", "a", 0.0),
        ("load", "b", 0.1),
        ("save", "a", 0.2),  # a's save was waiting before c's load: it goes first
        ("save", "b", 0.3),
        ("load", "c", 0.4),
        ("save", "c", 0.5),
    ]


async def test_waiting_for_an_io_slot_is_not_the_batch_time(autojump_clock: Any) -> None:
    db = FakeDb(load_delay=0.5, save_delay=0.5)
    async with open_batcher(
        db.load, db.save, min_duration=0.1, max_duration=1.2, max_concurrent_io=1
    ) as batcher:
        await one_after_another(batcher, "ab")
    # b's load waited 0.5 s for a's load and its save waited for a's save: neither counts
    assert db.data == {"a": 1, "b": 1}
    reports = batcher.stats().recent_batches
    assert [(r.key, r.started_at, r.error) for r in reports] == [("a", 0.0, None), ("b", 0.5, None)]


async def test_the_error_names_what_timed_out(autojump_clock: Any) -> None:
    db = FakeDb(save_delay=5.0)
    async with open_batcher(db.load, db.save, min_duration=1.0, max_duration=1.5) as batcher:
        with pytest.raises(BatchFailed) as info:
            await batcher.run("k", add(1))
    assert info.value.stage == "save"
    assert str(info.value.__cause__) == (
        "save('k') did not finish within max_duration=1.5s of the batch's load start "
        "(load and window 1s, then save('k') ran 0.5s; waits for an I/O slot do not count); "
        "raise max_duration or make it faster"
    )


async def test_ops_get_the_resource_itself_not_a_copy(autojump_clock: Any) -> None:
    """Defect 2: no copy per op; a resource that cannot be copied (a lock inside) works."""
    resource = {"lock": threading.Lock(), "n": 0}
    seen: list[dict[str, Any]] = []

    async def load(key: str) -> dict[str, Any]:
        return resource

    def op(value: dict[str, Any]) -> dict[str, Any]:
        seen.append(value)
        return {**value, "n": value["n"] + 1}

    def bad(value: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("no")

    async with open_batcher(load, min_duration=1.0) as batcher:
        async with trio.open_nursery() as nursery:
            for fn in (op, bad, op):
                nursery.start_soon(run_quietly, batcher, "k", fn)
                await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(ValueError, match="no"):
                await batcher.run("k", bad)
    assert seen[0] is resource  # the loaded object itself
    assert seen[1]["n"] == 1  # the failing op changed nothing


async def test_journal_undoes_the_writes_of_an_op_that_raises(autojump_clock: Any) -> None:
    saved: list[dict[str, int]] = []
    data = {f"k{i}": i for i in range(10_000)}

    async def load(key: str) -> dict[str, int]:
        return data

    async def save(key: str, value: dict[str, int]) -> None:
        saved.append(dict(value))

    def good(d: Any) -> Any:
        d["k1"] += 100
        return d["k1"]  # what run returns; the resource stays the dict

    def bad(d: Any) -> Any:
        d["k2"] = -1
        d["new"] = 5
        del d["k3"]
        d["k2"] = -2
        raise KeyError("changed my mind")

    batcher: Any  # with journal=True an op returns what run should return, not the dict
    async with open_batcher(load, save, min_duration=1.0, journal=True) as batcher:
        async with trio.open_nursery() as nursery:
            for fn in (good, bad, good):
                nursery.start_soon(run_quietly, batcher, "k", fn)
                await trio.testing.wait_all_tasks_blocked()
        assert await batcher.run("k", good) == 301
    first, second = saved
    assert first == {**{f"k{i}": i for i in range(10_000)}, "k1": 201}
    assert second == {**first, "k1": 301}
    assert data["k1"] == 301  # changed in place: no copy was made
    assert "new" not in data
    assert data["k2"] == 2
    assert data["k3"] == 3


async def test_journal_refuses_a_resource_that_is_not_a_mapping(autojump_clock: Any) -> None:
    db = FakeDb()
    async with open_batcher(db.load, db.save, journal=True) as batcher:
        with pytest.raises(BatchFailed, match="journal=True needs a dict-like resource"):
            await batcher.run("k", add(1))


async def test_ops_apply_in_call_order_also_when_the_mailbox_was_full(
    autojump_clock: Any,
) -> None:
    """Defect 4 (fixed in the keyed core): senders waiting for room get in in arrival order."""
    saved: list[tuple[int, ...]] = []

    async def save(key: str, value: tuple[int, ...]) -> None:
        saved.append(value)

    async with open_batcher(factory=tuple, save=save, min_duration=1.0, mailbox_size=2) as batcher:
        async with trio.open_nursery() as nursery:
            for i in range(12):
                nursery.start_soon(batcher.run, "k", lambda v, i=i: (*v, i))
                await trio.testing.wait_all_tasks_blocked()
    assert [i for batch in saved for i in batch] == list(range(12))


async def test_a_batch_whose_callers_all_left_does_not_save(autojump_clock: Any) -> None:
    """Defect 5: nobody waits for the write, and it may be stale."""
    db = FakeDb()
    async with open_batcher(db.load, db.save, min_duration=1.0) as batcher:
        with trio.move_on_after(0.5):
            await batcher.run("k", add(1))
        await trio.sleep(1.0)
        assert [c[0] for c in db.calls] == ["load"]
        assert batcher.stats().skipped_saves_total == 1
        # a batch with one caller left still saves
        async with trio.open_nursery() as nursery:
            nursery.start_soon(batcher.run, "k", add(1))
            with trio.move_on_after(0.5):
                await batcher.run("k", add(10))
    assert db.data == {"k": 1}


async def test_on_batch_hears_every_batch_and_its_errors_are_logged(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    db = FakeDb(load_delay=0.25, save_delay=0.5)
    reports: list[BatchReport] = []

    def observe(report: BatchReport) -> None:
        reports.append(report)
        raise RuntimeError("observer bug")

    async with open_batcher(db.load, db.save, min_duration=1.0, on_batch=observe) as batcher:
        async with trio.open_nursery() as nursery:
            for i in (1, 2):
                nursery.start_soon(batcher.run, "k", add(i))
            nursery.start_soon(run_quietly, batcher, "j", lambda v: 1 // 0)
    by_key = {r.key: r for r in reports}
    assert by_key["k"] == BatchReport("k", 0.0, 2, 0, 0.25, 0.5, 1.5, None)
    assert by_key["j"] == BatchReport("j", 0.0, 1, 1, 0.25, 0.5, 1.5, None)
    assert batcher.stats().recent_batches == tuple(reports)
    assert [r.levelno for r in caplog.records if r.name == "actors.batcher"] == [logging.ERROR] * 2


async def test_a_factory_without_load_or_save(autojump_clock: Any) -> None:
    counts: dict[str, int] = {}

    def count(d: Any) -> Any:
        d["n"] = d.get("n", 0) + 1
        counts["last"] = d["n"]
        return d

    batcher: Any
    async with open_batcher(factory=dict, journal=True, min_duration=1.0) as batcher:
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(batcher.run, "k", count)
        assert await batcher.run("k", count) == {"n": 1}  # a fresh resource for each batch
    assert counts == {"last": 1}
    assert trio.current_time() == 2.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_duration": math.inf}, "min_duration must be a finite number"),
        ({"factory": dict}, "load= or factory=, not both"),
        ({"journal": True, "copy_resource": list}, "journal=True or copy_resource="),
        ({"on_batch": 3}, "on_batch must be a function"),
    ],
)
async def test_clear_configuration_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises((TypeError, ValueError), match=match):
        async with open_batcher(FakeDb().load, **kwargs):
            pass


async def test_closed_message_is_plain_english() -> None:
    async with open_batcher(factory=int) as batcher:
        pass
    with pytest.raises(ComponentClosed, match=r"^the batcher is closed: call run inside"):
        await batcher.run("k", add(1))


# One op: (key, delta, raises, cancelled after (None: never), arrives at). The times are
# chosen so no cancellation falls due at the very instant a batch closes (no ties).
OPS = st.lists(
    st.tuples(
        st.sampled_from("abc"),
        st.integers(-5, 5),
        st.booleans(),
        st.one_of(st.none(), st.sampled_from([0.05, 0.45, 1.55])),
        st.sampled_from([0.0, 0.3, 0.9, 1.2, 2.5]),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(ops=OPS, journal=st.booleans(), mailbox_size=st.sampled_from([2, 100]))
def test_saved_state_is_what_the_answered_ops_made(
    ops: list[tuple[str, int, bool, float | None, float]], journal: bool, mailbox_size: int
) -> None:
    """Whatever raises or is cancelled, each key's saved value is the sum of the ops whose
    ``run`` returned: a raising op leaves nothing behind (with ``journal=True`` it wrote
    before raising), a cancelled one is not applied, none is applied twice."""
    store: dict[str, int] = {}
    answered: set[int] = set()

    async def load(key: str) -> Any:
        return {"n": store.get(key, 0)} if journal else store.get(key, 0)

    async def save(key: str, value: Any) -> None:
        store[key] = value["n"] if journal else value

    def make(delta: int, raises: bool) -> Any:
        def op(value: Any) -> Any:
            if journal:
                value["n"] += delta
                if raises:
                    raise ValueError
                return value
            if raises:
                raise ValueError
            return value + delta

        return op

    async def caller(batcher: Any, i: int, key: str, delta: int, raises: bool,
                     cancel: float | None, at: float) -> None:  # fmt: skip
        await trio.sleep(at)
        with trio.move_on_after(math.inf if cancel is None else cancel):
            with contextlib.suppress(ValueError):
                await batcher.run(key, make(delta, raises))
                answered.add(i)

    async def main() -> None:
        async with open_batcher(
            load, save, min_duration=1.0, journal=journal, mailbox_size=mailbox_size
        ) as batcher:
            async with trio.open_nursery() as nursery:
                for i, op in enumerate(ops):
                    nursery.start_soon(caller, batcher, i, *op)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert all(not ops[i][2] for i in answered)
    for key in "abc":
        expected = sum(ops[i][1] for i in answered if ops[i][0] == key)
        assert store.get(key, 0) == expected
