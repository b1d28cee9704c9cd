"""Helpers shared by the bus tests."""

from __future__ import annotations

from collections import Counter

import attrs

from actors.bus import Event, EventKind, JobContext


@attrs.define
class Recorder:
    """An observer that keeps every event."""

    events: list[Event] = attrs.field(factory=list)

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def kinds(self) -> list[EventKind]:
        return [e.kind for e in self.events]

    def of(self, kind: EventKind) -> list[Event]:
        return [e for e in self.events if e.kind == kind]

    def count(self) -> Counter[EventKind]:
        return Counter(self.kinds())


async def noop(ctx: JobContext) -> None:
    pass
