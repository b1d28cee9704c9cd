"""The Lua scripts of `RedisBroker`'s lanes: a waiting list per lane, one token in flight.

Per lane of a queue (keys in the queue's hash slot): a list ``{tag}:lane:<key>`` of the
lane's jobs in put order (each ``due_ms \\n batch \\n body``), and one field in the hash
``{tag}:lanes``: the lane's epoch, the fencing token of its latest delivery. A lane with jobs
has exactly one *token* on the way: a stream entry ``l=<key>`` (or, while its head job waits
for its time, a member ``~\\n\\n<key>`` of the delayed set). Tokens are ordinary entries: the
consumer group leases them, the heartbeat renews them, ``XAUTOCLAIM`` takes over lapsed ones
and `release` gives them back, exactly like plain jobs. Each lease of a lane moves its
epoch on (``HINCRBY``: the fence): a token sent for a new head carries the new fence and the
head itself (``f``, ``h``), so its first reader runs the job at once; a token given back or
taken over is *started* again by its reader (a script: a new fence, the list's head). The
holder's ack pops the head and sends the next token, but only while the lane's epoch is
still its fence.
So a lane runs one job at a time, in order, across every consumer, and a holder whose lease
lapsed (its token went to another consumer, which moved the epoch on) cannot settle the job.

The list keys are built inside the scripts from a prefix (same hash tag as the stream): fine
on one Redis server, not declared as ``KEYS`` for a Redis Cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ._broker import Delivery, decode_job
from ._errors import LeaseLost
from ._leased import Coalescer
from ._model import QueuedJob
from ._redis_scripts import DUE

GROUP = "workers"


class LaneQueue(Protocol):
    """What these helpers need of a `RedisBrokerQueue`."""

    name: str
    stream: str
    delayed: str
    epochs: str
    lane_prefix: str

    async def _script(self, name: str, keys: list[str], args: list[Any]) -> Any: ...


async def put(
    queue: LaneQueue, jobs: Sequence[QueuedJob], bodies: Sequence[str], delay_ms: int, chunk: int
) -> list[tuple[str, str]]:
    """Append the lane jobs (encoded as ``bodies``) to their lanes' lists, in order, ``chunk``
    per script call; return the other jobs as (batch, body) entries for the stream."""
    pairs = list(zip(jobs, bodies, strict=True))
    laned = [(job, body) for job, body in pairs if job.lane is not None]
    for start in range(0, len(laned), chunk):
        args: list[Any] = [delay_ms, queue.lane_prefix]
        for job, body in laned[start : start + chunk]:
            args += [job.lane, job.batch_id or "", body]
        await queue._script("put_lanes", [queue.stream, queue.delayed, queue.epochs], args)
    return [(job.batch_id or "", body) for job, body in pairs if job.lane is None]


async def deliveries(
    queue: LaneQueue, entries: Sequence[tuple[str, dict[str, str], int]]
) -> tuple[list[Delivery], list[str]]:
    """Stream entries as deliveries: a lane's token starts its lane (a new fence) and
    delivers the lane's head (one script for every token read at once). Also returns the ids
    of stray tokens (a lane without jobs) for the caller to ack away."""
    tokens = [fields["l"] for _, fields, n in entries if "l" in fields and not _fresh(fields, n)]
    started: list[Any] = []
    if tokens:
        started = await queue._script("start_lanes", [queue.epochs], [queue.lane_prefix, *tokens])
    out, stray = [], []
    for identifier, fields, count in entries:
        fence = 0
        if "l" in fields:
            if _fresh(fields, count):  # its lease of the lane began when it was sent
                fence, head = int(fields["f"]), fields["h"]
            else:
                fence, head = int(started[0]), str(started[1])
                started = started[2:]
                if not fence:
                    stray.append(identifier)
                    continue
            body = head.split("\n", 2)[2]
        else:
            body = fields["j"]
        delivery = int(fields.get("d", 0)) + count
        out.append(Delivery(decode_job(body), delivery, identifier, fence))
    return out, stray


def _fresh(fields: dict[str, str], count: int) -> bool:
    """A token read for the first time since it was sent with its lane's new fence and head
    (``f``, ``h``): nobody else can have started the lane since, so no script is needed.
    A token given back or taken over (read again) starts the lane anew: a new fence."""
    return count == 1 and "f" in fields


def check(queue: LaneQueue, delivery: Delivery, answer: int) -> None:
    if answer < 0:
        raise LeaseLost(
            f"the lease on lane {delivery.job.lane!r} of queue {queue.name!r} lapsed and was "
            f"taken over (this delivery's fence {delivery.fence} is stale): another worker "
            "has this job now, so this outcome must not be recorded"
        )


async def retry(queue: LaneQueue, delivery: Delivery, *args: Any) -> None:
    """Replace a lane job by its next attempt, in its lane's place; `LeaseLost` if the
    lane's epoch moved past this delivery's fence."""
    answer = await queue._script(
        "retry_lane",
        [queue.stream, queue.delayed, queue.epochs],
        [GROUP, delivery.receipt, queue.lane_prefix, delivery.job.lane, delivery.fence, *args],
    )
    check(queue, delivery, int(answer))


class LaneAcks:
    """Concurrent acks of lane jobs share one script call, each with its own answer."""

    def __init__(self, queue: LaneQueue) -> None:
        self._queue = queue
        self._answers: dict[str, int] = {}
        self._acks: Coalescer[Delivery] = Coalescer(self._flush)

    async def _flush(self, deliveries: list[Delivery]) -> None:
        queue = self._queue
        args: list[Any] = [GROUP, queue.lane_prefix]
        for d in deliveries:
            args += [d.receipt, d.job.lane, d.fence]
        answers = await queue._script(
            "ack_lanes", [queue.stream, queue.delayed, queue.epochs], args
        )
        for d, answer in zip(deliveries, answers, strict=True):
            self._answers[d.receipt] = int(answer)

    async def ack(self, delivery: Delivery) -> None:
        """Settle a lane job; `LeaseLost` if its lane's epoch moved past its fence."""
        try:
            await self._acks.submit(delivery)
        finally:
            answer = self._answers.pop(delivery.receipt, 0)
        check(self._queue, delivery, answer)


