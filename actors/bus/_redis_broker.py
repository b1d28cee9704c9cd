"""`RedisBroker`: durable queues on Redis Streams with a consumer group, through coredis.

Per queue, two keys (in one hash slot): a stream of ready jobs read by the consumer group
``workers``, and a sorted set of delayed and retrying jobs scored by their due time (Redis's
own clock, ``TIME``, so every process agrees). Each open broker is one consumer of the group.
Every step that touches more than one thing is one Lua script, so a hard kill can never
leave it half-done, and no step takes a lock that a dead process could leave behind.

- **put**: one script per chunk XADDs the jobs (or ZADDs them, due ``TIME`` + delay).
- **promote** (`serve`): a script moves due jobs from the sorted set to the stream; any
  process may run it at any time (it is atomic), so none has to own the job.
- **claim** (``get``): ``XREADGROUP COUNT n BLOCK`` puts up to n entries in this consumer's
  pending list (PEL): that is the lease, and its age is the entry's idle time.
- **heartbeat** (`serve`): every ``visibility_timeout / 3`` a script resets the idle time of
  the entries this process holds (``XCLAIM ... JUSTID``, which does not count a delivery),
  only where this consumer still owns them.
- **redelivery**: ``XAUTOCLAIM`` (atomic) takes entries idle longer than the visibility
  timeout for this consumer; their delivery count is the PEL's (``XPENDING``), read in the
  same script. A delayed job sits in the sorted set, not in any PEL, so no lease can lapse
  on it: it is never delivered before its time, whatever its delay.
- **ack**: concurrent acks share one script call (``XACK`` + ``XDEL``, so the stream holds
  only unacknowledged entries and its memory stays bounded). Idempotent.
- **retry**: one script ``XACK``\\ s + ``XDEL``\\ s the entry and adds the next attempt to the
  sorted set, only if the entry was still pending (a late retry after another worker settled
  it does nothing).
- **release**: one script re-adds the entries this consumer still owns to the stream (due
  now), keeping their delivery count in the entry, and removes the old ones.
- **discard** (a cancelled batch): one script removes the batch's delayed jobs, its stream
  entries past the group's last delivered id (handed to nobody) and those prefetched here;
  it reads the backlog, so it costs in proportion to the jobs waiting.

A lost connection (Redis restarted, or still loading its data) is retried with backoff on
every call (put, claim, ack, retry, release, heartbeat, promote, stats), each retry logged,
for up to ``reconnect_timeout`` seconds (then a `ConnectionError` naming the server), so a
restart shows as a pause, not an error. A worker's claims and its promotion of due delayed
jobs never give up: a worker outlives a server outage and goes on once it is back (it logs a
WARNING on every failed try). Every call is safe to repeat: a script whose reply was
lost but that ran does nothing the second time (ack, retry, release), or, for a put, queues
its jobs twice (at least once, never lost). Durability is the server's: run it with
``appendonly yes`` (the stream, the group and its PEL then survive a restart;
``appendfsync everysec`` may lose the last second on power loss, ``always`` loses nothing).

Lane jobs: a list per lane, one token per lane in the stream, fenced; see `_redis_lanes`.
"""

from __future__ import annotations

import contextlib
import math
import secrets
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from . import _redis_lanes as lanes
from . import _redis_scripts as scripts
from . import _redis_util as util
from ._broker import Delivery, QueueStats, decode_job, put_grouped
from ._leased import (
    DEFAULT_MAX_PAYLOAD,
    Coalescer,
    LeasedQueue,
    LeaseOptions,
    encode_jobs,
    log,
)
from ._model import QueuedJob, check_seconds
from ._redis_util import coredis_module as _coredis
from ._redis_util import fields, is_connection_error, leaves, reconnecting

if TYPE_CHECKING:
    import coredis

T = TypeVar("T")

GROUP = "workers"

#: A consumer that holds nothing and was idle this many visibility timeouts is reaped.
_REAP_AFTER_LEASES = 10

#: Jobs per script call on put (keeps each call short, so Redis serves others in between).
_PUT_CHUNK = 1000


