"""The bus's values: jobs and their options, what a handler sees, and chain and batch states.

Everything here is a frozen attrs class: safe to share between tasks, cheap to compare in tests.
"""

from __future__ import annotations

import collections.abc
import contextlib
import json
import math
import secrets
import types
import typing
from datetime import datetime
from itertools import count
from typing import Any, TypeVar

import attrs

from .._checks import check_duration
from .._keys import check_key

T = TypeVar("T")


# ------------------------------------------------------------------------------ checks


def check_seconds(value: object, what: str, *, allow_zero: bool = True) -> float:
    """A finite, non-negative number of seconds (NaN, negatives and infinity rejected)."""
    seconds = check_duration(value, what, allow_zero=allow_zero)
    if math.isinf(seconds):
        raise ValueError(f"{what} must be a finite number of seconds, got {value!r}")
    return seconds


def check_callback(fn: object, what: str) -> None:
    """A callback is a `Job`, or a callable (sync or async) taking the state."""
    if isinstance(fn, Job):
        if fn.options.unique_for is not None:
            raise ValueError(f"{what}: unique_for applies to bus.dispatch() only; remove it")
        return
    if not callable(fn):
        raise TypeError(
            f"{what} must be a Job or a function (sync or async) taking the state, "
            f"got {type(fn).__name__}: {fn!r}"
        )


# ------------------------------------------------------------------------------ payloads


def _to_json(value: object) -> object:
    if attrs.has(type(value)):
        return attrs.asdict(value)  # type: ignore[arg-type]
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def encode_payload(job_type: str, payload: object) -> str:
    """The payload as canonical JSON text (sorted keys), or `TypeError` saying what to pass."""
    if payload is None:
        return "null"
    bad = _non_str_key(payload, [])
    if bad is not None:
        path, key = bad
        raise TypeError(
            f"the payload of job {job_type!r} has a dict key that is not a str: {key!r} "
            f"({type(key).__name__}) in payload{path}; JSON keys are strings, so it would "
            f"arrive changed. Use str keys (e.g. str({key!r}))"
        )
    try:
        return json.dumps(
            payload, default=_to_json, sort_keys=True, allow_nan=False, separators=(",", ":")
        )
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"the payload of job {job_type!r} is not JSON-serialisable ({exc}); pass dicts, "
            "lists, str, int, float (not NaN), bool, None or attrs instances of those"
        ) from None


def _non_str_key(value: object, stack: list[object]) -> tuple[str, object] | None:
    """The path (like ``['a'][0]``) and the first dict key that is not a str, if any.

    ``json.dumps`` would turn ``{1: "a"}`` into ``{"1": "a"}`` silently (and fail on mixed
    keys with a puzzling message), so the bus refuses such keys at dispatch.
    """
    if isinstance(value, str | int | float | bool) or value is None:
        return None
    items: Any
    if isinstance(value, dict):
        items, step = value.items(), "[{!r}]"
    elif isinstance(value, list | tuple):
        items, step = enumerate(value), "[{!r}]"
    elif attrs.has(type(value)):
        items = ((f.name, getattr(value, f.name)) for f in attrs.fields(type(value)))  # type: ignore[arg-type]
        step = ".{}"
    else:
        return None  # json.dumps says what is wrong with it
    if any(v is value for v in stack):
        return None  # a cycle: json.dumps reports it
    is_dict = isinstance(value, dict)
    stack.append(value)
    try:
        for key, item in items:
            if is_dict and not isinstance(key, str):
                return "", key
            found = _non_str_key(item, stack)
            if found is not None:
                return step.format(key) + found[0], found[1]
    finally:
        stack.pop()
    return None


def decode_payload(text: str) -> Any:
    return None if text == "null" else json.loads(text)


