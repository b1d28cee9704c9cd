"""Unwrap the exception group a component's own nursery puts around a single error.

Every component owns a nursery, and Trio wraps whatever leaves a nursery in an exception
group. When exactly one exception came out (say, the user's ``ValueError`` from the body of
``async with open_lanes()``), the caller should be able to catch it as itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def single_errors_unwrapped() -> Iterator[None]:
    """Re-raise a group of exactly one exception as that exception; leave larger groups alone."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        error = group.exceptions[0]
        context = error.__context__
        try:
            raise error
        finally:
            error.__context__ = context
            del error, group
