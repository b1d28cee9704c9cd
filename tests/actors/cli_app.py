"""The handlers `trio-lanes worker` runs in the CLI tests (TARGET tests.actors.cli_app:handlers).

Each run appends a line ``<worker> <event> <n> <delivery>`` to the file named by
``$CLI_TEST_LOG``, so a test in another process sees which worker ran (or started) what.
"""

from __future__ import annotations

import os

import trio

from actors.bus import Handlers, JobContext

handlers = Handlers()
NOT_HANDLERS = {"a": "dict"}


def _append(line: str) -> None:
    with open(os.environ["CLI_TEST_LOG"], "a") as log:
        log.write(line + "\n")


async def _note(event: str, ctx: JobContext) -> None:
    worker = os.environ.get("CLI_TEST_WORKER", "?")
    await trio.to_thread.run_sync(_append, f"{worker} {event} {ctx.payload['n']} {ctx.delivery}")


@handlers.handler("cli:record")
async def record(ctx: JobContext) -> None:
    await _note("done", ctx)


@handlers.handler("cli:slow")
async def slow(ctx: JobContext) -> None:
    """Sleeps ``seconds`` on its first delivery, ``then`` (default the same) on later ones."""
    await _note("start", ctx)
    first = ctx.payload["seconds"]
    await trio.sleep(first if ctx.delivery == 1 else ctx.payload.get("then", first))
    await _note("done", ctx)


@handlers.handler("cli:fail")
async def fail(ctx: JobContext) -> None:
    raise ValueError(f"job {ctx.payload['n']} fails")