class RedisBroker:
    """Durable queues on one Redis server (Streams + consumer groups), for many hosts.

    ``RedisBroker("redis://localhost:6379/0")``. ``visibility_timeout``: how long a job
    delivered to a process that stops renewing its lease (it died) stays leased before another
    worker takes it over. ``claim_batch``: most entries read at once. ``poll_interval``: the
    longest a read blocks, and how often due delayed jobs are moved to their stream.
    ``max_payload``: the largest encoded job accepted (bytes). ``prefix``: of every key.
    ``reconnect_timeout``: how long a call retries while the server is unreachable.
    """

    durable = True

    def __init__(
        self,
        url: str,
        *,
        visibility_timeout: float = 30.0,
        claim_batch: int = 100,
        poll_interval: float = 0.25,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        prefix: str = "trio-lanes",
        connect_timeout: float = 5.0,
        reconnect_timeout: float = 60.0,
    ) -> None:
        if not isinstance(url, str) or "://" not in url:
            raise ValueError(
                f'url must be a Redis URL like "redis://localhost:6379/0", got {url!r}'
            )
        self.url = url
        options = LeaseOptions.check(visibility_timeout, poll_interval, max_payload, claim_batch)
        self.visibility_timeout = options.visibility_timeout
        self.poll_interval = options.poll_interval
        self.max_payload = options.max_payload
        self.claim_batch = options.claim_batch
        self.prefix = prefix
        self.consumer = ""
        self._connect_timeout = connect_timeout
        self.reconnect_timeout = check_seconds(reconnect_timeout, "reconnect_timeout")
        _coredis()
        self._client: coredis.Redis[str] | None = None
        self._stack: AsyncExitStack | None = None
        self._queues: dict[str, RedisBrokerQueue] = {}
        self.scripts: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<RedisBroker {self.url!r}{'' if self._client else ' (closed)'}>"

    @property
    def client(self) -> coredis.Redis[str]:
        if self._client is None:
            raise RuntimeError(f"{self!r} is not open; the bus opens it (await broker.open())")
        return self._client

    def unreachable(self, exc: BaseException) -> ConnectionError:
        return util.unreachable(self.url, exc)

    async def call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """``await fn()``, retried while the server is unreachable (see the module doc)."""
        return await reconnecting(what, self.url, self.reconnect_timeout, fn)

    async def open(self) -> None:
        """Connect and check the server answers; a clear `ConnectionError` if it does not."""
        if self._client is not None:
            await trio.lowlevel.checkpoint()
            return
        client: coredis.Redis[str] = _coredis().Redis.from_url(
            self.url,
            decode_responses=True,
            connect_timeout=self._connect_timeout,
        )
        stack = AsyncExitStack()
        try:
            await stack.enter_async_context(client)
            with trio.fail_after(self._connect_timeout):
                await client.ping()
        except BaseException as exc:
            await stack.aclose()
            if isinstance(exc, trio.TooSlowError) or is_connection_error(exc):
                raise self.unreachable(leaves(exc)[0]) from exc
            raise
        self.consumer = secrets.token_hex(8)
        self._client, self._stack = client, stack
        self.scripts = {
            name: client.register_script(text)
            for name, text in {
                "put": scripts.PUT,
                "promote": scripts.PROMOTE,
                "ack": scripts.ACK,
                "retry": scripts.RETRY,
                "heartbeat": scripts.HEARTBEAT,
                "release": scripts.RELEASE,
                "reclaim": scripts.RECLAIM,
                "stats": scripts.STATS,
                "discard": scripts.DISCARD,
                "reap": scripts.REAP,
                **lanes.SCRIPTS,
            }.items()
        }

    async def close(self) -> None:
        """Give back prefetched entries never handed out, and disconnect.

        Call it from the task that called `open` (coredis's pool runs its connections in a
        task group entered there), as ``async with`` nesting would.
        """
        if self._client is None or self._stack is None:
            await trio.lowlevel.checkpoint()
            return
        with trio.CancelScope(shield=True):
            for queue in self._queues.values():
                buffered = queue._take_buffer()
                if not buffered:
                    continue
                try:
                    with trio.fail_after(self._connect_timeout):  # not the whole reconnect wait
                        await queue.give_back(buffered, uncount=1)
                except (ConnectionError, trio.TooSlowError) as exc:
                    log.warning(
                        "Redis broker %s: could not give back %d jobs on close (%s); they "
                        "return when their lease lapses",
                        self.url,
                        len(buffered),
                        exc,
                    )
        stack, self._stack, self._client = self._stack, None, None
        await stack.aclose()

    def queue(self, name: str) -> RedisBrokerQueue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = RedisBrokerQueue(self, name)
        return queue