def _structure(cls: Any, data: object) -> Any:
    if not isinstance(data, dict):
        raise TypeError(f"cannot bind {type(data).__name__} payload to {cls.__name__}: need a dict")
    with contextlib.suppress(Exception):  # unresolvable forward references: bind flat
        attrs.resolve_types(cls)
    fields = attrs.fields(cls)
    known = {f.name for f in fields}
    unknown = sorted(set(data) - known)
    if unknown:
        raise TypeError(f"payload has keys {unknown} that {cls.__name__} has no field for")
    kwargs: dict[str, Any] = {}
    for f in fields:
        if f.name in data:
            kwargs[f.alias or f.name] = _structure_value(f.type, data[f.name])
    return cls(**kwargs)


def _structure_value(hint: Any, value: object) -> Any:
    """``value`` (decoded JSON) shaped as ``hint`` says: the inverse of encoding it.

    Attrs classes come back from dicts, at any depth: in ``list[...]``, ``tuple[...]``,
    ``dict[str, ...]`` and optional (``X | None``) fields. Anything else is left as decoded.
    """
    if value is None or hint is None or isinstance(hint, str):
        return value
    if isinstance(hint, type) and attrs.has(hint):
        return _structure(hint, value) if isinstance(value, dict) else value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if isinstance(arg, type) and attrs.has(arg) and isinstance(value, dict):
                return _structure(arg, value)
        for arg in args:
            if arg is not type(None):
                shaped = _structure_value(arg, value)
                if shaped is not value:
                    return shaped
        return value
    if origin in (list, collections.abc.Sequence, collections.abc.MutableSequence):
        if isinstance(value, list) and args:
            return [_structure_value(args[0], item) for item in value]
        return value
    if origin is tuple and isinstance(value, list):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_structure_value(args[0], item) for item in value)
        if args and len(args) == len(value):
            return tuple(_structure_value(a, item) for a, item in zip(args, value, strict=True))
        return tuple(value)
    if origin in (dict, collections.abc.Mapping) and isinstance(value, dict) and len(args) == 2:
        return {k: _structure_value(args[1], v) for k, v in value.items()}
    return value


# ------------------------------------------------------------------------------ jobs


def check_text(value: object, what: str) -> str:
    """A non-empty str that is valid Unicode text (no lone surrogates), as stores need it."""
    text = check_key(value, what)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{what} {text!r} is not valid Unicode text (it holds a lone surrogate); "
            "no store or broker can keep it: use plain text"
        ) from None
    return text


def _check_job_type(instance: Any, attribute: attrs.Attribute[str], value: str) -> None:
    check_text(value, "job type")


@attrs.frozen
class JobOptions:
    """How a `Job` runs; set through the `Job` builder methods."""

    queue: str | None = None
    """The queue to run on; ``None``: the chain's or batch's queue, else the bus's first."""
    delay: float = 0.0
    """Seconds to wait before the first attempt."""
    timeout: float | None = None
    """Seconds an attempt may run before it is cancelled and fails with `TimeoutError`."""
    retry: int = 0
    """Retries after the first attempt (so ``retry + 1`` attempts at most)."""
    backoff: float = 0.0
    """Seconds between a failed attempt and its retry."""
    unique_for: float | None = None
    """Seconds during which a second dispatch of the same type and payload is refused."""
    lane: str | None = None
    """The lane key: jobs of one lane run one at a time, in dispatch order, on every worker."""


