"""`Reply`: the one-shot slot an asker, a batched op or a group commit waits on."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from actors._reply import Reply


async def test_an_answer_given_before_the_wait_is_returned_at_a_checkpoint() -> None:
    reply: Reply[int] = Reply()
    reply.succeed(1)
    reply.succeed(2)  # answered already: ignored
    with trio.testing.assert_checkpoints():
        assert await reply.wait() == 1


async def test_a_parked_waiter_is_woken_with_the_answer(autojump_clock: Any) -> None:
    reply: Reply[int] = Reply()
    error = KeyError("nope")
    failing: Reply[int] = Reply()
    async with trio.open_nursery() as nursery:

        async def answer() -> None:
            await trio.sleep(1)
            reply.succeed(5)
            failing.fail(error)

        nursery.start_soon(answer)
        assert await reply.wait() == 5
        with pytest.raises(KeyError) as caught:
            await failing.wait()
        assert caught.value is error
        assert trio.current_time() == 1.0


async def test_run_answers_with_the_functions_result_or_exception() -> None:
    async def double(x: int) -> int:
        return 2 * x

    async def fail() -> int:
        raise ValueError("bad")

    ok: Reply[int] = Reply()
    await ok.run(double, 4)
    assert await ok.wait() == 8
    bad: Reply[int] = Reply()
    await bad.run(fail)
    with pytest.raises(ValueError, match="bad"):
        await bad.wait()


async def test_a_cancelled_waiter_abandons_the_reply_and_the_answer_is_dropped(
    autojump_clock: Any,
) -> None:
    reply: Reply[int] = Reply()
    with trio.move_on_after(1) as scope:
        await reply.wait()
    assert scope.cancelled_caught
    assert reply.abandoned
    reply.succeed(3)  # nobody waits: dropped, no error
    assert reply.abandoned


async def test_wait_shielded_is_not_interrupted_by_a_cancel(autojump_clock: Any) -> None:
    """Like a wait inside ``CancelScope(shield=True)``: the answer is returned, and the cancel
    is raised at the waiter's next checkpoint."""
    reply: Reply[int] = Reply()
    seen: list[object] = []
    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as scope:

            async def cancel_then_answer() -> None:
                await trio.sleep(1)
                scope.cancel()
                await trio.sleep(1)
                reply.succeed(7)

            nursery.start_soon(cancel_then_answer)
            seen.append(await reply.wait_shielded())
            seen.append(trio.current_time())
            await trio.lowlevel.checkpoint()
            seen.append("not reached")  # pragma: no cover
    assert scope.cancelled_caught
    assert seen == [7, 2.0]
    assert not reply.abandoned


async def test_wait_shielded_on_an_answer_given_before_is_not_a_cancel_point() -> None:
    reply: Reply[int] = Reply()
    reply.fail(KeyError("k"))
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(KeyError):
            await reply.wait_shielded()  # cancelled already: still answered, not Cancelled
    assert not scope.cancelled_caught


@pytest.mark.parametrize("park", [False, True], ids=["wait", "park"])
async def test_park_waits_exactly_like_wait_on_an_unanswered_reply(
    autojump_clock: Any, park: bool
) -> None:
    """`park` is `wait` minus the answered-already check: same answers, errors, cancel."""
    from actors._waits import waiting

    class Turn:
        owner: trio.lowlevel.Task | None = None

    turn = Turn()
    me = trio.lowlevel.current_task()

    async def wait(reply: Reply[int]) -> int:
        if park:
            return await reply.park(me, turn)
        return await reply.wait(turn)

    ok: Reply[int] = Reply()
    bad: Reply[int] = Reply()
    error = KeyError("k")
    async with trio.open_nursery() as nursery:

        async def answer() -> None:
            await trio.sleep(1)
            assert waiting[me] is turn  # recorded for the wait-for check while it waits
            ok.succeed(5)
            await trio.sleep(1)
            bad.fail(error)

        nursery.start_soon(answer)
        assert await wait(ok) == 5
        with pytest.raises(KeyError) as caught:
            await wait(bad)
        assert caught.value is error
    assert trio.current_time() == 2.0
    assert me not in waiting
    dropped: Reply[int] = Reply()
    with trio.move_on_after(1) as scope:
        await wait(dropped)
    assert scope.cancelled_caught
    assert dropped.abandoned
    assert me not in waiting
