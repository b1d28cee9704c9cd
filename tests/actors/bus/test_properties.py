"""Hypothesis: random mixes of chains and batches, failures, retries and cancels.

Whatever happens, no callback runs twice, no job's result is lost, and the states add up.
"""

from __future__ import annotations

import tempfile
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.bus import (
    BatchState,
    ChainState,
    Job,
    JobContext,
    MemoryStore,
    PostgresStore,
    SQLiteStore,
    Store,
    open_bus,
)
from tests.services import postgres_dsn

from .stores import drop_schema

MODES = st.sampled_from(["ok", "ok", "fail", "flaky"])


@attrs.frozen
class JobSpec:
    mode: str  # "ok", "fail" (every attempt), "flaky" (fails attempt 1 only)
    duration: int
    retries: int


@attrs.frozen
class GroupSpec:
    kind: str  # "chain" or "batch"
    jobs: tuple[JobSpec, ...]
    allow_failures: bool
    cancel_after: float | None
    progress: bool = True
    """A batch with a progress callback (without one, its workers count successes that do
    not end it themselves: `Batches.settle_now`)."""


job_specs = st.builds(JobSpec, mode=MODES, duration=st.integers(0, 3), retries=st.integers(0, 2))
groups = st.builds(
    GroupSpec,
    kind=st.sampled_from(["chain", "batch"]),
    jobs=st.lists(job_specs, min_size=1, max_size=6).map(tuple),
    allow_failures=st.booleans(),
    cancel_after=st.none() | st.sampled_from([0.0, 0.5, 1.0, 2.5]),
    progress=st.booleans(),
)


@attrs.define
class Tally:
    """What the test saw happen, to check the bus's own accounts against."""

    callbacks: Counter[tuple[str, str]] = attrs.field(factory=Counter)
    progress: dict[str, list[int]] = attrs.field(factory=lambda: defaultdict(list))
    # job id -> (owner id, last attempt, raised on it, retries allowed)
    runs: dict[str, tuple[str, int, bool, int]] = attrs.field(factory=dict)
    chain_order: dict[str, list[int]] = attrs.field(factory=lambda: defaultdict(list))


async def scenario(plan: list[GroupSpec], store: Store | None, real_time: bool) -> None:
    tally = Tally()
    unit = 0.001 if real_time else 1.0

    async def work(ctx: JobContext) -> None:
        mode, duration, retries, index = ctx.payload
        owner = ctx.batch_id or ctx.chain_id
        assert owner is not None
        if ctx.chain_id is not None and ctx.attempt == 1:
            tally.chain_order[owner].append(index)
        raises = mode == "fail" or (mode == "flaky" and ctx.attempt == 1)
        tally.runs[ctx.job_id] = (owner, ctx.attempt, raises, retries)
        await trio.sleep(duration * unit)
        if raises:
            raise ValueError(f"{mode} job {index}")

    def callback(owner: str, name: str) -> Any:
        def record(state: Any, error: BaseException | None = None) -> None:
            tally.callbacks[(owner, name)] += 1
            if name == "progress":
                tally.progress[owner].append(state.processed)

        return record

    batches: dict[str, GroupSpec] = {}
    chains: dict[str, GroupSpec] = {}
    async with open_bus(store=store, queues={"default": 3}) as bus:
        bus.register("work", work)
        async with trio.open_nursery() as nursery:
            for n, group in enumerate(plan):
                jobs = [
                    Job("work", [spec.mode, spec.duration, spec.retries, i])
                    .retry(spec.retries)
                    .backoff(unit)
                    for i, spec in enumerate(group.jobs)
                ]
                owner = f"g{n}"
                if group.kind == "chain":
                    chain_id = await (
                        bus.chain(*jobs)
                        .catch(callback(owner, "catch"))
                        .finally_(callback(owner, "finally"))
                        .dispatch()
                    )
                    chains[chain_id] = group
                    continue
                builder = (
                    bus.batch(*jobs)
                    .then(callback(owner, "then"))
                    .catch(callback(owner, "catch"))
                    .finally_(callback(owner, "finally"))
                )
                if group.progress:
                    builder = builder.progress(callback(owner, "progress"))
                if group.allow_failures:
                    builder = builder.allow_failures()
                batch_id = await builder.dispatch()
                batches[batch_id] = group
                if group.cancel_after is not None:

                    async def cancel(batch_id: str, after: float) -> None:
                        await trio.sleep(after * unit)
                        await bus.cancel_batch(batch_id)

                    nursery.start_soon(cancel, batch_id, group.cancel_after)
        await bus.wait_idle()
        assert bus.stats().outstanding == 0
        batch_states = {b: await bus.find_batch(b) for b in batches}
        chain_states = {c: await bus.find_chain(c) for c in chains}

    owner_names = _owner_names(plan, batches, chains)
    for batch_id, group in batches.items():
        check_batch(batch_states[batch_id], group, owner_names[batch_id], batch_id, tally)
    assert len(chain_states) == len(chains)
    for chain_id, group in chains.items():
        check_chain(chain_states[chain_id], group, owner_names[chain_id], chain_id, tally)


