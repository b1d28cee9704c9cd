"""Bus, step 3 of 5: a chain runs jobs one after another and stops at the first failure.

Each chain has a coordinator, a keyed actor: workers tell it "job done" and only it moves the
chain on, so there is one writer per chain and no lock. `catch` runs once when a job fails
(after its retries), `finally_` once at the end, whatever happened.

Run: python -m examples.bus_chain
"""

from __future__ import annotations

import trio
import trio.testing

from actors.bus import ChainState, Job, JobContext, open_bus

STOCK = {"book": 3, "lamp": 0}


async def main() -> None:
    async with open_bus() as bus:

        @bus.handler("orders:reserve")
        async def reserve(ctx: JobContext) -> None:
            item = ctx.payload["item"]
            if STOCK[item] == 0:
                raise LookupError(f"{item} is out of stock")
            STOCK[item] -= 1
            print(f"  reserved a {item}")

        @bus.handler("orders:charge")
        async def charge(ctx: JobContext) -> None:
            await trio.sleep(0.5)
            print(f"  charged order {ctx.payload['order']}")

        @bus.handler("orders:ship")
        async def ship(ctx: JobContext) -> None:
            print(f"  shipped order {ctx.payload['order']}")

        def on_failure(state: ChainState, error: BaseException) -> None:
            print(f"  catch: stopped at step {state.next_index + 1}: {error}")

        def at_end(state: ChainState) -> None:
            outcome = "completed" if state.completed else "failed"
            print(
                f"  finally: chain {outcome} after {state.next_index} of {len(state.nodes)} steps"
            )

        for order, item in ((1, "book"), (2, "lamp")):
            print(f"order {order} ({item}):")
            await (
                bus.chain(
                    Job("orders:reserve", {"order": order, "item": item}),
                    Job("orders:charge", {"order": order}).retry(2),
                    Job("orders:ship", {"order": order}),
                )
                .catch(on_failure)
                .finally_(at_end)
                .dispatch()
            )
            await bus.wait_idle()


if __name__ == "__main__":
    # The fake payment delay runs on Trio's mock clock (autojump), so this ends at once.
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
