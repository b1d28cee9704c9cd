"""Shared test helpers."""

from __future__ import annotations

import trio


def task_count() -> int:
    """How many tasks run under the root task right now (the test's own included)."""

    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(
            count(child) for nursery in task.child_nurseries for child in nursery.child_tasks
        )

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return count(root)


class Gauge:
    """Counts what runs at once (``with gauge:`` around it) and remembers the most."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0

    def __enter__(self) -> None:
        self.now += 1
        self.most = max(self.most, self.now)

    def __exit__(self, *exc: object) -> None:
        self.now -= 1
