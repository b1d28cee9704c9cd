"""The stores' fence check on a lane job's outcome: a holder whose lease lapsed records nothing.

A lane job's outcome (a chain step, a batch job's outcome, a failed-job record) is recorded
with its delivery's `LaneFence`: the queue, the lane, and the epoch the broker gave that
lease of the lane (`Delivery.fence`). Inside the same transaction as the write, the store
keeps per lane the highest fence it has recorded with and refuses a lower one: once a newer
holder of the lane has recorded anything, a worker that was paused past its lease (a GC
pause, a frozen VM, SIGSTOP) and resumes can record nothing more for that lane. A chain step
or a failed-job record is refused with `LeaseLost` (nothing written); a stale batch outcome
is left out of the batch's count. The broker refuses that worker's late ack as well; a
holder that resumes before its successor records anything is held to at most once per job
by the outcome's job id (every outcome counts once).
"""

from __future__ import annotations

from typing import Any

from ._broker import Delivery
from ._errors import LeaseLost
from ._model import LaneFence


def fence_of(delivery: Delivery) -> LaneFence | None:
    """The fence a lane delivery records with; None for a plain job or an unfenced broker."""
    job = delivery.job
    if job.lane is None or not delivery.fence:
        return None
    return LaneFence(job.queue, job.lane, delivery.fence)


def refused(fence: LaneFence) -> LeaseLost:
    return LeaseLost(
        f"the lease on lane {fence.lane!r} of queue {fence.queue!r} lapsed: a newer holder "
        f"(fence above {fence.fence}) has recorded for it, so this outcome is not recorded"
    )


def advance(conn: Any, fence: LaneFence | None, mark: str) -> bool:
    """In a SQL store's transaction: True (and the lane's fence moved up to ``fence``)
    unless the store has recorded this lane with a higher fence. ``mark``: the driver's
    placeholder."""
    if fence is None:
        return True
    found = conn.execute(
        f"INSERT INTO lane_fences (queue, lane, fence) VALUES ({mark}, {mark}, {mark}) "
        "ON CONFLICT (queue, lane) DO UPDATE SET fence = excluded.fence "
        "WHERE lane_fences.fence <= excluded.fence RETURNING fence",
        (fence.queue, fence.lane, fence.fence),
    ).fetchone()
    return found is not None


def check(conn: Any, fence: LaneFence | None, mark: str) -> None:
    """`advance`, or `LeaseLost` (the caller's transaction then rolls back)."""
    if not advance(conn, fence, mark):
        assert fence is not None
        raise refused(fence)


class MemoryFences:
    """`MemoryStore`'s fences: the highest recorded per (queue, lane)."""

    def __init__(self) -> None:
        self._fences: dict[tuple[str, str], int] = {}

    def advance(self, fence: LaneFence | None) -> bool:
        if fence is None:
            return True
        key = (fence.queue, fence.lane)
        if self._fences.get(key, 0) > fence.fence:
            return False
        self._fences[key] = fence.fence
        return True

    def check(self, fence: LaneFence | None) -> None:
        if not self.advance(fence):
            assert fence is not None
            raise refused(fence)
