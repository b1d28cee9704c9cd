"""`Handlers`: job handlers, middleware and observers, declared before any bus opens.

::

    handlers = Handlers(middleware=[FailOnError(is_permanent)], observers=[metrics])

    @handlers.handler("emails:send")
    async def send(ctx: JobContext) -> None: ...

    async with open_bus(handlers=handlers) as bus: ...

A bus copies what it is given when it opens; registering on the bus later (`Bus.register`)
adds to that bus only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from .._checks import check_async_fn
from ._events import Event
from ._middleware import Middleware, check_middleware
from ._model import JobContext, check_text

Handler = Callable[[JobContext], Awaitable[object]]
Observer = Callable[[Event], object]
H = TypeVar("H", bound=Handler)


def check_observers(observers: object) -> tuple[Observer, ...]:
    if isinstance(observers, str) or not isinstance(observers, Sequence):
        raise TypeError(f"observers must be a list of callables, got {observers!r}")
    for observer in observers:
        if not callable(observer):
            raise TypeError(f"observers must be callables taking an Event, got {observer!r}")
    return tuple(observers)


def add_handler(table: dict[str, Handler], job_type: str, handler: Handler) -> None:
    """The one registration rule: a text job type, an async handler, once per type."""
    check_text(job_type, "job type")
    check_async_fn(handler, "handler")
    if job_type in table:
        raise ValueError(f"job type {job_type!r} already has a handler; register it once")
    table[job_type] = handler


def handler_decorator(register: Callable[[str, Handler], None], job_type: str) -> Callable[[H], H]:
    check_text(job_type, "job type")

    def decorate(fn: H) -> H:
        register(job_type, fn)
        return fn

    return decorate


class Handlers:
    """What a bus runs: a handler per job type, the middleware around them, the observers.

    Declare one at import time, hand it to ``open_bus(handlers=...)`` (or a worker process),
    and to ``FakeBus(handlers=...)`` in tests so the fake refuses what the bus would.
    """

    def __init__(
        self,
        handlers: Mapping[str, Handler] | None = None,
        *,
        middleware: Sequence[Middleware] = (),
        observers: Sequence[Observer] = (),
    ) -> None:
        self._table: dict[str, Handler] = {}
        self.middleware: tuple[Middleware, ...] = check_middleware(middleware)
        """Wraps every attempt, the first outermost."""
        self.observers: tuple[Observer, ...] = check_observers(observers)
        """Get every `Event` (see `open_bus` for how async ones are fed)."""
        if handlers is not None:
            if not isinstance(handlers, Mapping):
                raise TypeError(f"handlers must be a dict of job type -> handler, got {handlers!r}")
            for job_type, fn in handlers.items():
                self.register(job_type, fn)

    def __repr__(self) -> str:
        return f"<Handlers {sorted(self._table)}>"

    def __contains__(self, job_type: object) -> bool:
        return job_type in self._table

    @property
    def job_types(self) -> list[str]:
        """The registered job types, sorted."""
        return sorted(self._table)

    def register(self, job_type: str, handler: Handler) -> None:
        """Run ``await handler(ctx)`` for jobs of ``job_type``; one handler per type."""
        add_handler(self._table, job_type, handler)

    def handler(self, job_type: str) -> Callable[[H], H]:
        """Decorator form of `register`: ``@handlers.handler("emails:send")``."""
        return handler_decorator(self.register, job_type)

    def table(self) -> dict[str, Handler]:
        """A copy of the job type -> handler table."""
        return dict(self._table)

    @classmethod
    def merged(
        cls,
        handlers: Handlers | None,
        middleware: Iterable[Middleware],
        observers: Iterable[Observer],
    ) -> Handlers:
        """``handlers`` (if any) followed by more middleware and observers, as a new value."""
        merged = cls()
        if handlers is not None:
            if not isinstance(handlers, Handlers):
                raise TypeError(f"handlers must be an actors.bus.Handlers, got {handlers!r}")
            merged._table = handlers.table()
            merged.middleware = handlers.middleware
            merged.observers = handlers.observers
        merged.middleware += check_middleware(list(middleware))
        merged.observers += check_observers(list(observers))
        return merged
