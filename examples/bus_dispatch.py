"""Bus, step 1 of 5: declare a handler, dispatch jobs, wait until they are done.

A job is a type and a JSON payload. Handlers are declared on a `Handlers` at import time (a
worker process and a `FakeBus` in tests read the same one). The bus's queue workers run the
jobs: here three workers of the "default" queue, so the five jobs run three at a time. An
attrs payload travels as JSON and comes back with `ctx.bind`. `delay` holds a job back on
Trio's clock.

Run: python -m examples.bus_dispatch
"""

from __future__ import annotations

import attrs
import trio
import trio.testing

from actors.bus import Handlers, Job, JobContext, open_bus


@attrs.frozen
class Welcome:
    to: str
    name: str


handlers = Handlers()


@handlers.handler("emails:welcome")
async def send_welcome(ctx: JobContext) -> None:
    mail = ctx.bind(Welcome)
    await trio.sleep(1)  # pretend to talk to a mail server
    print(f"t={trio.current_time():.0f}s  welcome mail to {mail.to} ({mail.name})")


async def main() -> None:
    async with open_bus(handlers=handlers, queues={"default": 3}) as bus:
        for name in ("ada", "bob", "cy", "dee", "eve"):
            result = await bus.dispatch(Job("emails:welcome", Welcome(f"{name}@example.com", name)))
        print("last dispatch id:", result.dispatch_id.split("-")[0] + "-...")

        await bus.dispatch(Job("emails:welcome", Welcome("late@example.com", "late")).delay(10))
        await bus.wait_idle()
        print(f"all done at t={trio.current_time():.0f}s")


if __name__ == "__main__":
    # Delays and the fake mail server's sleep run on Trio's mock clock (autojump): the
    # example takes simulated seconds, but finishes in a blink.
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
