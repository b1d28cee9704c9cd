"""What the chain and batch coordinator registries share: a keyed actor per chain or batch,
the message a worker tells it, and what only this process knows about each one."""

from __future__ import annotations

import logging
from typing import Generic, TypeVar

import attrs
import trio

from .._keyed import KeyedActors, KeyedStats, open_keyed
from ._broker import Delivery
from ._model import QueuedJob
from ._parts import Parts
from ._rules import ChainStep, Outcome

log = logging.getLogger("actors.bus")

M = TypeVar("M")
R = TypeVar("R")
L = TypeVar("L")


@attrs.define(eq=False, slots=True)
class Done:
    """Worker -> coordinator: a chain's or batch's job has its final outcome."""

    delivery: Delivery
    outcome: Outcome
    error: BaseException | None
    recorded: bool = False
    """A chain step the worker has recorded already (`Chains.finish`'s fast path), as ``step``."""
    step: ChainStep | None = None
    write_error: Exception | None = None
    """The step's first write failed with this (`Chains.finish`'s fast path): retry it."""

    @property
    def job(self) -> QueuedJob:
        return self.delivery.job


class Coordinators(Generic[M, R, L]):
    """A registry of coordinators (a supervisor child of the bus): keyed by chain or batch
    id, each handling its messages one at a time, with this process's ``L`` per id."""

    kind = "job"

    def __init__(self, parts: Parts, idle_timeout: float) -> None:
        self._parts = parts
        self._idle_timeout = idle_timeout
        self._registry: KeyedActors[M, R] | None = None
        self._local: dict[str, L] = {}

    @property
    def _keyed(self) -> KeyedActors[M, R]:
        registry = self._registry
        assert registry is not None, "the coordinators are not being served"
        return registry

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with open_keyed(
            self._handle,
            idle_timeout=self._idle_timeout,
            name=f"bus {self.kind} coordinators",
            on_error=self._failed,
        ) as keyed:
            self._registry = keyed
            task_status.started()
            await trio.sleep_forever()

    def adopt(self, owner_id: str, local: L) -> None:
        """One this process dispatched: keep its callables (before its first job runs)."""
        self._local[owner_id] = local

    def forget(self, owner_id: str) -> None:
        self._local.pop(owner_id, None)

    #: Messages handled without the registry (`Chains.finish`'s, `Batches.settle_now`'s fast
    #: paths), counted as handled.
    handled_inline = 0
    #: Messages a turn took beside the one it was started for (`KeyedActors.take_pending`),
    #: counted as handled too: ``messages_total`` counts outcomes, however they were grouped.
    handled_taken = 0

    def stats(self) -> KeyedStats:
        stats = self._keyed.stats()
        extra = self.handled_inline + self.handled_taken
        if not extra:
            return stats
        return attrs.evolve(stats, messages_total=stats.messages_total + extra)

    def _failed(self, key: str, message: M, exc: BaseException) -> None:
        log.error("bus %s coordinator %r failed handling %r", self.kind, key, message, exc_info=exc)

    async def _handle(self, owner_id: str, message: M) -> R:
        raise NotImplementedError
