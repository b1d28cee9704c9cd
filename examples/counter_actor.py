"""Step 1 of the teaching series: an actor is a task that owns its state.

`tell` sends a message and goes on; `ask` sends one and waits for the reply. The counter's
`total` needs no lock: only the actor's own task touches it, one message at a time.

Run: python -m examples.counter_actor
"""

from __future__ import annotations

import trio

import actors


class Counter(actors.Actor[int, int]):
    def __init__(self) -> None:
        self.total = 0

    async def receive(self, message: int) -> int:
        if message < 0:
            raise ValueError(f"a counter only goes up, not by {message}")
        self.total += message
        return self.total


async def main() -> None:
    async with trio.open_nursery() as nursery:
        counter = await actors.spawn(nursery, Counter(), name="counter")

        # a hundred tasks tell the counter at once; the mailbox keeps them in line
        async with trio.open_nursery() as senders:
            for _ in range(100):
                senders.start_soon(counter.tell, 1)

        print("after 100 tells, ask(0) ->", await counter.ask(0))
        try:
            await counter.ask(-1)
        except ValueError as exc:
            print("ask(-1) raised at the caller:", exc)
        print("the actor goes on: ask(5) ->", await counter.ask(5))
        await counter.stop()


if __name__ == "__main__":
    trio.run(main)