@attrs.frozen
class Job:
    """A job to dispatch: its type, a JSON-serialisable payload, and options.

    Each builder method returns a new `Job`; bad values fail at once::

        Job("emails:send", {"to": "a@b"}).on_queue("mail").delay(2).timeout(15).retry(3)
    """

    type: str = attrs.field(validator=_check_job_type)
    """The job type: the name a handler was registered under."""
    payload: Any = None
    """JSON-serialisable data (dicts, lists, scalars, attrs instances); checked at dispatch."""
    options: JobOptions = JobOptions()
    """Queue, delay, timeout, retries, backoff and uniqueness."""

    def _with(self, **changes: Any) -> Job:
        return attrs.evolve(self, options=attrs.evolve(self.options, **changes))

    def on_queue(self, name: str) -> Job:
        """Run on the queue called ``name`` (one of the bus's ``queues``)."""
        return self._with(queue=check_text(name, "queue name"))

    def delay(self, seconds: float) -> Job:
        """Wait ``seconds`` (>= 0) after dispatch before the first attempt."""
        return self._with(delay=check_seconds(seconds, "delay"))

    def timeout(self, seconds: float) -> Job:
        """Cancel an attempt after ``seconds`` (> 0); it then fails with `TimeoutError`."""
        return self._with(timeout=check_seconds(seconds, "timeout", allow_zero=False))

    def retry(self, times: int) -> Job:
        """Retry up to ``times`` (>= 0) times after a failed first attempt."""
        if isinstance(times, bool) or not isinstance(times, int):
            raise TypeError(f"retry must be an int, got {type(times).__name__}: {times!r}")
        if times < 0:
            raise ValueError(f"retry must be >= 0, got {times!r}")
        return self._with(retry=times)

    def lane(self, key: str) -> Job:
        """Run one at a time and in dispatch order with the other jobs of lane ``key``, across
        every worker and process; other lanes run in parallel. A delayed or retrying lane
        job holds back the jobs behind it."""
        return self._with(lane=check_text(key, "lane key"))

    def backoff(self, seconds: float) -> Job:
        """Wait ``seconds`` (>= 0) between a failed attempt and its retry."""
        return self._with(backoff=check_seconds(seconds, "backoff"))

    def unique_for(self, seconds: float) -> Job:
        """Refuse (`DuplicateJob`) a second dispatch of this type and payload within ``seconds``."""
        return self._with(unique_for=check_seconds(seconds, "unique_for", allow_zero=False))


# slots=False: attrs builds a frozen dict class by filling its __dict__, twice as fast as
# setting slots one by one; this record is built once or more per job.
@attrs.frozen(slots=False)
class DispatchResult:
    """What `Bus.dispatch` returns: the ids the job's events and context carry."""

    dispatch_id: str
    job_id: str
    queue: str


# slots=False: built per job (see DispatchResult).
@attrs.frozen(slots=False)
class JobRecord:
    """A job as stored and queued: its payload already JSON text, its queue resolved."""

    job_id: str
    job_type: str
    payload: str
    queue: str
    delay: float = 0.0
    timeout: float | None = None
    retry: int = 0
    backoff: float = 0.0
    lane: str | None = None

    def to_job(self) -> Job:
        return Job(
            self.job_type,
            decode_payload(self.payload),
            JobOptions(
                queue=self.queue,
                delay=self.delay,
                timeout=self.timeout,
                retry=self.retry,
                backoff=self.backoff,
                lane=self.lane,
            ),
        )


@attrs.frozen
class LaneFence:
    """What a lane job's outcome is recorded with: its delivery's lane and fence, so a store
    refuses the outcome of a holder whose lease lapsed (see `actors.bus._fences`)."""

    queue: str
    lane: str
    fence: int


# slots=False: built per job (see DispatchResult).
@attrs.frozen(slots=False)
class QueuedJob:
    """One attempt's worth of a job, as it travels through a `Queue` to a worker.

    Plain data only (ids, JSON text, numbers), so a broker-backed queue can serialise it.
    """

    job_id: str
    dispatch_id: str
    job_type: str
    payload: str
    queue: str
    timeout: float | None = None
    retry: int = 0
    backoff: float = 0.0
    attempt: int = 1
    """The attempt this run will be: 1 on the first run."""
    chain_id: str | None = None
    chain_index: int = 0
    batch_id: str | None = None
    callback_of: str | None = None
    """For a `Job` callback: ``"batch:<id>"`` or ``"chain:<id>"``, whose state it reads."""
    error: str | None = None
    """For a ``catch`` `Job` callback: the failure, as ``"ExceptionType: message"``."""
    lane: str | None = None
    """The lane key: jobs of one lane run one at a time, in the order they were put."""


class _AttemptFlags:
    """Mutable flags one attempt's middleware shares with the worker (kept out of equality)."""

    # Class-level defaults, no __init__: one is made per attempt, and this makes it in C.
    no_retry = False
    #: The attempt's timeout, applied around the handler call (inside all middleware).
    timeout: float | None = None


