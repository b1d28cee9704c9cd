"""Bus, step 2 of 5: retries with backoff, timeouts, and what observers see.

`retry(3).backoff(2)` allows three more attempts, two seconds apart; `ctx.attempt` counts
them. `timeout(5)` cancels an attempt that hangs and fails it with `TimeoutError`. An
observer gets an `Event` for each step; here it prints the failures.

Run: python -m examples.bus_retry
"""

from __future__ import annotations

import trio
import trio.testing

from actors.bus import Event, EventKind, Job, JobContext, open_bus


def show_failures(event: Event) -> None:
    if event.kind is EventKind.JOB_FAILED:
        print(
            f"t={trio.current_time():4.1f}s  {event.job_type} attempt {event.attempt} failed: "
            f"{type(event.error).__name__}: {event.error}"
        )


async def main() -> None:
    async with open_bus(observers=[show_failures]) as bus:

        @bus.handler("payments:charge")
        async def charge(ctx: JobContext) -> None:
            if ctx.attempt < 3:
                raise ConnectionError("gateway busy")
            print(f"t={trio.current_time():4.1f}s  charged {ctx.payload['cents']} cents")

        @bus.handler("reports:slow")
        async def slow(ctx: JobContext) -> None:
            await trio.sleep(60)  # hangs, every time

        await bus.dispatch(Job("payments:charge", {"cents": 1250}).retry(3).backoff(2))
        await bus.dispatch(Job("reports:slow").timeout(5).retry(1).backoff(1))
        await bus.wait_idle()
    print(f"done at t={trio.current_time():.1f}s")


if __name__ == "__main__":
    # The backoffs and timeouts run on Trio's mock clock (autojump): instant, yet exact.
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
