"""`Key`: the name of a lane or keyed actor, with helpers for structured keys."""

from __future__ import annotations

from typing import Self


def check_key(key: object, what: str = "key") -> str:
    """Return ``key`` if it is a non-empty ``str``, else raise at the boundary."""
    if not isinstance(key, str):
        raise TypeError(f"{what} must be a str (or actors.Key), got {type(key).__name__}: {key!r}")
    if not key:
        raise ValueError(f"{what} must not be empty")
    return key


class Key(str):
    """A lane key: a ``str`` with helpers to build structured, colon-separated keys.

    >>> Key.namespace("order", "123")
    'order:123'
    >>> Key("order:123").sub("line")
    'order:123:line'
    """

    __slots__ = ()

    def __new__(cls, value: str) -> Self:
        return super().__new__(cls, check_key(value))

    @classmethod
    def namespace(cls, namespace: str, id: str) -> Self:
        """Build ``"namespace:id"``; both parts must be non-empty strings."""
        check_key(namespace, "namespace")
        check_key(id, "id")
        return cls(f"{namespace}:{id}")

    def sub(self, id: str) -> Self:
        """Append a segment: ``Key("order:1").sub("line") == "order:1:line"``."""
        check_key(id, "id")
        return type(self)(f"{self}:{id}")
