from __future__ import annotations

import pytest

from actors import Key


def test_namespace_and_sub() -> None:
    key = Key.namespace("order", "123")
    assert key == "order:123"
    assert isinstance(key, Key)
    assert key.sub("line") == "order:123:line"
    assert isinstance(key.sub("line"), Key)
    assert Key("order:123").sub("line").sub("7") == "order:123:line:7"


def test_key_is_a_str() -> None:
    assert isinstance(Key("a"), str)
    assert {"a": 1}[Key("a")] == 1
    assert Key("a") == "a"


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: Key.namespace("", "1"), ValueError),
        (lambda: Key.namespace("order", ""), ValueError),
        (lambda: Key(""), ValueError),
        (lambda: Key("a").sub(""), ValueError),
        (lambda: Key.namespace(1, "1"), TypeError),  # type: ignore[arg-type]
        (lambda: Key.namespace("order", 123), TypeError),  # type: ignore[arg-type]
        (lambda: Key(None), TypeError),  # type: ignore[arg-type]
        (lambda: Key("a").sub(b"x"), TypeError),  # type: ignore[arg-type]
    ],
)
def test_bad_parts_fail_at_once(call: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="must"):
        call()  # type: ignore[operator]
