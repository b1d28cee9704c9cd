"""`trio-lanes`: arguments refused with a clear message, and `status`, `failed list|retry`
and `batches` reading what other buses wrote, on an SQLite broker and on Redis."""

from __future__ import annotations

import gc
import io
import json
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from actors._cli import main
from actors.bus import Job, open_bus

from ..services import free_port, redis_url
from .cli_app import handlers

ROOT = Path(__file__).resolve().parents[2]
TARGET = "tests.actors.cli_app:handlers"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue(), capsys.readouterr().err


# ------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("myapp.jobs", "TARGET 'myapp.jobs' must be module:attribute"),
        (":handlers", "must be module:attribute"),
        ("no_such_module_here:handlers", "cannot import module 'no_such_module_here'"),
        ("tests.actors.cli_app:nope", "has no attribute 'nope' (its Handlers: handlers)"),
        ("tests.actors.cli_app:NOT_HANDLERS", "is a dict, not an actors.bus.Handlers"),
    ],
)
def test_a_bad_target_is_named(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, target: str, message: str
) -> None:
    url = f"sqlite:///{tmp_path}/jobs.db"
    code, _, err = run(capsys, "worker", target, "--store", url, "--broker", url)
    assert code == 2
    assert message in err
    assert not (tmp_path / "jobs.db").exists()  # refused before anything opened


@pytest.mark.parametrize(
    ("queues", "message"),
    [
        ("default", "each item must be name=workers"),
        ("default=0", "must be a whole number >= 1, got '0'"),
        ("default=x", "must be a whole number >= 1, got 'x'"),
        ("a=1,a=2", "names queue 'a' twice"),
        ("a=1,", "each item must be name=workers"),
    ],
)
def test_bad_queues_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, queues: str, message: str
) -> None:
    url = f"sqlite:///{tmp_path}/jobs.db"
    code, _, err = run(
        capsys, "worker", TARGET, "--store", url, "--broker", url, "--queues", queues
    )
    assert code == 2
    assert message in err


@pytest.mark.parametrize(
    ("store", "broker", "message"),
    [
        ("sqlite:///j.db", "amqp://localhost", "unknown broker URL 'amqp://localhost'"),
        ("mysql://localhost/x", "sqlite:///j.db", "unknown store URL 'mysql://localhost/x'"),
        ("sqlite:///j.db", "memory://", "memory:// lives inside one process"),
        ("memory://", "sqlite:///j.db", "memory:// lives inside one process"),
        ("sqlite:///j.db", "sqlite:///j.db?lease=3", "unknown option 'lease'"),
    ],
)
def test_bad_urls_are_refused(
    capsys: pytest.CaptureFixture[str], store: str, broker: str, message: str
) -> None:
    code, _, err = run(capsys, "worker", TARGET, "--store", store, "--broker", broker)
    assert code == 2
    assert message in err


def test_a_missing_url_says_how_to_give_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRIO_LANES_STORE", raising=False)
    code, _, err = run(capsys, "batches")
    assert code == 2
    assert "no store URL: pass --store URL or set $TRIO_LANES_STORE" in err


# coredis leaves the failed connection's streams to the garbage collector (see
# tests/actors/bus/brokers/test_errors.py): collected here, where the warning is expected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_an_unreachable_redis_is_named_with_a_hint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    store = f"sqlite:///{tmp_path}/jobs.db"
    code, _, err = run(capsys, "status", "--store", store, "--broker", url)
    assert code == 1
    assert f"cannot reach Redis at {url}" in err
    assert "is redis-server running there?" in err
    gc.collect()