def _owner_names(
    plan: list[GroupSpec], batches: dict[str, GroupSpec], chains: dict[str, GroupSpec]
) -> dict[str, str]:
    # Groups were dispatched in plan order; each dict keeps its own share of that order.
    result: dict[str, str] = {}
    batch_ids, chain_ids = iter(batches), iter(chains)
    for n, group in enumerate(plan):
        result[next(batch_ids) if group.kind == "batch" else next(chain_ids)] = f"g{n}"
    return result


def final_outcomes(tally: Tally, owner_id: str) -> tuple[int, int]:
    """(finished, failed) jobs of ``owner_id`` as the handler saw them."""
    finished = failed = 0
    for owner, attempt, raised, retries in tally.runs.values():
        if owner != owner_id:
            continue
        if not raised:
            finished += 1
        elif attempt == retries + 1:
            finished += 1
            failed += 1
    return finished, failed


def check_batch(
    state: BatchState, group: GroupSpec, owner: str, batch_id: str, tally: Tally
) -> None:
    calls = tally.callbacks
    finished, failed = final_outcomes(tally, batch_id)
    assert state.completed
    assert state.pending == 0
    assert state.total == len(group.jobs)
    # No job's result is lost: the bus counted exactly what the handlers finished.
    assert (state.processed, state.failed) == (finished, failed)
    assert state.failed <= state.processed <= state.total
    not_run = state.total - state.processed
    assert not_run == 0 or state.cancelled
    if group.cancel_after is None and (group.allow_failures or not state.failed):
        assert state.processed == state.total
    # Callbacks: each at most once; finally exactly once; then only on full success.
    assert calls[(owner, "finally")] == 1
    succeeded = state.failed == 0 and state.processed == state.total
    assert calls[(owner, "then")] == (1 if succeeded else 0)
    assert calls[(owner, "catch")] == (1 if state.failed else 0)
    assert tally.progress[owner] == (list(range(1, state.processed + 1)) if group.progress else [])


def check_chain(
    chain: ChainState, group: GroupSpec, owner: str, chain_id: str, tally: Tally
) -> None:
    calls = tally.callbacks
    assert chain.completed != chain.failed
    ran = tally.chain_order[chain_id]
    assert ran == list(range(len(ran)))  # in order, each node once
    assert len(ran) == chain.next_index + (1 if chain.failed else 0)
    assert calls[(owner, "finally")] == 1
    assert calls[(owner, "catch")] == (1 if chain.failed else 0)
    expected_fail = next(
        (
            i
            for i, spec in enumerate(group.jobs)
            if spec.mode == "fail" or (spec.mode == "flaky" and spec.retries == 0)
        ),
        None,
    )
    if expected_fail is None:
        assert chain.completed
        assert chain.next_index == len(group.jobs)
    else:
        assert chain.failed
        assert chain.next_index == expected_fail


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(plan=st.lists(groups, min_size=1, max_size=5))
def test_random_mixes_on_the_memory_store(plan: list[GroupSpec]) -> None:
    trio.run(scenario, plan, None, False, clock=trio.testing.MockClock(autojump_threshold=0))


@settings(deadline=None, max_examples=6, suppress_health_check=[HealthCheck.too_slow])
@given(plan=st.lists(groups, min_size=1, max_size=3))
def test_random_mixes_on_sqlite(plan: list[GroupSpec]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        trio.run(scenario, plan, SQLiteStore(Path(tmp) / "bus.db"), True)


@settings(deadline=None, max_examples=6, suppress_health_check=[HealthCheck.too_slow])
@given(plan=st.lists(groups, min_size=1, max_size=3))
def test_random_mixes_on_postgres(plan: list[GroupSpec]) -> None:
    dsn = postgres_dsn()
    schema = f"test_{uuid.uuid4().hex[:12]}"
    try:
        trio.run(scenario, plan, PostgresStore(dsn, schema=schema), True)
    finally:
        drop_schema(dsn, schema)


class FlakyStore(MemoryStore):
    """Every ``fail_every``-th write fails before it commits (a locked file, a full disk)."""

    def __init__(self, fail_every: int) -> None:
        super().__init__()
        self.fail_every = fail_every
        self.calls = 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.calls % self.fail_every == 0:
            raise OSError("database or disk is full")

    async def record_batch(self, *args: Any, **kwargs: Any) -> Any:
        self._maybe_fail()
        return await super().record_batch(*args, **kwargs)

    async def record_chain_step(self, *args: Any) -> Any:
        self._maybe_fail()
        return await super().record_chain_step(*args)

    async def claim_callback(self, *args: Any) -> bool:
        self._maybe_fail()
        return await super().claim_callback(*args)

    async def record_failed(self, *args: Any) -> None:
        self._maybe_fail()
        await super().record_failed(*args)


@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(plan=st.lists(groups, min_size=1, max_size=4), fail_every=st.integers(2, 5))
def test_random_mixes_with_failing_store_writes(plan: list[GroupSpec], fail_every: int) -> None:
    """Outcome writes that fail are retried: every account still adds up, no callback runs
    twice or is lost."""
    store = FlakyStore(fail_every)
    trio.run(scenario, plan, store, False, clock=trio.testing.MockClock(autojump_threshold=0))
