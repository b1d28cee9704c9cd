"""The SQLite store's group runner: set-based chain steps and new chains answer and write
exactly what the operations one by one would, and a failing operation still fails alone."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.bus import ChainRecord, Job, JobContext, JobRecord, SQLiteStore, open_bus
from actors.bus import _sqlite_group as group_runner
from actors.bus import _sqlite_ops as ops
from actors.bus._model import LaneFence
from actors.bus._sqlite_schema import connect

from .stores import T0

_Call = tuple[Callable[..., Any], tuple[Any, ...], None]

_IDS = [f"c{i}" for i in range(6)]


def _record(chain_id: str, length: int, timeout: float | None, lane: str | None) -> ChainRecord:
    nodes = tuple(
        JobRecord(f"{chain_id}-n{i}", "w", f'"{i}"', "default", 0.5 * i, timeout, i, 0.0, lane)
        for i in range(length)
    )
    callbacks = (("finally", JobRecord(f"{chain_id}-f", "cb", "null", "default")),)
    return ChainRecord(chain_id, f"d-{chain_id}", "default", nodes, T0, callbacks)


records = st.builds(
    _record,
    st.sampled_from(_IDS),
    st.integers(1, 3),
    st.none() | st.just(2.5),
    st.none() | st.just("lane-a"),
)
moments = st.integers(0, 100).map(lambda s: T0 + timedelta(seconds=s))
fences = st.none() | st.builds(LaneFence, st.just("default"), st.just("lane-a"), st.integers(1, 3))
calls = st.one_of(
    st.tuples(st.just(ops.create_chain), st.tuples(records)),
    st.tuples(  # mostly plain steps: the set-based kind
        st.just(ops.record_chain_step),
        st.tuples(st.sampled_from(_IDS), st.integers(0, 3), st.just(None), moments),
    ),
    st.tuples(
        st.just(ops.record_chain_step),
        st.tuples(
            st.sampled_from(_IDS),
            st.integers(0, 3),
            st.none() | st.just("ValueError: no"),
            moments,
            fences,
        ),
    ),
    st.tuples(st.just(ops.fail_chain), st.tuples(st.sampled_from(_IDS), st.just("x"), moments)),
    st.tuples(st.just(ops.get_chain), st.tuples(st.sampled_from(_IDS))),
    st.tuples(st.just(ops.job_callbacks), st.sampled_from(_IDS).map(lambda c: (f"chain:{c}",))),
    st.tuples(
        st.just(ops.claim_callback),
        st.tuples(st.sampled_from(_IDS).map("chain:{}".format), st.just("finally"), st.just(1)),
    ),
).map(lambda call: (call[0], call[1], None))
groups = st.lists(calls, max_size=12)


def _dump(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    tables = ["chains", "chain_nodes", "job_callbacks", "callbacks", "lane_fences"]
    return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in tables}


def _answers(results: list[tuple[bool, Any]]) -> list[tuple[bool, Any]]:
    """Values as they are; errors by type and message (two runs raise equal, not the same)."""
    return [(ok, value if ok else (type(value), str(value))) for ok, value in results]


@contextmanager
def _pair() -> Iterator[tuple[sqlite3.Connection, sqlite3.Connection]]:
    """Two fresh stores' connections: one for the group runner, one for the calls one by one."""
    grouped, plain = connect(":memory:", 1.0), connect(":memory:", 1.0)
    try:
        yield grouped, plain
    finally:
        grouped.close()
        plain.close()


@settings(max_examples=300, deadline=None)
@given(setup=st.lists(groups, max_size=3), group=groups)
def test_set_based_calls_answer_and_write_as_one_by_one(
    setup: list[list[_Call]], group: list[_Call]
) -> None:
    with _pair() as (grouped, plain):
        for earlier in setup:  # the same history on both, one by one
            group_runner.run_plain_group(grouped, earlier)
            group_runner.run_plain_group(plain, earlier)
        assert _dump(grouped) == _dump(plain)
        ours = group_runner.run_group(grouped, group)
        theirs = group_runner.run_plain_group(plain, group)
        assert _answers(ours) == _answers(theirs)
        assert _dump(grouped) == _dump(plain)


def _steps_of_created_chains(count: int) -> tuple[list[_Call], list[_Call]]:
    created = [(ops.create_chain, (_record(f"k{i}", 2, None, None),), None) for i in range(count)]
    steps = [(ops.record_chain_step, (f"k{i}", 0, None, T0), None) for i in range(count)]
    return created, steps


