"""Cluster Lanes on a real Redis: several `Lanes` managers (each its own connection, as
processes would be) sharing keys. Real time: bounded waits of a few lease lengths at most."""

from __future__ import annotations

import contextvars
import gc
import secrets
from collections.abc import Iterator

import pytest
import trio

import actors
from actors import LeaseLost, current_fence, open_lanes
from actors._cluster import ClusterLeases
from tests.services import redis_url

LEASE = 0.3

# A waiter cancelled in its BLPOP makes coredis drop that connection, leaving its anyio streams
# to the garbage collector: collect them in the test that made them, where the warning is
# expected, never in whichever test runs next.
pytestmark = [
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    yield
    gc.collect()


async def fence() -> int:
    await trio.lowlevel.checkpoint()
    return current_fence()


@pytest.fixture
def url() -> str:
    return redis_url()


@pytest.fixture
def prefix() -> str:
    return f"test-{secrets.token_hex(4)}"


async def test_jobs_of_two_managers_on_one_key_take_turns_with_growing_fences(
    url: str, prefix: str
) -> None:
    log: list[tuple[str, str, int, int]] = []
    arrived: dict[str, list[int]] = {"a": [], "b": []}

    async def call(lanes: actors.Lanes, who: str, i: int) -> None:
        arrived[who].append(i)  # run() takes its place in its lane before its first checkpoint
        await lanes.run("acct:1", job, who, i)

    async def job(who: str, i: int) -> int:
        fence = current_fence()
        log.append(("start", who, i, fence))
        await trio.sleep(0.005)
        log.append(("end", who, i, fence))
        return fence

    async with (
        open_lanes(cluster=url, lease=LEASE, prefix=prefix) as a,
        open_lanes(cluster=url, lease=LEASE, prefix=prefix) as b,
        trio.open_nursery() as nursery,
    ):
        for i in range(6):
            nursery.start_soon(call, a, "a", i)
            nursery.start_soon(call, b, "b", i)
    # Never two at once: starts and ends alternate, each end the start before it.
    for start, end in zip(log[::2], log[1::2], strict=True):
        assert (start[0], end[0]) == ("start", "end")
        assert start[1:] == end[1:]
    fences = [entry[3] for entry in log[::2]]
    assert fences == sorted(fences)
    assert len(set(fences)) == 12
    # Each manager's own jobs in arrival order (its in-process lane is FIFO).
    for who in "ab":
        assert [i for _, w, i, _ in log[::2] if w == who] == arrived[who]


async def test_different_keys_run_in_parallel(url: str, prefix: str) -> None:
    running = 0
    most = 0

    async def job() -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await trio.sleep(0.05)
        running -= 1

    async with open_lanes(cluster=url, lease=LEASE, prefix=prefix) as lanes:
        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(lanes.run, f"k{i}", job)
    assert most == 5


async def test_the_job_is_its_callers_work(url: str, prefix: str) -> None:
    """Rule 6 holds on the cluster path: context variables, exceptions, result."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    async def job() -> str:
        seen = var.get()
        var.set("set in the job")
        return seen

    async def fails() -> None:
        raise KeyboardInterrupt

    async with open_lanes(cluster=url, lease=LEASE, prefix=prefix) as lanes:
        var.set("caller")
        assert await lanes.run("k", job) == "caller"
        assert var.get() == "set in the job"
        with pytest.raises(KeyboardInterrupt):
            await lanes.run("k", fails)
        assert isinstance(await lanes.run("k", fence), int)  # the lane went on


async def test_current_fence_outside_a_cluster_job_is_a_clear_error(url: str, prefix: str) -> None:
    with pytest.raises(LookupError, match="only available inside a job run by cluster Lanes"):
        current_fence()

    async def local() -> int:
        return current_fence()

    async with open_lanes() as lanes:
        with pytest.raises(LookupError, match="a local Lanes job has no lease"):
            await lanes.run("k", local)


async def test_run_multi_holds_every_key_each_with_its_fence(url: str, prefix: str) -> None:
    async def job() -> tuple[int, int]:
        with pytest.raises(LookupError, match="holds several keys"):
            current_fence()
        with pytest.raises(LookupError, match="they hold \\['a', 'b'\\]"):
            current_fence("c")
        return current_fence("a"), current_fence("b")

    async with open_lanes(cluster=url, lease=LEASE, prefix=prefix) as lanes:
        fa, fb = await lanes.run_multi(["b", "a"], job)
        assert fa < fb  # taken in sorted order
        assert await lanes.run("a", fence) > fb


async def test_a_lost_lease_cancels_the_job_and_run_raises_lease_lost(
    url: str, prefix: str
) -> None:
    import coredis

    reached_end = False

    async def job() -> None:
        nonlocal reached_end
        # Someone else's takeover, as after this process paused past its lease.
        async with coredis.Redis.from_url(url, decode_responses=True) as client:
            await client.delete([f"{prefix}:lanes:{{k}}:l"])
        await trio.sleep(LEASE * 5)
        reached_end = True

    async with open_lanes(cluster=url, lease=LEASE, prefix=prefix) as lanes:
        with trio.fail_after(LEASE * 4), pytest.raises(LeaseLost, match="lapsed while the job"):
            await lanes.run("k", job)
        assert not reached_end
        await lanes.run("k", fence)  # the key is usable again


async def test_a_dead_holders_lease_lapses_and_the_next_takes_over(url: str, prefix: str) -> None:
    dead = ClusterLeases(url, lease=LEASE, prefix=prefix)
    async with dead.connected():
        _, first = await dead.acquire("k")  # and never renews or releases: it "died"
    async with open_lanes(cluster=url, lease=LEASE, prefix=prefix) as lanes:
        start = trio.current_time()
        with trio.fail_after(LEASE * 3):
            second = await lanes.run("k", fence)
        waited = trio.current_time() - start
    assert second > first
    assert LEASE * 0.5 < waited < LEASE * 2


async def test_a_waiter_cancelled_gives_its_turn_to_the_next(url: str, prefix: str) -> None:
    order: list[str] = []
    release = trio.Event()

    async def hold() -> None:
        order.append("holder")
        await release.wait()

    came = trio.Event()

    async def job(name: str) -> None:
        order.append(name)
        came.set()

    async with (
        open_lanes(cluster=url, lease=LEASE, prefix=prefix) as a,
        open_lanes(cluster=url, lease=LEASE, prefix=prefix) as b,
        open_lanes(cluster=url, lease=LEASE, prefix=prefix) as c,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(a.run, "k", hold)
        await trio.sleep(0.05)
        gone = trio.CancelScope()
        nursery.start_soon(_in, gone, b, job)
        await trio.sleep(0.05)
        nursery.start_soon(c.run, "k", job, "next")
        await trio.sleep(0.05)
        gone.cancel()
        await trio.sleep(0.05)
        start = trio.current_time()
        release.set()
        with trio.fail_after(LEASE * 3):
            await came.wait()
        handover = trio.current_time() - start
    assert order == ["holder", "next"]
    assert handover < LEASE / 3  # woken by the release, not by its own poll


async def _in(scope: trio.CancelScope, lanes: actors.Lanes, job: object) -> None:
    with scope:
        await lanes.run("k", job, "cancelled")  # type: ignore[arg-type]


def test_bad_options_fail_at_once() -> None:
    with pytest.raises(ValueError, match="Redis URL"):
        ClusterLeases("localhost", lease=1.0, prefix="p")
    with pytest.raises(ValueError, match="lease must be"):
        ClusterLeases("redis://x", lease=0.001, prefix="p")
    with pytest.raises(ValueError, match="prefix"):
        ClusterLeases("redis://x", lease=1.0, prefix="")


# coredis leaves the failed connection's anyio streams to the garbage collector: collect
# them here, where their ResourceWarning is expected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_an_unreachable_redis_is_a_clear_connection_error() -> None:
    from tests.services import free_port

    with pytest.raises(ConnectionError, match="cluster Lanes cannot reach Redis"):
        async with open_lanes(cluster=f"redis://127.0.0.1:{free_port()}/0"):
            pass
    gc.collect()


def test_public_names() -> None:
    assert actors.current_fence is current_fence
    assert actors.LeaseLost is LeaseLost
