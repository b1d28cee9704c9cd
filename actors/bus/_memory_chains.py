"""`MemoryStore`'s chains: its chain methods, and how it keeps a chain's nodes (as stored,
or as the first attempts the bus's admission built for them)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import attrs
import trio

from ._errors import NotFound
from ._fences import MemoryFences
from ._model import ChainState, JobRecord, LaneFence, QueuedJob
from ._rules import ChainRecord, ChainRow, ChainStep, chain_state


@attrs.define(eq=False)
class _MemoryChain:
    row: ChainRow
    stored: tuple[JobRecord, ...] | None
    """The nodes as stored; None while they are kept only as ``jobs`` (built when read)."""
    jobs: tuple[QueuedJob, ...] = ()
    """The nodes as their first attempts, when the bus's admission kept them so
    (`MemoryStore.start_queued_chain_now`), with their ``delays``."""
    delays: tuple[float, ...] = ()

    @property
    def nodes(self) -> tuple[JobRecord, ...]:
        if self.stored is None:
            self.stored = tuple(map(node_of, self.jobs, self.delays))
        return self.stored


def node_of(job: QueuedJob, delay: float) -> JobRecord:
    """A chain node's first attempt (a `QueuedJob`) and its delay as the node it was made
    from (a `JobRecord`)."""
    return JobRecord(
        job.job_id,
        job.job_type,
        job.payload,
        job.queue,
        delay,
        job.timeout,
        job.retry,
        job.backoff,
        job.lane,
    )


#: What the last step of a chain of each length answers (a `ChainStep` is a frozen value:
#: one per length serves every chain).
_COMPLETED: dict[int, ChainStep] = {}


class MemoryChains:
    """The chain methods of `MemoryStore` (which holds the dicts they use)."""

    _chains: dict[str, _MemoryChain]
    _job_callbacks: dict[str, dict[str, JobRecord]]
    _fences: MemoryFences

    async def create_chain(self, record: ChainRecord) -> None:
        await trio.lowlevel.checkpoint()
        self.create_chain_now(record)

    def create_chain_now(self, record: ChainRecord) -> None:
        """`create_chain` without yielding."""
        chain_id = record.chain_id
        row = self._new_row(
            chain_id,
            record.dispatch_id,
            record.queue,
            len(record.nodes),
            record.created_at,
            record.callbacks,
        )
        self._chains[chain_id] = _MemoryChain(row, record.nodes)

    def start_queued_chain_now(
        self,
        chain_id: str,
        dispatch_id: str,
        queue: str,
        jobs: tuple[QueuedJob, ...],
        delays: tuple[float, ...],
        created_at: datetime,
        callbacks: Sequence[tuple[str, JobRecord]] = (),
    ) -> None:
        """`create_chain_now` of nodes given as their first attempts (``jobs``, each due
        after its delay): the bus's admission on the memory broker builds those, and
        `advance_chain_now` hands them back (no `JobRecord` built unless one is read)."""
        row = self._new_row(chain_id, dispatch_id, queue, len(jobs), created_at, callbacks)
        self._chains[chain_id] = _MemoryChain(row, None, jobs, delays)

    def _new_row(
        self,
        chain_id: str,
        dispatch_id: str,
        queue: str,
        length: int,
        created_at: datetime,
        callbacks: Sequence[tuple[str, JobRecord]],
    ) -> ChainRow:
        """A new chain's row (its `Job` callbacks kept beside it)."""
        if callbacks:
            self._job_callbacks[f"chain:{chain_id}"] = dict(callbacks)
        # Positional: (chain id, dispatch id, queue, length, next index, completed, failed,
        # failure, created at, updated at).
        return ChainRow(
            chain_id, dispatch_id, queue, length, 0, False, False, None, created_at, created_at
        )

    async def get_chain(self, chain_id: str) -> ChainState:
        await trio.lowlevel.checkpoint()
        chain = self._chain(chain_id)
        return chain_state(chain.row, chain.nodes)

    async def record_chain_step(
        self,
        chain_id: str,
        index: int,
        failure: str | None,
        now: datetime,
        fence: LaneFence | None = None,
    ) -> ChainStep | None:
        await trio.lowlevel.checkpoint()
        return self.record_chain_step_now(chain_id, index, failure, now, fence)

    def record_chain_step_now(
        self,
        chain_id: str,
        index: int,
        failure: str | None,
        now: datetime,
        fence: LaneFence | None = None,
    ) -> ChainStep | None:
        """`record_chain_step` without yielding (the bus's coordinators use it: a dict
        update cannot block, and a scheduling point is a large share of a step's cost:
        measure with ``python -m bench.bus``)."""
        chain = self._chain(chain_id)
        if fence is not None:  # (a lane job's)
            self._fences.check(fence)
        row = chain.row
        if not row.step(index, failure, now):
            return None
        ended = row.completed or row.failed
        return ChainStep(
            next_index=row.next_index,
            completed=row.completed,
            failed=row.failed,
            next_node=None if ended else chain.nodes[row.next_index],
        )

    def advance_chain_now(
        self, chain_id: str, index: int, now: datetime
    ) -> tuple[QueuedJob, float] | ChainStep | None:
        """`record_chain_step_now` of node ``index``'s success (no lane fence), for the bus's
        workers: the next node as its first attempt and its delay if the chain goes on and
        was kept so (`start_queued_chain_now`), with no `ChainStep` built; else what
        `record_chain_step_now` returns."""
        chain = self._chains.get(chain_id) or self._chain(chain_id)  # (`NotFound` if gone)
        row = chain.row
        if not row.step(index, None, now):
            return None
        if row.completed:
            length = row.next_index
            step = _COMPLETED.get(length)
            if step is None:
                step = _COMPLETED[length] = ChainStep(length, True, False, None)
            return step
        jobs, at = chain.jobs, row.next_index
        if jobs:
            return jobs[at], chain.delays[at]
        # A chain stored otherwise (`create_chain`): as `record_chain_step_now` answers.
        return ChainStep(at, False, False, chain.nodes[at])

    async def fail_chain(self, chain_id: str, failure: str, now: datetime) -> bool:
        await trio.lowlevel.checkpoint()
        row = self._chain(chain_id).row
        return row.step(row.next_index, failure, now)

    def _chain(self, chain_id: str) -> _MemoryChain:
        try:
            return self._chains[chain_id]
        except KeyError:
            raise NotFound(f"no chain {chain_id!r} in this store (wrong id, or pruned)") from None
