"""The public surface, bad input, closed supervisors and startup (like nursery.start)."""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

import supervisors
from supervisors import (
    ChildInfo,
    RestartBackoff,
    RestartIntensityExceeded,
    Supervisor,
    SupervisorClosed,
    SupervisorError,
    open_supervisor,
)
from tests.supervisors.helpers import Boom, Crew, infos


def test_every_public_name_is_defined() -> None:
    # The names themselves are pinned, with the other packages', in tests/test_public_api.py.
    for name in supervisors.__all__:
        assert getattr(supervisors, name) is not None


def test_error_hierarchy() -> None:
    assert issubclass(RestartIntensityExceeded, SupervisorError)
    assert issubclass(RestartIntensityExceeded, RuntimeError)
    assert issubclass(SupervisorClosed, SupervisorError)
    assert issubclass(SupervisorClosed, trio.ClosedResourceError)
    assert issubclass(SupervisorError, Exception)


def test_supervisor_has_no_public_constructor() -> None:
    with pytest.raises(TypeError, match="open_supervisor"):
        Supervisor(strategy="one_for_one", max_restarts=3, max_seconds=5.0, name="x", on_event=None)


def test_child_info_is_a_frozen_value() -> None:
    info = ChildInfo("a", True, 2)
    assert info == ChildInfo(id="a", running=True, restarts=2)
    with pytest.raises(AttributeError):
        info.restarts = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"strategy": "one_for_some"},
            ValueError,
            "'one_for_one', 'one_for_all', 'rest_for_one'",
        ),
        ({"strategy": 1}, TypeError, "strategy must be one of"),
        ({"max_restarts": -1}, ValueError, "max_restarts must be >= 0"),
        ({"max_restarts": 1.5}, TypeError, "max_restarts must be an int"),
        ({"max_restarts": True}, TypeError, "max_restarts must be an int"),
        ({"max_seconds": math.nan}, ValueError, "NaN"),
        ({"max_seconds": -1.0}, ValueError, "max_seconds must be > 0"),
        ({"max_seconds": 0}, ValueError, "max_seconds must be > 0"),
        ({"max_seconds": "5"}, TypeError, "max_seconds must be a number"),
        ({"name": 3}, TypeError, "name must be a str"),
        ({"on_event": 3}, TypeError, "on_event must be callable"),
    ],
)
async def test_bad_open_arguments(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        async with open_supervisor(**kwargs):
            pytest.fail("the block must not run")  # pragma: no cover


async def worker(*, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started("ready")
    await trio.sleep_forever()


def sync_worker(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()


class SyncCallable:
    """Not classifiable up front: caught when it calls started() before returning."""

    def __call__(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()


async def agen_worker(
    *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> AsyncIterator[None]:
    yield  # pragma: no cover


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((3, worker), {}, TypeError, "child id must be a str"),
        (("", worker), {}, ValueError, "child id must be a non-empty str"),
        (("w", "worker"), {}, TypeError, "must be an async function"),
        (("w", sync_worker), {}, TypeError, r"async function \(async def\).*sync_worker"),
        (("w", agen_worker), {}, TypeError, "async function"),
        (("w", SyncCallable()), {}, TypeError, r"called task_status.started\(\) before"),
        (("w", worker), {"restart": "sometimes"}, ValueError, "'permanent', 'transient'"),
        (("w", worker), {"restart": None}, TypeError, "restart must be one of"),
        (("w", worker), {"shutdown": math.nan}, ValueError, "NaN"),
        (("w", worker), {"shutdown": -1}, ValueError, "shutdown must be >= 0"),
        (("w", worker), {"shutdown": "1"}, TypeError, "shutdown must be a number"),
        (("w", worker), {"backoff": 0.1}, TypeError, "backoff must be a supervisors"),
    ],
)
async def test_bad_start_child_arguments(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[Exception],
    match: str,
    autojump_clock: Any,
) -> None:
    async with open_supervisor() as sup:
        with pytest.raises(error, match=match):
            await sup.start_child(*args, **kwargs)
        assert sup.which_children() == []
        assert await sup.start_child("w", worker) == "ready"  # nothing was left behind
        await sup.shutdown()


async def test_duplicate_child_id(autojump_clock: Any) -> None:
    async with open_supervisor() as sup:
        await sup.start_child("w", worker)
        with pytest.raises(ValueError, match="already has a child 'w'"):
            await sup.start_child("w", worker)
        assert infos(sup) == [("w", True, 0)]
        await sup.shutdown()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"min": 0}, ValueError, "min must be > 0"),
        ({"min": -1}, ValueError, "min must be > 0"),
        ({"min": math.nan}, ValueError, "NaN"),
        ({"min": "1"}, TypeError, "min must be a number"),
        ({"min": 2.0, "max": 1.0}, ValueError, "max must be >= min"),
        ({"max": math.nan}, ValueError, "NaN"),
        ({"jitter": 1.5}, ValueError, "between 0 and 1"),
        ({"jitter": -0.1}, ValueError, "between 0 and 1"),
        ({"jitter": math.nan}, ValueError, "between 0 and 1"),
        ({"jitter": "a"}, TypeError, "jitter must be a fraction"),
        ({"rng": 42}, TypeError, "rng must be a random.Random"),
    ],
)
def test_bad_backoff(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        RestartBackoff(**kwargs)


def test_backoff_delays() -> None:
    backoff = RestartBackoff(min=0.5, max=3.0, jitter=0)
    assert [backoff.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff.delay(10_000) == 3.0
    with pytest.raises(ValueError, match="n must be >= 1"):
        backoff.delay(0)
    assert RestartBackoff() == RestartBackoff(min=0.1, max=30.0, jitter=0.2)


def test_backoff_jitter_stays_within_its_fraction_and_is_reproducible() -> None:
    def delays(seed: int) -> list[float]:
        backoff = RestartBackoff(min=1.0, max=8.0, jitter=0.25, rng=random.Random(seed))
        return [backoff.delay(n) for n in range(1, 40)]

    first = delays(1)
    assert first == delays(1)
    assert first != delays(2)
    for n, delay in enumerate(first, start=1):
        base = min(8.0, 2.0 ** (n - 1))
        assert 0.75 * base <= delay <= base
    assert len(set(first)) == len(first)  # drawn, not fixed


async def test_start_child_returns_the_started_value_and_passes_args(autojump_clock: Any) -> None:
    async def echo(a: int, b: str, *, task_status: trio.TaskStatus[str]) -> None:
        task_status.started(f"{a}{b}")
        await trio.sleep_forever()

    async with open_supervisor() as sup:
        assert await sup.start_child("e", echo, 1, "x") == "1x"
        await sup.shutdown()


async def test_failure_before_started_is_raised_at_the_caller(autojump_clock: Any) -> None:
    async def broken(*, task_status: trio.TaskStatus[None]) -> None:
        raise Boom("setup failed")

    async with open_supervisor() as sup:
        with pytest.raises(Boom, match="setup failed"):
            await sup.start_child("b", broken)
        assert sup.which_children() == []
        assert await sup.start_child("b", worker) == "ready"  # the id is free again
        await sup.shutdown()


async def test_returning_without_started_is_an_error_at_the_caller(autojump_clock: Any) -> None:
    async def lazy(*, task_status: trio.TaskStatus[None]) -> None:
        return

    async with open_supervisor() as sup:
        with pytest.raises(RuntimeError, match=r"without calling task_status.started\(\)"):
            await sup.start_child("lazy", lazy)
        assert sup.which_children() == []


async def test_caller_cancelled_during_startup_cancels_the_child(autojump_clock: Any) -> None:
    ended: list[float] = []

    async def slow(*, task_status: trio.TaskStatus[None]) -> None:
        try:
            await trio.sleep(10)
            task_status.started()  # pragma: no cover
        finally:
            ended.append(trio.current_time())

    async with open_supervisor() as sup:
        with trio.move_on_after(1):
            await sup.start_child("slow", slow)
        assert ended == [1.0]
        assert sup.which_children() == []


async def test_started_twice_is_an_error(autojump_clock: Any) -> None:
    async def twice(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        task_status.started()

    async def run() -> None:
        async with open_supervisor(max_restarts=0) as sup:
            await sup.start_child("t", twice, restart="permanent")
            await trio.sleep_forever()

    with pytest.raises(RestartIntensityExceeded) as info:
        await run()
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "started' twice" in str(info.value.__cause__)


async def test_a_child_cannot_use_its_supervisor_before_started(autojump_clock: Any) -> None:
    async def eager(sup: Supervisor, *, task_status: trio.TaskStatus[None]) -> None:
        await sup.start_child("other", worker)  # would wait for this very startup

    async with open_supervisor() as sup:
        with pytest.raises(RuntimeError, match=r"before it called task_status.started\(\)"):
            await sup.start_child("eager", eager, sup)
        assert sup.which_children() == []


def test_shutting_down_outside_a_child() -> None:
    with pytest.raises(RuntimeError, match="must be called from a child"):
        supervisors.shutting_down()


async def test_unknown_child_id(autojump_clock: Any) -> None:
    async with open_supervisor() as sup:
        await sup.start_child("a", worker)
        for method in (sup.terminate_child, sup.restart_child, sup.delete_child):
            with pytest.raises(LookupError, match=r"has no child 'zz' .*'a'"):
                await method("zz")
        await sup.shutdown()


async def test_closed_after_the_block(autojump_clock: Any) -> None:
    async with open_supervisor(name="jobs") as sup:
        await sup.start_child("w", worker, restart="transient")
        await sup.terminate_child("w")
    assert sup.closed
    for call in (
        sup.start_child("x", worker),
        sup.terminate_child("w"),
        sup.restart_child("w"),
        sup.delete_child("w"),
    ):
        with pytest.raises(SupervisorClosed, match="supervisor 'jobs' is closed"):
            await call
    assert infos(sup) == [("w", False, 0)]  # still readable, for a post-mortem
    await sup.shutdown()  # does nothing, like a second aclose()


async def test_closed_once_shut_down(autojump_clock: Any) -> None:
    async with open_supervisor(name="jobs") as sup:
        await sup.start_child("w", worker)
        await sup.shutdown()
        assert sup.closed
        with pytest.raises(SupervisorClosed, match="'jobs' is shutting down"):
            await sup.start_child("x", worker)
        await sup.shutdown()
        assert infos(sup) == [("w", False, 0)]


async def test_public_async_methods_checkpoint(autojump_clock: Any) -> None:
    crew = Crew()
    async with open_supervisor() as sup:
        with trio.testing.assert_checkpoints():
            await sup.start_child("a", crew.child, "a")
        with trio.testing.assert_checkpoints():
            await sup.terminate_child("a")
        with trio.testing.assert_checkpoints():
            await sup.terminate_child("a")  # already stopped
        with trio.testing.assert_checkpoints():
            await sup.restart_child("a")
        with trio.testing.assert_checkpoints():
            await sup.delete_child("a")
        with trio.testing.assert_checkpoints():
            await sup.shutdown()
        with trio.testing.assert_checkpoints():
            await sup.shutdown()
    with trio.testing.assert_checkpoints():
        await sup.shutdown()


async def test_repr_names_the_supervisor(autojump_clock: Any) -> None:
    async with open_supervisor("rest_for_one", name="edge") as sup:
        assert repr(sup) == "<Supervisor 'edge' rest_for_one with 0 children>"
        assert (sup.name, sup.strategy, sup.max_restarts, sup.max_seconds) == (
            "edge",
            "rest_for_one",
            3,
            5.0,
        )
    assert repr(sup) == "<Supervisor 'edge' rest_for_one with 0 children (closed)>"
