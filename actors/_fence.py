"""`current_fence`: the fencing token of the cluster lane job running in this task.

A cluster `Lanes` job holds its key under a lease; every new lease of a key gets a larger
token (an epoch), so a resource that remembers the largest token it accepted can refuse a
writer whose lease lapsed: ``UPDATE account SET balance = ?, fence = ? WHERE id = ? AND
fence <= ?`` changes nothing for a stale holder (``<=``: one holder may write twice).

The tokens live in a context variable set around the job in its caller's task (the job is
that caller's work, DESIGN rule 6): one entry per running job, innermost last, each the
``(key, token)`` pairs that job holds.
"""

from __future__ import annotations

import contextvars

Held = tuple[tuple[str, int], ...]

_JOBS: contextvars.ContextVar[tuple[Held, ...]] = contextvars.ContextVar(
    "actors_cluster_fences", default=()
)


def current_fence(key: str | None = None) -> int:
    """The fencing token of the cluster lane job running now (of ``key``, if given).

    Without ``key``: the innermost job's (a `Lanes.run_multi` job holding several keys must
    name one). Raises `LookupError` outside a job of ``open_lanes(cluster=...)``, or for a
    key the running jobs do not hold.
    """
    jobs = _JOBS.get()
    if not jobs:
        raise LookupError(
            "current_fence() is only available inside a job run by cluster Lanes "
            '(actors.open_lanes(cluster="redis://...")); a local Lanes job has no lease '
            "and no fencing token"
        )
    if key is None:
        innermost = jobs[-1]
        if len(innermost) > 1:
            raise LookupError(
                "this job holds several keys (run_multi): call current_fence(key) with one "
                f"of {[name for name, _ in innermost]}"
            )
        return innermost[0][1]
    for held in reversed(jobs):
        for name, fence in held:
            if name == key:
                return fence
    raise LookupError(
        f"no cluster lane job running in this task holds {key!r}; they hold "
        f"{sorted({name for held in jobs for name, _ in held})}"
    )


def push(held: Held) -> contextvars.Token[tuple[Held, ...]]:
    """Set a job's tokens around it; `pop` with what this returns when it ends."""
    return _JOBS.set((*_JOBS.get(), held))


def pop(token: contextvars.Token[tuple[Held, ...]]) -> None:
    _JOBS.reset(token)
