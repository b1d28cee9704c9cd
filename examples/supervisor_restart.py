"""A supervisor restarting a crashing worker.

Run it with ``python -m examples.supervisor_restart``. It takes about a quarter of a second.

Part 1: a steady worker and a flaky one run under a ``one_for_one`` supervisor. The flaky
worker crashes on every third job; the supervisor restarts it (and only it), spacing the
restarts with an exponential backoff. The crash never reaches ``main``.

Part 2: a worker that crashes as soon as it starts. After ``max_restarts`` restarts within
``max_seconds`` the supervisor gives up: it stops its children (``steady`` returns as soon
as it sees `supervisors.shutting_down`) and raises `supervisors.RestartIntensityExceeded`,
whose ``__cause__`` is the worker's last error. Had this supervisor been a child of another
supervisor, that parent would now restart it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import trio
import trio.lowlevel

import supervisors
from examples.demo_logging import OneLineFormatter

TICK = 0.01  # seconds per job: real time, kept tiny so the example finishes quickly


async def steady(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """A worker that keeps working until the supervisor asks it to stop, then returns.

    Calling `supervisors.shutting_down` traps the stop (as ``trap_exit`` in OTP): a stop then
    sets the event and gives the child its ``shutdown`` grace (5 s by default) before
    cancelling it; watching the event, it finishes its job in hand and returns within a tick.
    A child that never calls it is cancelled at once when it is stopped.
    """
    stopping = supervisors.shutting_down()
    task_status.started()
    jobs = 0
    while not stopping.is_set():
        await trio.sleep(TICK)  # a job: finished even if the stop comes meanwhile
        jobs += 1
    print(f"  steady saw shutting_down() after job {jobs} and returned")


async def flaky(
    jobs_done: list[int], *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Handles jobs; every third job makes it crash."""
    task_status.started("flaky is ready")  # start_child returns this value
    while True:
        await trio.sleep(TICK)
        jobs_done.append(len(jobs_done) + 1)
        if len(jobs_done) % 3 == 0:
            raise RuntimeError(f"job {len(jobs_done)} went wrong")


async def hopeless(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Crashes right after it starts, every time."""
    task_status.started()
    await trio.lowlevel.checkpoint()
    raise ConnectionError("database unreachable")


def printer(started_at: float) -> Callable[[supervisors.SupervisorEvent], None]:
    """An ``on_event`` observer printing what happens, with the time since ``started_at``."""

    def report(event: supervisors.SupervisorEvent) -> None:
        error = f" ({type(event.error).__name__}: {event.error})" if event.error else ""
        print(
            f"  {event.time - started_at:5.3f}s  {event.supervisor}/{event.child_id}: "
            f"{event.kind} (restarts={event.restarts}){error}"
        )

    return report


async def part_one() -> None:
    print("Part 1: one_for_one restarts only the worker that crashed")
    jobs_done: list[int] = []
    report = printer(trio.current_time())
    async with supervisors.open_supervisor(
        "one_for_one", max_restarts=5, max_seconds=1.0, name="shop", on_event=report
    ) as sup:
        await sup.start_child("steady", steady)
        backoff = supervisors.RestartBackoff(min=TICK, max=4 * TICK, jitter=0)
        # flaky never calls shutting_down(): a stop cancels it at once.
        started = await sup.start_child("flaky", flaky, jobs_done, backoff=backoff)
        print("  start_child returned:", started)
        await trio.sleep(12 * TICK)
        for info in sup.which_children():
            print(f"  {info.id}: running={info.running}, restarts={info.restarts}")
        await sup.shutdown()  # permanent children keep the block open until shutdown()
    print(f"  flaky handled {len(jobs_done)} jobs in all; the crashes stayed inside the supervisor")


async def part_two() -> None:
    print("Part 2: too many restarts too quickly, and the supervisor gives up")
    report = printer(trio.current_time())
    try:
        async with supervisors.open_supervisor(
            max_restarts=2, max_seconds=1.0, name="db", on_event=report
        ) as sup:
            await sup.start_child("steady", steady)
            await sup.start_child("hopeless", hopeless)
            await trio.sleep_forever()  # cancelled when the supervisor gives up
    except supervisors.RestartIntensityExceeded as exc:
        print(f"  raised RestartIntensityExceeded: {exc}")
        print(f"  caused by: {exc.__cause__!r}")


async def main() -> None:
    # Each crash is also logged on the "supervisors" logger as a one-line crash report (with
    # the traceback attached). Show those lines here, interleaved with our observer's, and
    # leave the tracebacks out: the crashes are the example's point, not bugs.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(OneLineFormatter())
    logging.getLogger("supervisors").addHandler(handler)
    try:
        await part_one()
        await part_two()
    finally:
        logging.getLogger("supervisors").removeHandler(handler)


if __name__ == "__main__":
    trio.run(main)
