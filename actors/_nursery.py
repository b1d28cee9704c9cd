"""The nursery a component owns, without turning the caller's own exception into a group.

Trio wraps every exception leaving a nursery in an `ExceptionGroup`, including one raised by
the body of ``async with open_xxx() as x:``. Users of a component expect their ``ValueError``
back as a ``ValueError``; this helper unwraps exactly that case and nothing else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from supervisors._unwrap import raise_unwrapped


@asynccontextmanager
async def open_component_nursery() -> AsyncIterator[trio.Nursery]:
    """Like `trio.open_nursery`, but the body's own exception leaves unwrapped.

    If the group leaving the nursery holds only the exception the body raised, that exception
    is re-raised as itself (its ``__context__`` kept); any other group is left as it is.
    """
    raised: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            try:
                yield nursery
            except BaseException as exc:
                raised = exc
                raise
    except BaseExceptionGroup as group:
        raise_unwrapped(group, raised)