#: Send the token for a lane's (new) head: now if it is due, else when it is. A token sent
#: now starts the lane's next lease already (its epoch moves on): it carries the new fence
#: and the head, so its first reader needs no script of its own (see `deliveries`).
_SCHEDULE = """
local function schedule(stream, delayed, epochs, list, lane, now)
  local head = redis.call('LINDEX', list, 0)
  if not head then return end
  local at = tonumber(string.sub(head, 1, string.find(head, '\\n', 1, true) - 1))
  if at > now then
    redis.call('ZADD', delayed, at, '~\\n\\n' .. lane)
  else
    local fence = redis.call('HINCRBY', epochs, lane, 1)
    redis.call('XADD', stream, '*', 'l', lane, 'f', fence, 'h', head)
  end
end

-- The lane's epoch is not the settling delivery's fence: if it is one more and the token
-- is gone, that delivery settled already (its own ack sent the next token), so 0; else its
-- lease was lost, -1 (a takeover moves the epoch on by 2: see START_LANES).
local function moved(epochs, stream, lane, fence, id)
  local epoch = tonumber(redis.call('HGET', epochs, lane) or 0)
  if epoch == tonumber(fence) + 1 and not redis.call('XRANGE', stream, id, id)[1] then
    return 0
  end
  return -1
end
"""

# KEYS: stream, delayed, epochs. ARGV: delay_ms, list prefix, then (lane, batch, body) per job.
PUT_LANES = (
    DUE
    + _SCHEDULE
    + """
local now = due(0)
local at = now + tonumber(ARGV[1])
for i = 3, #ARGV, 3 do
  local list = ARGV[2] .. ARGV[i]
  if redis.call('RPUSH', list, at .. '\\n' .. ARGV[i + 1] .. '\\n' .. ARGV[i + 2]) == 1 then
    schedule(KEYS[1], KEYS[2], KEYS[3], list, ARGV[i], now)
  end
end
return (#ARGV - 2) / 3
"""
)

# KEYS: epochs. ARGV: list prefix, lanes... Returns (fence, head) per lane; (0, '') for a lane
# without jobs (a stray token: the caller acks it away). For a token given back or taken
# over: the epoch moves on by 2, so a lapsed holder's fence is never one less than it (a
# settled holder's is: `moved`).
START_LANES = """
local out = {}
for i = 2, #ARGV do
  local head = redis.call('LINDEX', ARGV[1] .. ARGV[i], 0)
  if head then
    out[#out + 1] = redis.call('HINCRBY', KEYS[1], ARGV[i], 2)
    out[#out + 1] = head
  else
    out[#out + 1] = 0
    out[#out + 1] = ''
  end
end
return out
"""

# KEYS: stream, delayed, epochs. ARGV: group, list prefix, then (id, lane, fence) per ack.
# Per ack: -1 the lane moved on (lease lost); 0 settled already; 1 done, the next token sent.
ACK_LANES = (
    DUE
    + _SCHEDULE
    + """
local out, now = {}, due(0)
for i = 3, #ARGV, 3 do
  local id, lane = ARGV[i], ARGV[i + 1]
  if redis.call('HGET', KEYS[3], lane) ~= ARGV[i + 2] then
    out[#out + 1] = moved(KEYS[3], KEYS[1], lane, ARGV[i + 2], id)
  elseif redis.call('XACK', KEYS[1], ARGV[1], id) == 0 then
    out[#out + 1] = 0
  else
    redis.call('XDEL', KEYS[1], id)
    redis.call('LPOP', ARGV[2] .. lane)
    schedule(KEYS[1], KEYS[2], KEYS[3], ARGV[2] .. lane, lane, now)
    out[#out + 1] = 1
  end
end
return out
"""
)

# KEYS: stream, delayed, epochs. ARGV: group, id, list prefix, lane, fence, delay_ms, batch,
# body. The next attempt takes the head's place (the lane keeps its order). As ACK_LANES.
RETRY_LANE = (
    DUE
    + _SCHEDULE
    + """
if redis.call('HGET', KEYS[3], ARGV[4]) ~= ARGV[5] then
  return moved(KEYS[3], KEYS[1], ARGV[4], ARGV[5], ARGV[2])
end
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[2])
local list = ARGV[3] .. ARGV[4]
redis.call('LSET', list, 0, due(ARGV[6]) .. '\\n' .. ARGV[7] .. '\\n' .. ARGV[8])
schedule(KEYS[1], KEYS[2], KEYS[3], list, ARGV[4], due(0))
return 1
"""
)

#: The lane scripts, by the names `RedisBroker` registers them under.
SCRIPTS = {
    "put_lanes": PUT_LANES,
    "start_lanes": START_LANES,
    "ack_lanes": ACK_LANES,
    "retry_lane": RETRY_LANE,
}
