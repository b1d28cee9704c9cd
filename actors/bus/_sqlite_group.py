"""How the SQLite store's writer runs a group of operations in its thread: one transaction.

Every operation of a group was sent before the group started and is answered after it
commits, so none of them happened before another: any order of them is one their callers
could have seen. The writer uses that. Chain steps and new chains, most of a bus's writes,
run *set-based*, after the group's other operations (each on its own, in its own savepoint):
all the plain steps (a succeeded node, no lane fence) in one ``UPDATE ... FROM (VALUES ...)``
and one read of their next nodes, all the new chains in one insert per table. A chain that
another operation of the group names keeps all its operations one by one, in order. A
set-based part runs inside a savepoint; should it fail, it is rolled back and its operations
run one by one, each in its own savepoint, so a failing operation still fails alone.

The set-based step applies `ChainRow.step`'s rule for a succeeded node in SQL; the tests run
both forms on the same groups and compare every answer and row.
"""

from __future__ import annotations

import functools
import operator
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from . import _sqlite_ops as ops
from ._model import JobRecord
from ._rules import ChainRecord, ChainStep, to_micros
from ._sqlite_schema import JOB_COLUMNS, JOB_FIELDS, chain_not_found, job_row

_Result = tuple[bool, Any]
_Call = tuple[Callable[..., Any], tuple[Any, ...], Any]

#: The functions whose calls may run set-based (taken at import: a test that swaps
#: ``_sqlite_ops.record_chain_step`` for a failing stand-in gets its calls run one by one).
_STEP = ops.record_chain_step
_CREATE = ops.create_chain
_NAMES_A_CHAIN = (ops.get_chain, ops.fail_chain)
_CALLBACKS = ops.job_callbacks

#: Rows per set-based statement (3 parameters each, well under SQLite's oldest limit of 999).
_ROWS = 256


def run_plain_group(conn: sqlite3.Connection, group: Sequence[_Call]) -> list[_Result]:
    """Every call in one transaction, in order (each takes its own savepoint if it needs
    all or nothing: `_sqlite_schema.transaction`)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        results = [_call(conn, fn, args) for fn, args, _ in group]
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return results


def run_group(conn: sqlite3.Connection, group: Sequence[_Call]) -> list[_Result]:
    """The store's group: one transaction, chain steps and new chains set-based (see the
    module doc); a result per call, in the group's order."""
    results: list[_Result | None] = [None] * len(group)
    steps, creates = _set_based(group)
    conn.execute("BEGIN IMMEDIATE")
    try:
        for i, (fn, args, _) in enumerate(group):
            if results[i] is None and i not in steps and i not in creates:
                results[i] = _call(conn, fn, args)
        _in_bulk(conn, group, creates, results, _create_chains)
        _in_bulk(conn, group, steps, results, _record_chain_steps)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    answered = [result for result in results if result is not None]
    assert len(answered) == len(group)
    return answered


def _call(conn: sqlite3.Connection, fn: Callable[..., Any], args: tuple[Any, ...]) -> _Result:
    try:
        return True, fn(conn, *args)
    except Exception as exc:
        return False, exc


def _set_based(group: Sequence[_Call]) -> tuple[dict[int, None], dict[int, None]]:
    """The indexes of the calls that run set-based: plain steps and new chains of chains
    that no other call of the group names (a chain named twice keeps its calls in order)."""
    steps: dict[int, None] = {}
    creates: dict[int, None] = {}
    seen: dict[str, int] = {}
    for i, (fn, args, _) in enumerate(group):
        bulk: dict[int, None] | None = None
        if fn is _STEP:
            chain_id = args[0]
            if args[2] is None and (len(args) < 5 or args[4] is None):
                bulk = steps
        elif fn is _CREATE:
            chain_id, bulk = args[0].chain_id, creates
        elif fn in _NAMES_A_CHAIN:
            chain_id = args[0]
        elif fn is _CALLBACKS and args[0].startswith("chain:"):
            chain_id = args[0][6:]
        else:
            continue
        first = seen.setdefault(chain_id, i)
        if first != i:
            steps.pop(first, None)
            creates.pop(first, None)
        elif bulk is not None:
            bulk[i] = None
    return steps, creates