class RedisBrokerQueue(LeasedQueue):
    """One queue of a `RedisBroker`: a stream and a sorted set of delayed jobs."""

    def __init__(self, broker: RedisBroker, name: str) -> None:
        super().__init__(name, claim_batch=broker.claim_batch)
        self._broker = broker
        tag = f"{broker.prefix}:{{{name}}}"
        self.stream = f"{tag}:stream"
        self.delayed = f"{tag}:delayed"
        self.epochs, self.lane_prefix = f"{tag}:lanes", f"{tag}:lane:"  # see _redis_lanes
        self._group_ready = False
        self._cursor = "0-0"
        self._last_reclaim = -math.inf
        self._acks: Coalescer[str] = Coalescer(self._ack_many)
        self._lane_acks = lanes.LaneAcks(self)
        #: Puts due now from concurrent dispatches, one script call for all of them.
        self._puts: Coalescer[list[tuple[str, str]]] = Coalescer(self._put_many)

    def __repr__(self) -> str:
        return f"<RedisBrokerQueue {self.name!r} of {self._broker!r}>"

    async def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        broker = self._broker
        return await broker.call(name, lambda: broker.scripts[name](keys=keys, args=args))

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        client = self._broker.client

        async def create() -> None:
            # made already by another process (or before a restart): fine
            with contextlib.suppress(_coredis().exceptions.StreamDuplicateConsumerGroupError):
                await client.xgroup_create(self.stream, GROUP, "0", mkstream=True)

        await self._broker.call("create group", create)
        self._group_ready = True

    def _group_lost(self, exc: BaseException) -> bool:
        """The consumer group is gone (a server that restarted empty): make it again on the
        next call. False for any other error."""
        errors = _coredis().exceptions
        if not (isinstance(exc, errors.StreamConsumerGroupError) or "NOGROUP" in str(exc)):
            return False
        log.warning(
            "Redis broker %s: the consumer group of %s is gone (server reset?); recreating",
            self._broker.url,
            self.stream,
        )
        self._group_ready = False
        return True

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Move due delayed jobs to the stream, and renew this process's leases."""
        broker = self._broker
        await self._ensure_group()
        task_status.started()
        beat_every = broker.visibility_timeout / 3
        next_beat = trio.current_time() + beat_every
        reap_after = _REAP_AFTER_LEASES * broker.visibility_timeout
        next_reap = trio.current_time()
        backoff = 0.05
        while True:
            try:
                await self._ensure_group()
                moved, wait_ms = await self._script(
                    "promote", [self.stream, self.delayed], [_PUT_CHUNK]
                )
                if trio.current_time() >= next_beat:
                    await self.heartbeat()
                    next_beat = trio.current_time() + beat_every
                if trio.current_time() >= next_reap:
                    await self.reap()
                    next_reap = trio.current_time() + reap_after
                backoff = 0.05
            except util.CONNECTION_ERRORS as exc:  # unreachable past reconnect_timeout
                log.warning("Redis broker %s: %s; reconnecting in %.2fs", broker.url, exc, backoff)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            except _coredis().exceptions.RedisError as exc:
                if not self._group_lost(exc):
                    raise
                continue
            if moved:
                continue
            wait = (
                broker.poll_interval if wait_ms < 0 else min(broker.poll_interval, wait_ms / 1000)
            )
            await trio.sleep(min(wait, max(0.0, next_beat - trio.current_time())))

    async def reap(self) -> int:
        """Delete the group's consumers that hold nothing and were idle for many leases (the
        processes that died or closed); how many."""
        min_idle = int(_REAP_AFTER_LEASES * self._broker.visibility_timeout * 1000)
        deleted: int = await self._script("reap", [self.stream], [GROUP, min_idle])
        return deleted

    async def heartbeat(self) -> int:
        """Reset the idle time of every entry this process holds (its leases)."""
        ids = [d.receipt for d in self.held()]
        renewed = 0
        for start in range(0, len(ids), _PUT_CHUNK):
            chunk = ids[start : start + _PUT_CHUNK]
            renewed += await self._script(
                "heartbeat",
                [self.stream],
                [GROUP, self._broker.consumer, max(len(ids) * 2, 1000), *chunk],
            )
        return renewed

    async def put(self, jobs: Sequence[QueuedJob], *, delay: float = 0.0) -> None:
        delay = check_seconds(delay, "delay")
        bodies = encode_jobs(jobs, self._broker.max_payload, f"Redis at {self._broker.url}")
        await self._ensure_group()
        # Lane jobs go to their lanes' lists; the others are (batch, body) entries for the stream.
        entries = await lanes.put(self, jobs, bodies, math.ceil(delay * 1000), _PUT_CHUNK)
        if not entries:
            await trio.lowlevel.checkpoint()
        elif delay == 0:
            await self._puts.submit(entries)
        else:
            await self._put_entries(entries, delay)

    async def put_many(self, jobs: Sequence[tuple[QueuedJob, float]]) -> None:
        """One `put` (one script call per chunk) per delay; each job's size checked first."""
        if len({delay for _, delay in jobs}) > 1:  # one put checks its own jobs first
            encode_jobs(
                [job for job, _ in jobs], self._broker.max_payload, f"Redis at {self._broker.url}"
            )
        await put_grouped(self, jobs)

    async def _put_many(self, groups: list[list[tuple[str, str]]]) -> None:
        await self._put_entries([entry for group in groups for entry in group], 0.0)

    async def _put_entries(self, entries: list[tuple[str, str]], delay: float) -> None:
        for start in range(0, len(entries), _PUT_CHUNK):
            args: list[Any] = [math.ceil(delay * 1000)]
            for batch_id, body in entries[start : start + _PUT_CHUNK]:
                args += [secrets.token_hex(8), batch_id, body]
            await self._script("put", [self.stream, self.delayed], args)

    async def _deliveries(self, entries: Sequence[tuple[str, Any, int]]) -> list[Delivery]:
        out, stray = await lanes.deliveries(self, [(i, fields(raw), n) for i, raw, n in entries])
        if stray:  # a token of a lane without jobs (it cannot be made, but never keep one)
            await self._ack_many(stray)
        return out

    async def _claim(self, n: int) -> tuple[list[Delivery], float]:
        broker = self._broker
        try:
            await self._ensure_group()
            now = trio.current_time()
            if now - self._last_reclaim >= min(broker.visibility_timeout / 4, broker.poll_interval):
                self._last_reclaim = now
                reclaimed = await self.reclaim(n)
                if reclaimed:
                    return reclaimed, 0.0
            found = await broker.client.xreadgroup(
                GROUP,
                broker.consumer,
                {self.stream: ">"},
                count=n,
                block=max(1, int(broker.poll_interval * 1000)),
            )
        except Exception as exc:
            if is_connection_error(exc):  # claim again after a poll interval
                log.warning("Redis broker %s: claim failed (%s); retrying", broker.url, exc)
                return [], broker.poll_interval
            if not self._group_lost(exc):
                raise
            return [], 0.0
        if not found:
            return [], 0.0
        entries = found.get(self.stream, ())
        found_entries = [(str(e.identifier), e.field_values, 1) for e in entries]
        return await self._deliveries(found_entries), 0.0

    async def reclaim(self, n: int) -> list[Delivery]:
        """Take over up to ``n`` entries whose lease lapsed (idle > visibility timeout)."""
        broker = self._broker
        out = await self._script(
            "reclaim",
            [self.stream],
            [GROUP, broker.consumer, int(broker.visibility_timeout * 1000), self._cursor, n],
        )
        self._cursor = out[0]
        rest = out[1:]
        return await self._deliveries(
            [(rest[i], rest[i + 1], int(rest[i + 2])) for i in range(0, len(rest), 3)]
        )

    async def _ack_many(self, ids: list[str]) -> None:
        await self._script("ack", [self.stream], [GROUP, *ids])

    async def ack(self, delivery: Delivery) -> None:
        """Remove the job for good; for a lane job only while its fence is still the lane's
        epoch (else `LeaseLost`), which sends the lane's next job at once."""
        try:
            if delivery.job.lane is None:
                await self._acks.submit(delivery.receipt)
            else:
                await self._lane_acks.ack(delivery)
        finally:
            self._settled([delivery])

    async def retry(self, delivery: Delivery, job: QueuedJob, *, delay: float) -> None:
        delay = check_seconds(delay, "delay")
        (body,) = encode_jobs([job], self._broker.max_payload, f"Redis at {self._broker.url}")
        if job.lane is not None:
            try:
                await lanes.retry(self, delivery, math.ceil(delay * 1000), job.batch_id or "", body)
            finally:
                self._settled([delivery])
            return
        await self._script(
            "retry",
            [self.stream, self.delayed],
            [
                GROUP,
                delivery.receipt,
                math.ceil(delay * 1000),
                secrets.token_hex(8),
                job.batch_id or "",
                body,
            ],
        )
        self._settled([delivery])

    async def give_back(self, deliveries: Sequence[Delivery], *, uncount: int) -> None:
        args: list[Any] = [GROUP, self._broker.consumer]
        for d in deliveries:
            args += [d.receipt, d.delivery - uncount]
        await self._script("release", [self.stream], args)

    async def release(self, deliveries: Sequence[Delivery], *, started: bool = True) -> None:
        if deliveries:
            await self.give_back(deliveries, uncount=0 if started else 1)
        else:
            await trio.lowlevel.checkpoint()
        self._settled(deliveries)

    async def discard(self, batch_id: str) -> list[QueuedJob]:
        """Remove the batch's jobs no worker has been handed (one script: it reads the queue's
        backlog, so it costs in proportion to the jobs waiting)."""
        await self._ensure_group()
        mine = [d for d in self._buffer if d.job.batch_id == batch_id]
        for delivery in mine:
            self._buffer.remove(delivery)
        bodies = await self._script(
            "discard",
            [self.stream, self.delayed],
            [GROUP, batch_id, *(d.receipt for d in mine)],
        )
        return [decode_job(body) for body in bodies]

    async def stats(self) -> QueueStats:
        ready, delayed, running = await self._script("stats", [self.stream, self.delayed], [GROUP])
        return QueueStats(ready=int(ready), delayed=int(delayed), running=int(running))
