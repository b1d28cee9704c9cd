"""FakeBus: records instead of running; every assertion passes and fails clearly."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from actors.bus import BatchSpec, FakeBus, Job, JobContext, NotFound


async def _record_some(fake: FakeBus) -> None:
    await fake.dispatch(Job("emails:send", {"to": "a"}))
    await fake.dispatch(Job("emails:send", {"to": "b"}).on_queue("mail"))
    await fake.dispatch(Job("sms:send"))
    await fake.chain(Job("orders:reserve"), Job("orders:charge")).dispatch()
    await fake.batch(Job("report:a"), Job("report:b")).name("nightly").on_queue("slow").dispatch()


PASSING: list[tuple[str, Callable[[FakeBus], None]]] = [
    ("assert_dispatched", lambda f: f.assert_dispatched("emails:send")),
    ("assert_dispatched_times", lambda f: f.assert_dispatched_times("emails:send", 2)),
    ("assert_not_dispatched", lambda f: f.assert_not_dispatched("push:send")),
    ("assert_count", lambda f: f.assert_count(3)),
    ("assert_dispatched_on", lambda f: f.assert_dispatched_on("mail", "emails:send")),
    ("assert_dispatched_on default", lambda f: f.assert_dispatched_on("default", "sms:send")),
    ("assert_chained", lambda f: f.assert_chained(["orders:reserve", "orders:charge"])),
    (
        "assert_batched",
        lambda f: f.assert_batched(
            lambda s: s == BatchSpec(("report:a", "report:b"), "nightly", "slow")
        ),
    ),
    ("assert_batch_count", lambda f: f.assert_batch_count(1)),
]

FAILING: list[tuple[str, Callable[[FakeBus], None], str]] = [
    (
        "assert_dispatched",
        lambda f: f.assert_dispatched("push:send"),
        "expected a 'push:send' job to be dispatched, but none was; "
        "dispatched: ['emails:send', 'emails:send', 'sms:send']",
    ),
    (
        "assert_dispatched_times",
        lambda f: f.assert_dispatched_times("emails:send", 3),
        "expected 'emails:send' to be dispatched 3 time(s), but it was dispatched 2 time(s)",
    ),
    (
        "assert_not_dispatched",
        lambda f: f.assert_not_dispatched("sms:send"),
        "expected no 'sms:send' job to be dispatched, but 1 was/were",
    ),
    (
        "assert_nothing_dispatched",
        lambda f: f.assert_nothing_dispatched(),
        "expected nothing to be dispatched, but 3 job(s) were",
    ),
    ("assert_count", lambda f: f.assert_count(1), "expected 1 dispatched job(s), got 3"),
    (
        "assert_dispatched_on",
        lambda f: f.assert_dispatched_on("slow", "emails:send"),
        "expected 'emails:send' to be dispatched on queue 'slow', but it was dispatched on "
        "queue(s) ['default', 'mail']",
    ),
    (
        "assert_dispatched_on never",
        lambda f: f.assert_dispatched_on("slow", "push:send"),
        "but it was dispatched never",
    ),
    (
        "assert_chained",
        lambda f: f.assert_chained(["orders:charge", "orders:reserve"]),
        "expected a chain ['orders:charge', 'orders:reserve'], but the chains dispatched were: "
        "[['orders:reserve', 'orders:charge']]",
    ),
    (
        "assert_batched",
        lambda f: f.assert_batched(lambda s: len(s.job_types) == 3),
        "expected a batch matching <lambda>, but none of the 1 batch(es) did",
    ),
    ("assert_batch_count", lambda f: f.assert_batch_count(2), "expected 2 batch(es), got 1"),
    (
        "assert_nothing_batched",
        lambda f: f.assert_nothing_batched(),
        "expected no batch, but 1 were dispatched",
    ),
]


@pytest.mark.parametrize(("name", "check"), PASSING, ids=[p[0] for p in PASSING])
async def test_assertions_pass(name: str, check: Callable[[FakeBus], None]) -> None:
    fake = FakeBus()
    await _record_some(fake)
    check(fake)


@pytest.mark.parametrize(("name", "check", "message"), FAILING, ids=[f[0] for f in FAILING])
async def test_assertions_fail_with_a_clear_message(
    name: str, check: Callable[[FakeBus], None], message: str
) -> None:
    fake = FakeBus()
    await _record_some(fake)
    with pytest.raises(AssertionError, match=re.escape(message)):
        check(fake)


async def test_an_empty_fake_passes_the_nothing_assertions(fake_bus: FakeBus) -> None:
    # `fake_bus` comes from the trio_lanes_bus pytest plugin (an entry point).
    fake_bus.assert_nothing_dispatched()
    fake_bus.assert_nothing_batched()
    fake_bus.assert_count(0)
    fake_bus.assert_batch_count(0)
    with pytest.raises(AssertionError, match="chains dispatched were: none"):
        fake_bus.assert_chained(["a"])


async def test_the_fake_checks_input_like_the_bus(fake_bus: FakeBus) -> None:
    with pytest.raises(TypeError, match="JSON"):
        await fake_bus.dispatch(Job("a", object()))
    with pytest.raises(TypeError, match="JSON"):
        await fake_bus.batch(Job("a", {1})).dispatch()
    with pytest.raises(TypeError, match="then callback"):
        fake_bus.batch(Job("a")).then(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await fake_bus.dispatch("a")  # type: ignore[arg-type]
    fake_bus.assert_nothing_dispatched()


async def test_the_fake_finds_what_it_recorded(fake_bus: FakeBus) -> None:
    @fake_bus.handler("a")
    async def handler(ctx: JobContext) -> None:
        pass  # pragma: no cover - the fake never runs handlers

    assert fake_bus.handlers == {"a": handler}
    batch_id = await fake_bus.batch(Job("a"), Job("a")).name("n").dispatch()
    chain_id = await fake_bus.chain(Job("a")).on_queue("q").dispatch()
    batch = await fake_bus.find_batch(batch_id)
    assert (batch.name, batch.total, batch.pending, batch.cancelled) == ("n", 2, 2, False)
    chain = await fake_bus.find_chain(chain_id)
    assert chain.queue == "q"
    assert chain.nodes[0].job.options.queue == "q"
    assert (await fake_bus.cancel_batch(batch_id)).cancelled
    with pytest.raises(LookupError):
        await fake_bus.find_batch("missing")
    with pytest.raises(NotFound):
        await fake_bus.find_chain("missing")
    await fake_bus.wait_idle()


def test_the_plugin_is_registered_as_an_entry_point(pytestconfig: Any) -> None:
    assert pytestconfig.pluginmanager.has_plugin("trio_lanes_bus")