def _in_bulk(
    conn: sqlite3.Connection,
    group: Sequence[_Call],
    indexes: dict[int, None],
    results: list[_Result | None],
    bulk: Callable[[sqlite3.Connection, list[tuple[Any, ...]]], list[_Result]],
) -> None:
    """Run the calls at ``indexes`` set-based, in a savepoint; if that fails, one by one."""
    if not indexes:
        return
    conn.execute("SAVEPOINT bulk")
    try:
        answers = bulk(conn, [group[i][1] for i in indexes])
    except Exception:
        conn.execute("ROLLBACK TO bulk")
        conn.execute("RELEASE bulk")
        for i in indexes:
            fn, args, _ = group[i]
            results[i] = _call(conn, fn, args)
        return
    conn.execute("RELEASE bulk")
    for i, answer in zip(indexes, answers, strict=True):
        results[i] = answer


@functools.cache
def _sql(template: str, rows: int, width: int) -> str:
    """``template`` with ``{values}`` as a ``VALUES`` list of ``rows`` rows of ``width``."""
    row = f"({', '.join('?' * width)})"
    return template.format(values=f"(VALUES {', '.join([row] * rows)})")


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), _ROWS):
        yield items[start : start + _ROWS]


#: Above this many rows, a statement's rows are padded to a multiple of it (below, to a
#: power of two): at most 2 * _STEP_ROWS texts per statement (the connection caches 128).
_STEP_ROWS = 16


