"""The worker command's graceful stop: a broker that stops handing out jobs on request and
knows which of its deliveries are still unsettled.

`StoppingBroker` wraps the durable broker a ``trio-lanes worker`` runs on. After `stop`, no
worker task is handed a new job (one its ``get`` claimed meanwhile goes straight back to the
broker through `BrokerQueue.release`, so it counts as delivered once: its next
``ctx.delivery`` is one higher though it never ran, the safe side for an idempotency check),
`running` counts the jobs handed out and not yet acknowledged, retried or released, and
`close` gives those back (due now, for any worker) before the wrapped broker closes: the jobs
a stop interrupted run again elsewhere, with ``ctx.delivery`` one higher.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio

from .bus import Broker, BrokerQueue, Delivery, QueuedJob, QueueStats

log = logging.getLogger("actors.cli")


class StoppingQueue:
    """One queue of a `StoppingBroker`: the wrapped queue, gated and tracked."""

    def __init__(self, inner: BrokerQueue, broker: StoppingBroker) -> None:
        self.name = inner.name
        self._inner = inner
        self._broker = broker
        self.held: dict[str, Delivery] = {}
        """Deliveries handed to a worker task and not settled yet, by receipt."""

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._inner.serve(task_status=task_status)

    async def put(self, jobs: Sequence[QueuedJob], *, delay: float = 0.0) -> None:
        await self._inner.put(jobs, delay=delay)

    async def put_many(self, jobs: Sequence[tuple[QueuedJob, float]]) -> None:
        await self._inner.put_many(jobs)

    async def get(self) -> Delivery:
        while True:
            if self._broker.stopping:
                await trio.sleep_forever()
            delivery = await self._inner.get()
            if not self._broker.stopping:
                self.held[delivery.receipt] = delivery
                return delivery
            with trio.CancelScope(shield=True):
                await self._inner.release([delivery], started=False)

    async def ack(self, delivery: Delivery) -> None:
        await self._inner.ack(delivery)
        self.held.pop(delivery.receipt, None)

    async def retry(self, delivery: Delivery, job: QueuedJob, *, delay: float) -> None:
        await self._inner.retry(delivery, job, delay=delay)
        self.held.pop(delivery.receipt, None)

    async def release(self, deliveries: Sequence[Delivery], *, started: bool = True) -> None:
        await self._inner.release(deliveries, started=started)
        for delivery in deliveries:
            self.held.pop(delivery.receipt, None)

    async def discard(self, batch_id: str) -> list[QueuedJob]:
        return await self._inner.discard(batch_id)

    async def stats(self) -> QueueStats:
        return await self._inner.stats()


class StoppingBroker:
    """A durable broker whose queues stop handing out jobs after `stop` (see the module)."""

    def __init__(self, inner: Broker) -> None:
        self.inner = inner
        self.durable = inner.durable
        self.stopping = False
        self._queues: dict[str, StoppingQueue] = {}

    def __repr__(self) -> str:
        return f"<StoppingBroker {self.inner!r}>"

    def stop(self) -> None:
        """Hand out no more jobs."""
        self.stopping = True

    def running(self) -> int:
        """Jobs handed to a worker task and not settled yet."""
        return sum(len(queue.held) for queue in self._queues.values())

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        """Give back the unsettled deliveries (jobs a stop interrupted), then close."""
        with trio.CancelScope(shield=True):
            for queue in self._queues.values():
                held = list(queue.held.values())
                if not held:
                    continue
                try:
                    await queue.release(held)
                except Exception as exc:
                    log.warning(
                        "could not give %d jobs of queue %r back to %r (%s); they run again "
                        "once their lease lapses",
                        len(held),
                        queue.name,
                        self.inner,
                        exc,
                    )
                else:
                    log.warning(
                        "gave %d unfinished jobs of queue %r back to the broker",
                        len(held),
                        queue.name,
                    )
        await self.inner.close()  # not shielded here: see open_bus

    def queue(self, name: str) -> StoppingQueue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = StoppingQueue(self.inner.queue(name), self)
        return queue