class _NoFlags(_AttemptFlags):
    """The flags of an attempt that no middleware sees and that has no timeout: none is
    ever set, so all such attempts share one (`NO_FLAGS`), read only."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("NO_FLAGS is shared by attempts without middleware: read only")


#: The `JobContext` flags of every attempt run without middleware or timeout.
NO_FLAGS = _NoFlags()


# slots=False: built per job (see DispatchResult).
@attrs.frozen(slots=False)
class JobContext:
    """What a handler (and middleware) gets: the payload, the ids, and which attempt this is."""

    payload: Any
    """The decoded JSON payload (attrs instances arrive as dicts: use `bind`)."""
    attempt: int
    """1 on the first run, 2 on the first retry, ..."""
    job_type: str
    dispatch_id: str
    job_id: str
    chain_id: str | None
    batch_id: str | None
    queue: str
    state: BatchState | ChainState | None = None
    """For a `Job` callback: the state of the batch or chain it was a callback of."""
    error: str | None = None
    """For a ``catch`` `Job` callback: the failure, as ``"ExceptionType: message"``."""
    delivery: int = 1
    """1 unless a durable broker redelivered this attempt (its worker died)."""
    fence: int = 0
    """For a lane job: its delivery's fencing token (grows with each lease of the lane), to
    hand to what the handler writes so a holder whose lease lapsed is refused; else 0."""
    _flags: _AttemptFlags = attrs.field(factory=_AttemptFlags, eq=False, repr=False)

    def bind(self, cls: type[T]) -> T:
        """Build an attrs instance of ``cls`` from the payload (nested attrs classes too).

        ``ctx.bind(Email)`` is the inverse of dispatching ``Job("emails:send", Email(...))``.
        """
        if not (isinstance(cls, type) and attrs.has(cls)):
            raise TypeError(f"bind() needs an attrs class, got {cls!r}")
        result: T = _structure(cls, self.payload)
        return result


# ------------------------------------------------------------------------------ states


@attrs.frozen
class BatchState:
    """Where a batch stands. ``processed`` counts finished jobs, failed or not."""

    batch_id: str
    dispatch_id: str
    name: str | None
    queue: str
    allow_failures: bool
    total: int
    """Jobs in the batch."""
    pending: int
    """Jobs not finished yet (cancelled jobs leave this count without being processed)."""
    processed: int
    """Jobs that finished, successfully or not."""
    failed: int
    """Jobs that failed (after their retries)."""
    cancelled: bool
    """Jobs not yet started were (or are being) cancelled: by `Bus.cancel_batch`, or by a
    failure without `allow_failures`."""
    completed: bool
    """The batch is over: no job runs or will run any more."""
    created_at: datetime
    updated_at: datetime


@attrs.frozen
class ChainNode:
    """One step of a chain: its id (the job id it runs under) and its job."""

    node_id: str
    job: Job


@attrs.frozen
class ChainState:
    """Where a chain stands: ``nodes[next_index]`` is the job running or due next."""

    chain_id: str
    dispatch_id: str
    queue: str
    nodes: tuple[ChainNode, ...]
    next_index: int
    completed: bool
    """Every node succeeded."""
    failed: bool
    """A node failed (after its retries); the chain stopped there."""
    failure: str | None
    """``"ExceptionType: message"`` of that failure."""
    created_at: datetime
    updated_at: datetime


# ------------------------------------------------------------------------------ ids


class IdSource:
    """Ids unique across processes sharing a store: a random prefix (one per bus) and a
    counter, so a bus can tell the ids it made (`made`) from other processes' ones."""

    __slots__ = ("next", "prefix")

    def __init__(self) -> None:
        self.prefix = f"{secrets.token_hex(6)}-"
        #: The next id, without a Python-level call (`__call__` is the same, for every caller).
        self.next = map(f"{self.prefix}%x".__mod__, count(1)).__next__

    def __call__(self) -> str:
        return self.next()

    def made(self, an_id: str) -> bool:
        return an_id.startswith(self.prefix)


def id_source() -> IdSource:
    """A new `IdSource`."""
    return IdSource()


def describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
