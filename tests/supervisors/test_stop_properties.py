"""Property: whatever mix of children and whatever stops them, the stop follows trap_exit.

Children are stopped last started first; a plain child is cancelled at once; a trapping child
returns after its cleanup if that fits in its grace, else it is cancelled when the grace ends
(``shutdown=0``: at once). So the time a stop takes is the sum, over the trapping children,
of ``min(cleanup, grace)``, and nothing else.
"""

from __future__ import annotations

import functools
import math

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisors import RestartIntensityExceeded, open_supervisor
from tests.supervisors.helpers import Crew

# (traps, cleanup, grace): cleanups and graces never tie, so no outcome is a race.
specs = st.tuples(
    st.booleans(),
    st.sampled_from([0.0, 0.25, 1.5, 3.5, math.inf]),
    st.sampled_from([0.0, 1.0, 2.0, math.inf]),
).filter(lambda spec: not (spec[0] and spec[1] == math.inf and spec[2] == math.inf))


async def crash_after(seconds: float, *, task_status: trio.TaskStatus[None]) -> None:
    task_status.started()
    await trio.sleep(seconds)
    raise ConnectionError("down")


async def scenario(children: list[tuple[bool, float, float]], how: str) -> None:
    crew = Crew()

    async def run() -> None:
        with trio.move_on_after(1 if how == "cancel" else math.inf):
            async with open_supervisor(max_restarts=0) as sup:
                for n, (traps, cleanup, grace) in enumerate(children):
                    fn = functools.partial(crew.child, cleanup=cleanup) if traps else crew.child
                    await sup.start_child(f"c{n}", fn, f"c{n}", shutdown=grace)
                if how == "give_up":
                    await sup.start_child("crashy", crash_after, 1.0)
                    await trio.sleep_forever()
                await trio.sleep(1)
                await sup.shutdown()

    if how == "give_up":
        try:
            await run()
        except RestartIntensityExceeded:
            pass
        else:  # pragma: no cover - fails the test
            raise AssertionError("the supervisor did not give up")
    else:
        await run()

    expected = []
    now = 1.0
    for n in reversed(range(len(children))):
        traps, cleanup, grace = children[n]
        if traps and grace > 0 and cleanup < grace:
            now += cleanup
            expected.append((now, "graceful", f"c{n}"))
        else:
            if traps:
                now += grace
            expected.append((now, "cancelled", f"c{n}"))
    assert [entry for entry in crew.log if entry[1] in ("graceful", "cancelled")] == expected
    assert trio.current_time() == now
    assert crew.live == 0


@settings(max_examples=150, deadline=None)
@given(
    children=st.lists(specs, min_size=1, max_size=8),
    how=st.sampled_from(["shutdown", "cancel", "give_up"]),
)
def test_any_stop_of_any_mix_follows_trap_exit_last_started_first(
    children: list[tuple[bool, float, float]], how: str
) -> None:
    trio.run(scenario, children, how, clock=trio.testing.MockClock(autojump_threshold=0))
