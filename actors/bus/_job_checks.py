"""The checks every dispatch passes (and `FakeBus`'s too): a job against a bus's job types
and queues, and the jobs of a `dispatch_many` call, refused as a whole with a clear error."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TypeVar

from ._errors import UnknownJobType
from ._model import Job, encode_payload

T = TypeVar("T")


def check_job(
    job: Job, job_types: Collection[str] | None, queues: Collection[str] | None, queue: str
) -> str:
    """Refuse what a bus with these job types and queues would refuse (also `FakeBus`);
    return the payload as JSON text."""
    if job_types is not None and job.type not in job_types:
        raise UnknownJobType(
            f"no handler is registered for job type {job.type!r}; register one with "
            f"bus.register({job.type!r}, handler) or @handlers.handler({job.type!r}) "
            f"(registered: {sorted(job_types)})"
        )
    if queues is not None and queue not in queues:
        raise ValueError(
            f"job {job.type!r} is for queue {queue!r}, which this bus does not have; "
            f"open_bus(queues=...) has {list(queues)}"
        )
    return encode_payload(job.type, job.payload)


def check_many(jobs: object) -> list[Job]:
    """The jobs of a `dispatch_many` call (also `FakeBus`'s): an iterable of plain `Job`\\ s,
    none with ``unique_for``; anything else refuses the whole call."""
    if isinstance(jobs, Job | str | bytes | Mapping) or not isinstance(jobs, Iterable):
        raise TypeError(
            "dispatch_many() takes an iterable of actors.bus.Job (e.g. a list), got "
            f"{type(jobs).__name__}; for one job use dispatch(job)"
        )
    found = list(jobs)
    for index, job in enumerate(found):
        if not isinstance(job, Job):
            raise TypeError(
                f"dispatch_many(): item {index} is a {type(job).__name__}, not an "
                "actors.bus.Job; nothing was dispatched"
            )
        if job.options.unique_for is not None:
            raise ValueError(
                f"dispatch_many(): job {index} ({job.type!r}) has unique_for, which applies "
                "to bus.dispatch() only (its claim is per job): dispatch it on its own; "
                "nothing was dispatched"
            )
    return found


def check_all(jobs: Sequence[Job], check: Callable[[Job], T]) -> list[T]:
    """``check(job)`` for each job of a `dispatch_many`; the first refusal refuses the whole
    call, its error naming the job."""
    out: list[T] = []
    for index, job in enumerate(jobs):
        try:
            out.append(check(job))
        except (TypeError, ValueError, UnknownJobType) as exc:
            raise type(exc)(
                f"dispatch_many(): job {index} of {len(jobs)} refused: {exc}; "
                "nothing was dispatched"
            ) from None
    return out
