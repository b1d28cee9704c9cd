"""Random crashes, exits and operations against a model of the OTP rules.

The model says, after every step, which children are listed and running, how often each was
restarted, and whether the restart intensity is exceeded; the supervisor must agree, and the
children must have seen exactly as many restarts as it counted.

Every child takes no time to stop, so the model needs no clock for stops: a "brutal" one has
``shutdown=0`` and is cancelled at once, a "watching" one has a 10 s grace but returns as soon
as its `supervisors.shutting_down` event is set. A stop that forgot to set that event would
leave a watching child running for 10 s, and the supervisor would disagree with the model.
"""

from __future__ import annotations

import functools
from typing import Literal

import attrs
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisors import RestartIntensityExceeded, RestartType, Strategy, open_supervisor
from tests.supervisors.helpers import Crew, infos

Op = Literal["crash", "finish", "terminate", "restart"]
Stops = Literal["brutal", "watching"]


@attrs.define
class ModelChild:
    id: str
    restart: RestartType
    listed: bool = True
    running: bool = True
    restarts: int = 0


@attrs.define
class Model:
    strategy: Strategy
    max_restarts: int
    max_seconds: float
    children: list[ModelChild]
    restart_times: list[float] = attrs.field(factory=list)

    def applies(self, op: Op, i: int) -> bool:
        child = self.children[i]
        if op in ("crash", "finish"):
            return child.listed and child.running
        return child.listed

    def step(self, op: Op, i: int, now: float) -> bool:
        """Apply ``op`` to child ``i`` at ``now``; True if the supervisor must give up."""
        child = self.children[i]
        if op == "terminate":
            child.running = False
            child.listed = child.restart != "temporary"
            return False
        if op == "restart":
            child.running = True
            child.restarts += 1
            return False
        child.running = False
        if child.restart == "temporary" or (child.restart == "transient" and op == "finish"):
            child.listed = child.restart != "temporary"
            return False
        self.restart_times = [t for t in self.restart_times if t >= now - self.max_seconds]
        self.restart_times.append(now)
        if len(self.restart_times) > self.max_restarts:
            return True
        for j, other in enumerate(self.children):
            in_group = other is child or (
                other.listed
                and other.running
                and (self.strategy == "one_for_all" or (self.strategy == "rest_for_one" and j > i))
            )
            if not in_group:
                continue
            if other.restart == "temporary":
                other.running = other.listed = False
            else:
                other.running = True
                other.restarts += 1
        return False

    def infos(self) -> list[tuple[str, bool, int]]:
        return [(c.id, c.running, c.restarts) for c in self.children if c.listed]


@attrs.frozen
class Scenario:
    strategy: Strategy
    restarts: list[RestartType]
    stops: list[Stops]
    max_restarts: int
    max_seconds: float
    steps: list[tuple[Op, int, int]]  # (operation, child index, seconds to wait before it)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(1, 4))
    return Scenario(
        strategy=draw(st.sampled_from(["one_for_one", "one_for_all", "rest_for_one"])),
        restarts=draw(
            st.lists(
                st.sampled_from(["permanent", "transient", "temporary"]), min_size=n, max_size=n
            )
        ),
        stops=draw(st.lists(st.sampled_from(["brutal", "watching"]), min_size=n, max_size=n)),
        max_restarts=draw(st.integers(0, 3)),
        max_seconds=draw(st.sampled_from([1.0, 2.0, 3.0])),
        steps=draw(
            st.lists(
                st.tuples(
                    st.sampled_from(["crash", "crash", "finish", "terminate", "restart"]),
                    st.integers(0, n - 1),
                    st.integers(0, 2),
                ),
                max_size=15,
            )
        ),
    )


async def play(scenario: Scenario) -> None:
    ids = [f"c{i}" for i in range(len(scenario.restarts))]
    model = Model(
        scenario.strategy,
        scenario.max_restarts,
        scenario.max_seconds,
        [ModelChild(cid, restart) for cid, restart in zip(ids, scenario.restarts, strict=True)],
    )
    crew = Crew()
    expected_give_up: float | None = None
    gave_up: float | None = None
    try:
        async with open_supervisor(
            scenario.strategy, scenario.max_restarts, scenario.max_seconds
        ) as sup:
            for cid, restart, stops in zip(ids, scenario.restarts, scenario.stops, strict=True):
                if stops == "brutal":
                    await sup.start_child(cid, crew.child, cid, restart=restart, shutdown=0)
                else:
                    watching = functools.partial(crew.child, cleanup=0.0)
                    await sup.start_child(cid, watching, cid, restart=restart, shutdown=10)
            for op, i, wait in scenario.steps:
                await trio.sleep(wait)
                if not model.applies(op, i):
                    continue
                if model.step(op, i, trio.current_time()):
                    expected_give_up = trio.current_time()
                if op == "crash":
                    crew.crash(ids[i])
                elif op == "finish":
                    crew.finish(ids[i])
                elif op == "terminate":
                    await sup.terminate_child(ids[i])
                else:
                    await sup.restart_child(ids[i])
                await trio.testing.wait_all_tasks_blocked()
                assert expected_give_up is None, "the supervisor should have given up"
                assert infos(sup) == model.infos()
            await sup.shutdown()
    except RestartIntensityExceeded:
        gave_up = trio.current_time()
    assert gave_up == expected_give_up
    assert crew.live == 0
    for child in model.children:
        assert len(crew.starts(child.id)) == child.restarts + 1, child.id


@settings(deadline=None, max_examples=250)
@given(scenarios())
def test_supervisor_follows_the_model(scenario: Scenario) -> None:
    trio.run(play, scenario, clock=trio.testing.MockClock(autojump_threshold=0))