def test_the_console_script_and_python_m_actors_run() -> None:
    for command in (
        [sys.executable, "-m", "actors"],
        [str(Path(sys.executable).parent / "trio-lanes")],
    ):
        done = subprocess.run(
            [*command, "worker", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert "--grace S" in done.stdout


# ------------------------------------------------------------------------------ reading


@pytest.fixture(params=["sqlite", "redis"])
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    store = f"sqlite:///{tmp_path}/store.db"
    if request.param == "sqlite":
        return store, store
    return store, f"{redis_url()}?prefix=cli-{secrets.token_hex(4)}"


def populate(store: str, broker: str) -> None:
    """One failed job; then, with no worker: 3 ready jobs, a delayed one, a batch of 2 and a
    chain of 2 (its first step queued)."""

    async def go() -> None:
        async with open_bus(store=store, broker=broker, handlers=handlers) as bus:
            await bus.dispatch(Job("cli:fail", {"n": 1}))
            # Leaving a worker bus on a durable broker does not wait for jobs still in the
            # broker: wait for this one to fail here.
            await bus.wait_idle()
        async with open_bus(store=store, broker=broker, handlers=handlers, workers=False) as bus:
            for n in range(3):
                await bus.dispatch(Job("cli:record", {"n": n}))
            await bus.dispatch(Job("cli:record", {"n": 9}).delay(600))
            jobs = [Job("cli:record", {"n": n}) for n in (10, 11)]
            await bus.batch(*jobs).name("nightly").dispatch()
            await bus.chain(Job("cli:record", {"n": 20}), Job("cli:record", {"n": 21})).dispatch()

    trio.run(go)


def status(capsys: pytest.CaptureFixture[str], store: str, broker: str) -> dict[str, Any]:
    code, out, err = run(capsys, "status", TARGET, "--store", store, "--broker", broker, "--json")
    assert code == 0, err
    found: dict[str, Any] = json.loads(out)
    return found


def test_status_failed_and_batches_read_what_other_buses_wrote(
    capsys: pytest.CaptureFixture[str], urls: tuple[str, str]
) -> None:
    store, broker = urls
    populate(store, broker)
    capsys.readouterr()

    seen = status(capsys, store, broker)
    assert seen["queues"] == {"default": {"ready": 6, "delayed": 1, "running": 0}}
    assert seen["failed"] == 1
    assert seen["workers"] == []  # the buses that wrote it were not workers, and are gone
    [batch] = seen["batches_in_flight"]
    assert (batch["name"], batch["total"], batch["pending"], batch["processed"]) == (
        "nightly",
        2,
        2,
        0,
    )
    [chain] = seen["chains_in_flight"]
    assert (chain["steps"], chain["next_index"], chain["next_type"]) == (2, 0, "cli:record")

    code, out, err = run(capsys, "batches", "--store", store, "--json")
    assert code == 0, err
    assert [b["batch_id"] for b in json.loads(out)] == [batch["batch_id"]]

    code, out, err = run(capsys, "failed", "list", "--store", store, "--json")
    assert code == 0, err
    [failed] = json.loads(out)
    assert (failed["job_type"], failed["queue"], failed["attempts"]) == ("cli:fail", "default", 1)
    assert failed["error"] == "ValueError: job 1 fails"
    assert "ValueError: job 1 fails" in failed["traceback"]

    code, out, err = run(
        capsys, "failed", "retry", failed["id"], "--store", store, "--broker", broker, "--json"
    )
    assert code == 0, err
    retried = json.loads(out)
    assert (retried["retried"], retried["queue"]) == (failed["id"], "default")
    assert retried["job_id"] != failed["id"]

    code, out, _ = run(capsys, "failed", "list", "--store", store, "--json")
    assert json.loads(out) == []
    after = status(capsys, store, broker)
    assert after["queues"]["default"]["ready"] == 7  # the retried job is queued again
    assert after["failed"] == 0

    code, _, err = run(
        capsys, "failed", "retry", failed["id"], "--store", store, "--broker", broker
    )
    assert code == 1
    assert f"no failed job {failed['id']!r}" in err


def test_tables_with_rich_and_in_plain_text(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store = broker = f"sqlite:///{tmp_path}/store.db"
    populate(store, broker)
    capsys.readouterr()
    for rich in (True, False):
        if not rich:  # the cli extra not installed: `import rich...` fails
            monkeypatch.setitem(sys.modules, "rich.console", None)
        code, out, err = run(capsys, "status", "--store", store, "--broker", broker)
        assert code == 0, err
        assert "queues" in out
        assert "nightly" in out
        assert "workers: no worker registered" in out  # the registry is empty
        code, out, _ = run(capsys, "failed", "list", "--store", store)
        assert "ValueError: job 1 fails" in out
        code, out, _ = run(capsys, "batches", "--store", store)
        assert "nightly" in out
        assert "0/2" in out
        if not rich:
            assert "│" not in out
            assert "━" not in out
    code, out, _ = run(capsys, "failed", "retry", "nope", "--store", store, "--broker", broker)
    assert code == 1


def test_failed_retry_with_a_target_checks_the_type(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store = broker = f"sqlite:///{tmp_path}/store.db"
    populate(store, broker)
    code, out, _ = run(capsys, "failed", "list", "--store", store, "--json")
    [failed] = json.loads(out)
    retry = ("failed", "retry", failed["id"], "--store", store, "--broker", broker, "--target")
    code, out, err = run(capsys, *retry, "tests.actors.cli_app:nope")
    assert code == 2
    assert "has no attribute 'nope'" in err
    code, out, err = run(capsys, *retry, TARGET)
    assert code == 0, err
    assert f"failed job {failed['id']} is queued again on 'default'" in out
