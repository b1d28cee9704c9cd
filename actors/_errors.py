"""The error hierarchy of the `actors` package.

Every error subclasses `ActorsError` and the builtin (or Trio) error it refines,
so ``except ValueError`` or ``except trio.ClosedResourceError`` keep working.
"""

from __future__ import annotations

import trio


class ActorsError(Exception):
    """Base class of every error raised by `actors` itself (not by user code)."""


class ComponentClosed(trio.ClosedResourceError, ActorsError):
    """A component was used after its ``async with`` block ended (or while it shuts down).

    Open the component again, or move the call inside its block.
    """


class ActorCrashed(ActorsError, RuntimeError):
    """An actor's own machinery failed (a bug in trio-lanes, not in your job).

    The message it was handling fails with this error, ``__cause__`` holds the
    original exception, and the actor is restarted for the messages after it.
    """


class WouldDeadlock(ActorsError, RuntimeError):
    """A task asked a key whose turn it already holds (say, a lane job running its own lane).

    The call would wait for itself forever, so it fails at once. Call the function directly.
    """


class LeaseLost(ActorsError, RuntimeError):
    """A lease on a key (a cluster lane, a lane partition) lapsed and may be someone else's.

    The process held it too long without renewing (a long pause, a frozen VM, a lost
    connection): its fencing token is stale and the work it protected must not take effect.
    A cluster `Lanes` job whose lease is lost is cancelled and its `run` raises this; a
    broker refuses a late acknowledgement with it.
    """
