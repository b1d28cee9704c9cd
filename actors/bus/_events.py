"""Lifecycle events: what the bus tells its observers, and when.

=====================  ==================================================================
kind                   emitted
=====================  ==================================================================
dispatch_started       `dispatch` (or a chain's / batch's ``dispatch()``) was called
dispatch_succeeded     ... and the job, chain or batch was accepted
dispatch_failed        ... and it was refused (``error``: why)
job_started            a worker begins an attempt (``attempt``: 1, 2, ...)
job_succeeded          the attempt succeeded (``duration``: seconds it took)
job_failed             the attempt failed (``error``); a retry may follow
chain_started          a chain was accepted; its first job is queued
chain_advanced         a chain's job succeeded and the next one is queued
chain_completed        a chain's last job succeeded
chain_failed           a chain's job failed after its retries; the chain stopped
batch_started          a batch was accepted; its jobs are queued
batch_progressed       a batch's job finished (successfully or not)
batch_completed        a batch finished and every job succeeded
batch_failed           a batch finished and at least one job failed (``error``: the first)
batch_cancelled        a batch cancelled by `cancel_batch` finished without failures
callback_started       a chain or batch callback begins (``job_type``: the callback's name)
callback_succeeded     ... and returned
callback_failed        ... and raised (``error``); the bus goes on
=====================  ==================================================================
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

import attrs


class EventKind(StrEnum):
    """The kinds of `Event`; the values are the snake_case names."""

    DISPATCH_STARTED = "dispatch_started"
    DISPATCH_SUCCEEDED = "dispatch_succeeded"
    DISPATCH_FAILED = "dispatch_failed"
    JOB_STARTED = "job_started"
    JOB_SUCCEEDED = "job_succeeded"
    JOB_FAILED = "job_failed"
    CHAIN_STARTED = "chain_started"
    CHAIN_ADVANCED = "chain_advanced"
    CHAIN_COMPLETED = "chain_completed"
    CHAIN_FAILED = "chain_failed"
    BATCH_STARTED = "batch_started"
    BATCH_PROGRESSED = "batch_progressed"
    BATCH_COMPLETED = "batch_completed"
    BATCH_FAILED = "batch_failed"
    BATCH_CANCELLED = "batch_cancelled"
    CALLBACK_STARTED = "callback_started"
    CALLBACK_SUCCEEDED = "callback_succeeded"
    CALLBACK_FAILED = "callback_failed"


def _utc_now() -> datetime:
    return datetime.now(UTC)


@attrs.frozen
class Event:
    """One lifecycle event. Fields that do not apply to a kind are ``None``."""

    kind: EventKind
    event_id: str
    dispatch_id: str | None = None
    job_id: str | None = None
    chain_id: str | None = None
    batch_id: str | None = None
    attempt: int | None = None
    job_type: str | None = None
    """The job's type; for ``callback_*`` events the callback's name (``"then"``, ...)."""
    queue: str | None = None
    duration: float | None = None
    """Seconds (Trio clock) the attempt, callback, dispatch, chain or batch took."""
    time: datetime = attrs.field(factory=_utc_now)
    """When it happened, by the bus's ``clock``."""
    error: BaseException | None = None
