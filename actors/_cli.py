"""``trio-lanes`` (also ``python -m actors``): run bus workers and look at a bus's state.

::

    trio-lanes worker myapp.jobs:handlers --store sqlite:///jobs.db \\
        --broker sqlite:///jobs.db --queues default=8,emails=2 --grace 30
    trio-lanes status myapp.jobs:handlers --store ... --broker ... [--json]
    trio-lanes failed list --store ... [--json]
    trio-lanes failed retry JOB_ID --store ... --broker ... [--json]
    trio-lanes batches --store ... [--json]

``--store`` and ``--broker`` default to ``$TRIO_LANES_STORE`` and ``$TRIO_LANES_BROKER``.
Every command opens a bus on them (a worker with ``workers=True``, the others with
``workers=False``), so it reads what every process sharing them wrote. argparse (the
standard library) is enough here: a handful of subcommands with plain options.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlencode

import attrs
import trio

from ._cli_output import Table, workers_table, write_json, write_tables
from ._cli_worker import StoppingBroker
from .bus import (
    Broker,
    Bus,
    Handlers,
    JobContext,
    MemoryBroker,
    NotFound,
    Store,
    StoreError,
    open_bus,
)
from .bus._urls import broker_from_url, parse_url, store_from_url
from .bus._workers import registry_for, unregister

log = logging.getLogger("actors.cli")

USAGE_ERROR = 2
"""Exit status for bad arguments or configuration (as argparse's own)."""
RUN_ERROR = 1
"""Exit status when a server cannot be reached or an id is unknown."""


class CliError(Exception):
    """Bad input or configuration: the message says what to do; exit status 2."""


# ------------------------------------------------------------------------------ inputs


def load_target(text: str) -> Handlers:
    """The `Handlers` named by ``module:attribute`` (the current folder is importable)."""
    module_name, sep, attribute = text.partition(":")
    if not sep or not module_name or not attribute:
        raise CliError(
            f"TARGET {text!r} must be module:attribute naming an actors.bus.Handlers, "
            "e.g. myapp.jobs:handlers"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise CliError(
                f"cannot import module {module_name!r} of TARGET {text!r}: {exc}; run from "
                "the folder that holds it or add that folder to PYTHONPATH"
            ) from None
        raise CliError(f"importing {module_name!r} (TARGET {text!r}) failed: {exc}") from exc
    except Exception as exc:
        raise CliError(
            f"importing {module_name!r} (TARGET {text!r}) raised {type(exc).__name__}: {exc}"
        ) from exc
    found: object = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            names = sorted(n for n, v in vars(module).items() if isinstance(v, Handlers))
            hint = f" (its Handlers: {', '.join(names)})" if names else ""
            raise CliError(f"module {module_name!r} has no attribute {attribute!r}{hint}") from None
    if not isinstance(found, Handlers):
        raise CliError(
            f"TARGET {text!r} is a {type(found).__name__}, not an actors.bus.Handlers: point "
            "it at the Handlers() your job handlers are registered on"
        )
    return found


def parse_queues(text: str, *, counts: bool) -> dict[str, int]:
    """``"default=8,emails=2"`` -> ``{"default": 8, "emails": 2}``; without ``counts`` a
    bare name (``"default,emails"``) is allowed and counts 1."""
    example = "default=8,emails=2" if counts else "default,emails"
    queues: dict[str, int] = {}
    for item in text.split(","):
        name, sep, number = (part.strip() for part in item.partition("="))
        if not name or (counts and not sep):
            raise CliError(f"--queues {text!r}: each item must be name=workers, e.g. {example}")
        if name in queues:
            raise CliError(f"--queues {text!r} names queue {name!r} twice")
        if not sep:
            queues[name] = 1
            continue
        try:
            workers = int(number)
        except ValueError:
            workers = 0
        if workers < 1:
            raise CliError(
                f"--queues {text!r}: the workers of queue {name!r} must be a whole number "
                f">= 1, got {number!r}; e.g. {example}"
            )
        queues[name] = workers
    return queues


def _url(value: str | None, what: str, env: str) -> str:
    if not value:
        raise CliError(f"no {what} URL: pass --{what} URL or set ${env}")
    scheme = parse_url(value, what=what).scheme
    if scheme == "memory":
        raise CliError(
            f"--{what} {value!r}: memory:// lives inside one process, and the CLI works on a "
            f"{what} shared with other processes; use sqlite:///path.db"
            + (" or redis://host:6379/0" if what == "broker" else " or postgresql://...")
        )
    return value


def _with_option(url: str, name: str, value: object) -> str:
    """``url`` with its query option ``name`` set to ``value`` (the rest kept as written)."""
    base, _, query = url.partition("?")
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != name]
    return f"{base}?{urlencode([*kept, (name, str(value))])}"


@attrs.frozen
class Services:
    """The store and broker URLs a command works on."""

    store: str
    broker: str | None

    def open_store(self) -> Store:
        return store_from_url(self.store)

    def open_broker(self) -> Broker:
        if self.broker is None:
            return MemoryBroker()  # the command needs no broker: nothing is queued
        return broker_from_url(self.broker)


def _services(args: argparse.Namespace, *, broker: bool) -> Services:
    store = _url(args.store, "store", "TRIO_LANES_STORE")
    if not broker:
        return Services(store, None)
    url = _url(args.broker, "broker", "TRIO_LANES_BROKER")
    timeout = getattr(args, "visibility_timeout", None)
    if timeout is not None:
        if timeout <= 0:
            raise CliError(f"--visibility-timeout must be > 0 seconds, got {timeout:g}")
        url = _with_option(url, "visibility_timeout", timeout)
    broker_from_url(url)  # checks the options now, not when the bus opens
    return Services(store, url)


# ------------------------------------------------------------------------------ worker


async def _settle(broker: StoppingBroker, bus: Bus) -> None:
    """Until no job handed out is unsettled and no coordinator is busy (polled: the bus
    has no event for it, and a stop can take 50 ms more)."""
    while broker.running() or bus.stats().coordinators.busy:  # noqa: ASYNC110
        await trio.sleep(0.05)


async def _stop(signals: Any, broker: StoppingBroker, bus: Bus, grace: float, signum: int) -> None:
    """Stop taking jobs; give running ones ``grace`` seconds (a second signal: none)."""
    broker.stop()
    running = broker.running()
    log.info(
        "got %s: taking no more jobs; waiting up to %gs for %d running",
        signal.Signals(signum).name,
        grace,
        running,
    )
    with trio.move_on_after(grace) as scope:
        async with trio.open_nursery() as nursery:

            async def second_signal() -> None:
                async for again in signals:
                    log.warning("got %s again: stopping at once", signal.Signals(again).name)
                    scope.cancel()

            nursery.start_soon(second_signal)
            await _settle(broker, bus)
            nursery.cancel_scope.cancel()
    if broker.running():
        log.warning(
            "%d jobs still running after the grace period: they go back to the broker",
            broker.running(),
        )


async def run_worker(
    handlers: Handlers, services: Services, queues: dict[str, int], grace: float
) -> None:
    """Run jobs until SIGTERM or SIGINT, then stop gracefully (see `_stop`)."""
    broker = StoppingBroker(services.open_broker())
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        with trio.CancelScope() as scope:
            async with open_bus(
                store=services.open_store(),
                broker=broker,
                queues=queues,
                handlers=handlers,
                workers=True,
            ) as bus:
                log.info(
                    "worker ready: queues %s, %d job types, store %s, broker %s (pid %d)",
                    ",".join(f"{name}={n}" for name, n in queues.items()),
                    len(handlers.job_types),
                    services.store,
                    services.broker,
                    os.getpid(),
                )
                async for signum in signals:
                    await _stop(signals, broker, bus, grace, signum)
                    break
                await unregister(broker)  # while the connection works: the scope cancels it
                # Leaving by cancellation: the bus's own exit would wait for jobs that other
                # processes dispatched; what is unsettled goes back to the broker on close.
                scope.cancel()
    log.info("worker stopped")


# ------------------------------------------------------------------------------ reading


def _when(value: datetime) -> str:
    return value.isoformat(timespec="seconds")


def _batch(state: Any) -> dict[str, Any]:
    data: dict[str, Any] = attrs.asdict(state)
    data["created_at"] = _when(state.created_at)
    data["updated_at"] = _when(state.updated_at)
    return data


def _chain(state: Any) -> dict[str, Any]:
    return {
        "chain_id": state.chain_id,
        "queue": state.queue,
        "steps": len(state.nodes),
        "next_index": state.next_index,
        "next_type": state.nodes[state.next_index].job.type
        if state.next_index < len(state.nodes)
        else None,
        "created_at": _when(state.created_at),
        "updated_at": _when(state.updated_at),
    }


def _failed(record: Any) -> dict[str, Any]:
    return {
        "id": record.id,
        "job_type": record.job_type,
        "queue": record.queue,
        "payload": record.payload,
        "error": record.error,
        "attempts": record.attempts,
        "failed_at": _when(record.failed_at),
        "traceback": record.traceback,
    }


async def read_status(services: Services, queues: Sequence[str], limit: int) -> dict[str, Any]:
    broker = services.open_broker()
    async with open_bus(
        store=services.open_store(),
        broker=broker,
        queues=dict.fromkeys(queues, 1),
        workers=False,
    ) as bus:
        stats = await bus.queue_stats()
        batches, chains = await bus.in_flight(limit)
        failed = await bus.failed_jobs()
        registry = registry_for(broker)
        # None: the broker keeps no registry (memory: nothing runs across processes).
        workers = None if registry is None else [w.to_json() for w in await registry.workers()]
    return {
        "queues": {name: attrs.asdict(s) for name, s in stats.items()},
        "workers": workers,
        "batches_in_flight": [_batch(b) for b in batches],
        "chains_in_flight": [_chain(c) for c in chains],
        "failed": len(failed),
    }


async def read_failed(services: Services) -> list[dict[str, Any]]:
    async with open_bus(store=services.open_store(), workers=False) as bus:
        return [_failed(record) for record in await bus.failed_jobs()]


async def read_batches(services: Services, limit: int) -> list[dict[str, Any]]:
    async with open_bus(store=services.open_store(), workers=False) as bus:
        batches, _ = await bus.in_flight(limit)
    return [_batch(b) for b in batches]


async def _not_run_here(ctx: JobContext) -> None:
    raise RuntimeError("`trio-lanes failed retry` runs no jobs")  # workers=False: never called


async def retry_failed(
    services: Services, job_id: str, handlers: Handlers | None
) -> dict[str, Any]:
    """Put the failed job back on its queue. Without ``handlers`` its type is taken as it
    was recorded (it had a handler when it was dispatched)."""
    async with open_bus(store=services.open_store(), workers=False) as bus:
        found = [record for record in await bus.failed_jobs() if record.id == job_id]
    if not found:
        raise NotFound(f"no failed job {job_id!r} in {services.store} (see `failed list`)")
    record = found[0]
    if handlers is None:
        handlers = Handlers({record.job_type: _not_run_here})
    async with open_bus(
        store=services.open_store(),
        broker=services.open_broker(),
        queues={record.queue: 1},
        handlers=handlers,
        workers=False,
    ) as bus:
        result = await bus.retry_failed(job_id)
    return {
        "retried": job_id,
        "job_id": result.job_id,
        "job_type": record.job_type,
        "queue": record.queue,
    }


# ------------------------------------------------------------------------------ showing


def _status_tables(status: dict[str, Any]) -> list[Table]:
    queues = Table(
        "queues",
        ("queue", "ready", "delayed", "running"),
        tuple(
            (name, str(s["ready"]), str(s["delayed"]), str(s["running"]))
            for name, s in status["queues"].items()
        ),
    )
    summary = Table(
        "in flight",
        ("what", "count"),
        (
            ("workers", "-" if status["workers"] is None else str(len(status["workers"]))),
            ("batches", str(len(status["batches_in_flight"]))),
            ("chains", str(len(status["chains_in_flight"]))),
            ("failed jobs", str(status["failed"])),
        ),
    )
    return [queues, *workers_table(status["workers"]), summary]


def _batches_table(batches: list[dict[str, Any]]) -> Table:
    return Table(
        "batches in flight",
        ("batch", "name", "queue", "done", "failed", "pending", "cancelled", "created"),
        tuple(
            (
                b["batch_id"],
                b["name"] or "",
                b["queue"],
                f"{b['processed']}/{b['total']}",
                str(b["failed"]),
                str(b["pending"]),
                "yes" if b["cancelled"] else "",
                b["created_at"],
            )
            for b in batches
        ),
    )


def _failed_table(failed: list[dict[str, Any]]) -> Table:
    return Table(
        "failed jobs",
        ("id", "type", "queue", "attempts", "failed at", "error"),
        tuple(
            (f["id"], f["job_type"], f["queue"], str(f["attempts"]), f["failed_at"], f["error"])
            for f in failed
        ),
    )


# ------------------------------------------------------------------------------ arguments


def _add_services(parser: argparse.ArgumentParser, *, broker: bool, json: bool = True) -> None:
    urls = [("store", "postgresql://...")] + ([("broker", "redis://host:6379/0")] if broker else [])
    for what, other in urls:
        variable = f"TRIO_LANES_{what.upper()}"
        parser.add_argument(
            f"--{what}",
            default=os.environ.get(variable),
            metavar="URL",
            help=f"sqlite:///jobs.db or {other} (default ${variable})",
        )
    if json:
        parser.add_argument("--json", action="store_true", help="print JSON (for scripts)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-lanes", description="Run trio-lanes bus workers and look at a bus's state."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    worker = commands.add_parser("worker", help="run the jobs of TARGET's handlers")
    worker.add_argument("target", metavar="TARGET", help="module:attribute naming a Handlers")
    _add_services(worker, broker=True, json=False)
    worker.add_argument(
        "--queues",
        default="default=4",
        help="queue=workers,... to run (default: default=4)",
    )
    worker.add_argument(
        "--grace",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds running jobs get to finish after SIGTERM/SIGINT (default 30)",
    )
    worker.add_argument(
        "--visibility-timeout",
        type=float,
        default=None,
        metavar="S",
        help="the broker's lease, in seconds (overrides the broker URL's)",
    )
    worker.add_argument("--log-level", default="INFO", help="logging level (default INFO)")

    status = commands.add_parser("status", help="queues, batches and chains in flight, failures")
    status.add_argument("target", metavar="TARGET", nargs="?", help="module:attribute (checked)")
    _add_services(status, broker=True)
    status.add_argument(
        "--queues", default="default", help="the queues to count: name,... (default: default)"
    )
    status.add_argument("--limit", type=int, default=100, help="most batches and chains read")

    failed = commands.add_parser("failed", help="jobs that failed after their retries")
    failed_commands = failed.add_subparsers(dest="failed_command", required=True, metavar="ACTION")
    failed_list = failed_commands.add_parser("list", help="list the failed jobs kept")
    _add_services(failed_list, broker=False)
    failed_retry = failed_commands.add_parser("retry", help="put a failed job back on its queue")
    failed_retry.add_argument("job_id", metavar="ID", help="the failed job's id (failed list)")
    _add_services(failed_retry, broker=True)
    failed_retry.add_argument(
        "--target", default=None, help="module:attribute: check the job's type has a handler"
    )

    batches = commands.add_parser("batches", help="batches in flight")
    _add_services(batches, broker=False)
    batches.add_argument("--limit", type=int, default=100, help="most batches listed")
    return parser


def _check_limit(args: argparse.Namespace) -> int:
    limit: int = args.limit
    if limit < 1:
        raise CliError(f"--limit must be >= 1, got {limit}")
    return limit


def _run(args: argparse.Namespace, out: TextIO) -> None:
    if args.command == "worker":
        handlers = load_target(args.target)
        services = _services(args, broker=True)
        queues = parse_queues(args.queues, counts=True)
        if args.grace < 0:
            raise CliError(f"--grace must be >= 0 seconds, got {args.grace:g}")
        logging.basicConfig(
            level=args.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        logging.getLogger("coredis").setLevel(logging.WARNING)  # its connection retries
        trio.run(run_worker, handlers, services, queues, args.grace)
        return
    if args.command == "status":
        if args.target is not None:
            load_target(args.target)
        services = _services(args, broker=True)
        names = list(parse_queues(args.queues, counts=False))
        status = trio.run(read_status, services, names, _check_limit(args))
        if args.json:
            write_json(status, out)
        else:
            write_tables(
                [*_status_tables(status), _batches_table(status["batches_in_flight"])], out
            )
        return
    if args.command == "batches":
        found = trio.run(read_batches, _services(args, broker=False), _check_limit(args))
        write_json(found, out) if args.json else write_tables([_batches_table(found)], out)
        return
    if args.failed_command == "list":
        failed = trio.run(read_failed, _services(args, broker=False))
        write_json(failed, out) if args.json else write_tables([_failed_table(failed)], out)
        return
    checked = None if args.target is None else load_target(args.target)
    done = trio.run(retry_failed, _services(args, broker=True), args.job_id, checked)
    if args.json:
        write_json(done, out)
    else:
        retried, queue, job_id = done["retried"], done["queue"], done["job_id"]
        out.write(f"failed job {retried} is queued again on {queue!r} as {job_id}\n")


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    out = sys.stdout if out is None else out
    try:
        _run(args, out)
    except (CliError, ValueError, TypeError) as exc:
        sys.stderr.write(f"trio-lanes: error: {exc}\n")
        return USAGE_ERROR
    except (ConnectionError, StoreError, NotFound, OSError) as exc:
        sys.stderr.write(f"trio-lanes: error: {exc}\n")
        return RUN_ERROR
    return 0
