"""A pytest plugin (registered as ``trio_lanes_bus``) with a ``fake_bus`` fixture.

Installed with trio-lanes, so any test may ask for it::

    async def test_signup_sends_welcome_mail(fake_bus: FakeBus) -> None:
        await signup(fake_bus, "a@b")
        fake_bus.assert_dispatched("emails:welcome")
"""

from __future__ import annotations

import pytest

from ._fake import FakeBus


@pytest.fixture
def fake_bus() -> FakeBus:
    """A fresh `actors.bus.FakeBus` for each test."""
    return FakeBus()