def test_a_failing_set_based_part_runs_its_calls_one_by_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The set-based step fails after it wrote: rolled back, then each step on its own; a new
    chain whose id is taken fails alone, the other new chains are created."""
    with _pair() as (grouped, plain):
        _a_failing_part(grouped, plain, monkeypatch)


def _a_failing_part(
    grouped: sqlite3.Connection, plain: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    created, steps = _steps_of_created_chains(5)
    for conn in (grouped, plain):
        group_runner.run_plain_group(conn, created)
    real = group_runner._record_chain_steps

    def breaks(conn: sqlite3.Connection, calls: list[tuple[Any, ...]]) -> Any:
        real(conn, calls)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(group_runner, "_record_chain_steps", breaks)
    taken = (ops.create_chain, (_record("k2", 1, None, None),), None)
    fresh = [(ops.create_chain, (_record(f"n{i}", 1, None, None),), None) for i in range(3)]
    group = [*steps, fresh[0], taken, *fresh[1:]]
    ours = group_runner.run_group(grouped, group)
    theirs = group_runner.run_plain_group(plain, group)
    assert _answers(ours) == _answers(theirs)
    assert [ok for ok, _ in ours] == [True] * 6 + [False, True, True]
    assert isinstance(ours[6][1], sqlite3.IntegrityError)
    assert [value.next_index for _, value in ours[:5]] == [1] * 5
    assert _dump(grouped) == _dump(plain)


def test_many_steps_and_chains_run_in_chunks() -> None:
    """More rows than one statement takes (and a count that is no power of two)."""
    created, steps = _steps_of_created_chains(2 * group_runner._ROWS + 3)
    with _pair() as (grouped, plain):
        for calls in (created, steps):
            assert _answers(group_runner.run_group(grouped, calls)) == _answers(
                group_runner.run_plain_group(plain, calls)
            )
        assert _dump(grouped) == _dump(plain)


async def _noop(ctx: JobContext) -> None:
    pass


async def test_a_bus_records_concurrent_chains_set_based(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chains dispatched at once share groups: their steps and creations go set-based."""
    sizes: dict[str, list[int]] = {"steps": [], "creates": []}
    real_steps, real_creates = group_runner._record_chain_steps, group_runner._create_chains

    def steps(conn: sqlite3.Connection, calls: list[tuple[Any, ...]]) -> Any:
        sizes["steps"].append(len(calls))
        return real_steps(conn, calls)

    def creates(conn: sqlite3.Connection, calls: list[tuple[Any, ...]]) -> Any:
        sizes["creates"].append(len(calls))
        return real_creates(conn, calls)

    monkeypatch.setattr(group_runner, "_record_chain_steps", steps)
    monkeypatch.setattr(group_runner, "_create_chains", creates)
    store = SQLiteStore(tmp_path / "bus.db")
    async with open_bus(store=store) as bus:
        bus.register("w", _noop)
        ids: list[str] = []

        async def dispatch() -> None:
            ids.append(await bus.chain(Job("w"), Job("w"), Job("w")).dispatch())

        async with trio.open_nursery() as nursery:
            for _ in range(30):
                nursery.start_soon(dispatch)
        await bus.wait_idle()
        states = [await bus.find_chain(chain_id) for chain_id in ids]
    assert all(state.completed for state in states)
    assert sum(sizes["creates"]) == 30
    assert sum(sizes["steps"]) == 90
    assert max(sizes["creates"]) > 1
    assert max(sizes["steps"]) > 1


def test_a_chain_missing_its_next_node_fails_its_step_alone() -> None:
    """A damaged file (a chain's next node deleted by hand): that step fails as it does one
    by one, and the other steps of the group still commit."""
    created, steps = _steps_of_created_chains(3)
    with _pair() as (grouped, plain):
        for conn in (grouped, plain):
            group_runner.run_plain_group(conn, created)
            conn.execute("DELETE FROM chain_nodes WHERE chain_id = 'k1' AND idx = 1")
        ours = group_runner.run_group(grouped, steps)
        assert _answers(ours) == _answers(group_runner.run_plain_group(plain, steps))
        assert [ok for ok, _ in ours] == [True, False, True]
        assert _dump(grouped) == _dump(plain)
