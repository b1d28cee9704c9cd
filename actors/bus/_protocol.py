"""`BusLike`: what code that dispatches needs from a bus; `Bus` and `FakeBus` both satisfy it.

Type your own code against it (``async def signup(bus: BusLike) -> None``) and hand it the real
bus in production and a `FakeBus` in tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from ._builders import BatchBuilder, ChainBuilder
from ._handlers import Handler
from ._model import BatchState, ChainState, DispatchResult, Job
from ._rules import FailedJob


@runtime_checkable
class BusLike(Protocol):
    """The surface of a bus that dispatching code uses."""

    def register(self, job_type: str, handler: Handler) -> None: ...

    def handler(self, job_type: str) -> Callable[[Any], Any]: ...

    async def dispatch(self, job: Job) -> DispatchResult: ...

    async def dispatch_many(self, jobs: Iterable[Job]) -> list[DispatchResult]: ...

    def chain(self, *jobs: Job) -> ChainBuilder: ...

    def batch(self, *jobs: Job) -> BatchBuilder: ...

    async def wait_idle(self) -> None: ...

    async def find_batch(self, batch_id: str) -> BatchState: ...

    async def find_chain(self, chain_id: str) -> ChainState: ...

    async def cancel_batch(self, batch_id: str, *, abandon: bool = False) -> BatchState: ...

    async def cancel_chain(self, chain_id: str) -> ChainState: ...

    async def prune(self, before: datetime) -> int: ...

    async def failed_jobs(self) -> list[FailedJob]: ...

    async def retry_failed(self, job_id: str) -> DispatchResult: ...
