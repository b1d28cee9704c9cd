"""Bus, step 5 of 5: middleware wraps every attempt, the first in the list outermost.

A middleware is ``async def mw(ctx, call_next)``. Built in: `SkipWhen` (skip, counts as done),
`FailOnError` (no retries for matched errors), `RateLimit` (jobs over the limit go back on the
queue until a slot frees up) and `WithoutOverlapping` (one job per key at a time).

Run: python -m examples.bus_middleware
"""

from __future__ import annotations

import trio
import trio.testing

from actors.bus import (
    CallNext,
    FailOnError,
    Job,
    JobContext,
    MemoryRateLimiter,
    Middleware,
    RateLimit,
    SkipWhen,
    open_bus,
)


async def log(ctx: JobContext, call_next: CallNext) -> None:
    """A custom middleware: print how each attempt that gets this far ends."""
    to = ctx.payload["to"]
    try:
        await call_next(ctx)
    except Exception as exc:
        print(f"t={trio.current_time():4.1f}s  {to:<14} attempt {ctx.attempt} failed: {exc}")
        raise
    print(f"t={trio.current_time():4.1f}s  {to:<14} sent")


def is_test_user(ctx: JobContext) -> bool:
    return str(ctx.payload.get("to", "")).endswith("@test.invalid")


def is_permanent(exc: BaseException) -> bool:
    return isinstance(exc, PermissionError)


async def main() -> None:
    middleware: list[Middleware] = [
        SkipWhen(is_test_user),  # outermost: skipped jobs never reach the others
        RateLimit("smtp", MemoryRateLimiter(limit=2, period=1.0)),  # over the limit: back later
        log,
        FailOnError(is_permanent),  # innermost: sees the handler's error first
    ]
    attempts: dict[str, int] = {}
    async with open_bus(middleware=middleware) as bus:

        @bus.handler("emails:send")
        async def send(ctx: JobContext) -> None:
            to = ctx.payload["to"]
            attempts[to] = ctx.attempt
            if to.startswith("blocked"):
                raise PermissionError(f"{to} has unsubscribed")
            await trio.sleep(0.1)

        for to in ("a@x.org", "b@x.org", "c@x.org", "d@x.org", "qa@test.invalid", "blocked@x.org"):
            await bus.dispatch(Job("emails:send", {"to": to}).retry(3))
        await bus.wait_idle()
    print("attempts:", dict(sorted(attempts.items())))
    print("qa@test.invalid was skipped; blocked@x.org was not retried; 2 mails a second")


if __name__ == "__main__":
    # The rate limiter's clock is Trio's mock clock (autojump): seconds pass instantly.
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