def _padded(rows: Sequence[tuple[Any, ...]]) -> tuple[int, list[Any]]:
    """A statement's rows as its parameters, padded to a power of two up to `_STEP_ROWS`
    and to a multiple of it above, by repeating the last row (a row twice changes nothing:
    one update per target row, one answer per key), so a few statement texts serve every
    group (SQLite caches them) and few padding rows are bound and joined. Not padded with
    NULLs: the sqlite3 module binds None the slow way, through its adapter lookup."""
    size = 1
    while size < len(rows) and size < _STEP_ROWS:
        size *= 2
    if size < len(rows):
        size = -(-len(rows) // _STEP_ROWS) * _STEP_ROWS
    params = [value for row in rows for value in row]
    params.extend(rows[-1] * (size - len(rows)))
    return size, params


_STEP_SQL = (
    "UPDATE chains SET next_index = chains.next_index + 1, "
    "completed = chains.next_index + 1 >= chains.length, updated_at = s.column3 "
    "FROM {values} AS s WHERE chains.chain_id = s.column1 AND chains.next_index = s.column2 "
    "AND chains.completed = 0 AND chains.failed = 0 "
    "RETURNING chains.chain_id, chains.next_index, chains.completed"
)
_NODE_SQL = (
    f"SELECT n.chain_id, {', '.join('n.' + c for c in JOB_COLUMNS.split(', '))} "
    "FROM {values} AS w JOIN chain_nodes AS n ON n.chain_id = w.column1 AND n.idx = w.column2"
)
_KNOWN_SQL = "SELECT chain_id FROM chains WHERE chain_id IN (SELECT column1 FROM {values})"


def _record_chain_steps(conn: sqlite3.Connection, calls: list[tuple[Any, ...]]) -> list[_Result]:
    """`_sqlite_ops.record_chain_step` of a succeeded node (no fence) for distinct chains."""
    moved: dict[str, tuple[int, bool]] = {}
    for chunk in _chunks(calls):
        rows = [(args[0], args[1], to_micros(args[3])) for args in chunk]
        size, params = _padded(rows)
        for chain_id, next_index, completed in conn.execute(_sql(_STEP_SQL, size, 3), params):
            moved[chain_id] = (next_index, bool(completed))
    wanted = [(c, i) for c, (i, done) in moved.items() if not done]
    nodes = _next_nodes(conn, wanted)
    if len(nodes) != len(wanted):  # a chain without its next node: one by one, as it fails
        raise LookupError("a chain's next node is missing")
    stale = _known(conn, [args[0] for args in calls if args[0] not in moved])
    answers: list[_Result] = []
    for args in calls:
        chain_id = args[0]
        found = moved.get(chain_id)
        if found is not None:
            next_index, completed = found
            step = ChainStep(next_index, completed, False, nodes.get(chain_id))
            answers.append((True, step))
        elif chain_id in stale:  # a duplicate, or the chain ended: nothing changed
            answers.append((True, None))
        else:
            answers.append((False, chain_not_found(chain_id)))
    return answers


def _next_nodes(conn: sqlite3.Connection, wanted: list[tuple[str, int]]) -> dict[str, JobRecord]:
    nodes: dict[str, JobRecord] = {}
    for chunk in _chunks(wanted):
        size, params = _padded(chunk)
        for chain_id, *job in conn.execute(_sql(_NODE_SQL, size, 2), params):
            if chain_id not in nodes:  # (a padding row finds its node again)
                nodes[chain_id] = JobRecord(*job)
    return nodes


def _known(conn: sqlite3.Connection, chain_ids: list[str]) -> set[str]:
    known: set[str] = set()
    for chunk in _chunks(chain_ids):
        size, params = _padded([(c,) for c in chunk])
        known.update(c for (c,) in conn.execute(_sql(_KNOWN_SQL, size, 1), params))
    return known


def _create_chains(conn: sqlite3.Connection, calls: list[tuple[Any, ...]]) -> list[_Result]:
    """`_sqlite_ops.create_chain` for distinct new chains: one insert per table."""
    records: list[ChainRecord] = [args[0] for args in calls]
    callbacks = [
        ops.callback_row(f"chain:{r.chain_id}", name, job)
        for r in records
        for name, job in r.callbacks
    ]
    if callbacks:
        conn.executemany(ops.INSERT_JOB_CALLBACK, callbacks)
    conn.executemany(ops.INSERT_CHAIN, [ops.new_chain_row(r) for r in records])
    # The nodes by which of their optional fields are unset: those are written as NULL in
    # the statement's text rather than bound (the sqlite3 module binds None the slow way).
    nodes: dict[tuple[bool, bool], list[tuple[Any, ...]]] = {}
    for r in records:
        for i, node in enumerate(r.nodes):
            row = (r.chain_id, i, *job_row(node))
            unset = (row[_TIMEOUT] is None, row[_LANE] is None)
            nodes.setdefault(unset, []).append(_BOUND[unset](row))
    for unset, rows in nodes.items():
        conn.executemany(_INSERT_NODE[unset], rows)
    return [(True, None)] * len(records)


def _insert_node(no_timeout: bool, no_lane: bool) -> str:
    marks = ["?"] * (2 + JOB_FIELDS)
    if no_timeout:
        marks[_TIMEOUT] = "NULL"
    if no_lane:
        marks[_LANE] = "NULL"
    return f"INSERT INTO chain_nodes (chain_id, idx, {JOB_COLUMNS}) VALUES ({', '.join(marks)})"


#: Where a node's optional fields sit in its row (after chain_id and idx).
_TIMEOUT = 2 + JOB_COLUMNS.split(", ").index("timeout")
_LANE = 2 + JOB_COLUMNS.split(", ").index("lane")
_INSERT_NODE = {(t, n): _insert_node(t, n) for t in (False, True) for n in (False, True)}


def _bound(no_timeout: bool, no_lane: bool) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """The values of a node's row that `_INSERT_NODE`'s statement binds."""
    unbound = {_TIMEOUT} if no_timeout else set()
    if no_lane:
        unbound.add(_LANE)
    return operator.itemgetter(*(k for k in range(2 + JOB_FIELDS) if k not in unbound))


_BOUND = {(t, n): _bound(t, n) for t in (False, True) for n in (False, True)}


def deliver_group(
    group: Sequence[_Call],
    results: Sequence[_Result],
    wrap: Callable[[sqlite3.Error], BaseException],
) -> None:
    """Answer each call of a committed group: its value, or its own error (wrapped)."""
    for (_, _, reply), (ok, value) in zip(group, results, strict=True):
        if ok:
            reply.succeed(value)
        elif isinstance(value, sqlite3.Error):
            reply.fail(wrap(value))
        else:
            reply.fail(value)
