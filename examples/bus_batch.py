"""Bus, step 4 of 5: a batch runs jobs in parallel and reports progress.

A batch's coordinator (a keyed actor) counts its jobs: `progress` after each one, `then`
once if all succeeded, `catch` once at the first failure, `finally_` once at the end. With
`allow_failures()` the other jobs keep running after a failure; without it, the jobs not
started yet are cancelled.

Run: python -m examples.bus_batch
"""

from __future__ import annotations

import trio
import trio.testing

from actors.bus import BatchState, Job, JobContext, open_bus


def progress(state: BatchState) -> None:
    bar = "#" * state.processed + "." * (state.total - state.processed)
    print(f"  [{bar}] {state.processed}/{state.total} done, {state.failed} failed")


async def main() -> None:
    async with open_bus(queues={"default": 3}) as bus:

        @bus.handler("thumbs:make")
        async def make_thumbnail(ctx: JobContext) -> None:
            await trio.sleep(ctx.payload["size"] / 100)
            if ctx.payload["name"].endswith(".bmp"):
                raise ValueError(f"cannot read {ctx.payload['name']}")

        files = [("a.png", 120), ("b.jpg", 80), ("c.bmp", 50), ("d.png", 300), ("e.jpg", 90)]
        jobs = [Job("thumbs:make", {"name": n, "size": s}) for n, s in files]

        print("with allow_failures():")
        batch_id = await (
            bus.batch(*jobs)
            .name("thumbnails")
            .allow_failures()
            .progress(progress)
            .catch(lambda state, error: print(f"  catch: {error}"))
            .then(lambda state: print("  then: every thumbnail made"))
            .finally_(lambda state: print(f"  finally: {state.processed} processed"))
            .dispatch()
        )
        await bus.wait_idle()
        print("  find_batch ->", (await bus.find_batch(batch_id)).failed, "failed")

        print("without (first failure cancels the rest):")
        await (
            bus.batch(*jobs)
            .progress(progress)
            .finally_(lambda s: print(f"  finally: cancelled, {s.total - s.processed} not run"))
            .dispatch()
        )


if __name__ == "__main__":
    # The simulated work runs on Trio's mock clock (autojump): instant and repeatable.
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
