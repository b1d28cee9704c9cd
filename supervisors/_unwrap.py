"""Give a block's own exception back as itself, not in the group Trio's nursery wraps it in.

Every component owns a nursery, and Trio wraps whatever leaves a nursery in an exception
group, the body's own ``ValueError`` included. Users of ``async with open_xxx()`` expect that
``ValueError`` back as a ``ValueError``; a group that holds anything else stays a group.
"""

from __future__ import annotations

from typing import NoReturn


def raise_unwrapped(
    group: BaseExceptionGroup[BaseException], raised: BaseException | None
) -> NoReturn:
    """Raise ``raised`` if ``group`` is only Trio's wrapper around it; else raise ``group``.

    Call it in ``except BaseExceptionGroup as group:`` around the nursery, with the exception
    the block itself raised (or None). ``raised.__context__`` is kept as it was.
    """
    if raised is None or len(group.exceptions) != 1 or group.exceptions[0] is not raised:
        raise group
    context = raised.__context__
    try:
        raise raised  # the group was only Trio's wrapper around this exception
    finally:
        raised.__context__ = context
