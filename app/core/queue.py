"""RQ on Redis: connections, named queues, enqueue helpers and the app-aware worker."""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import rq
from flask import Flask, current_app
from redis import Redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.retry import Retry as RedisRetry
from rq import Queue, Retry
from rq.exceptions import DequeueTimeout, DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.scripts import _build_hset_args
from rq.utils import get_call_string, now, utcformat

_CONNECTIONS: dict[tuple[int, str, bool], Redis] = {}

# RQ 2.12's unique enqueue (rq.scripts.UNIQUE_ENQUEUE_SCRIPT: refuse an existing job hash, save it, set its TTL,
# push its id) plus the `SADD rq:queues` that Queue.enqueue_job sends in a transaction of its own beforehand:
# one round trip to Redis instead of two on the webhook path. The hash fields that are the same for every job
# of one kind (queue, function, retry, timeouts) are written into the script itself, so a call sends six short
# arguments instead of some forty. tests/test_queue.py checks that the job hash, the queue list and the queue
# registry match what rq's own Queue.enqueue(..., unique=True) writes.
UNIQUE_ENQUEUE_SCRIPT = """
if redis.call("EXISTS", KEYS[1]) == 1 then
    return 0
end
redis.call("SADD", KEYS[3], KEYS[2])
redis.call("HSET", KEYS[1], "created_at", ARGV[3], "data", ARGV[4],
    "description", ARGV[5], "enqueued_at", ARGV[6]{fields})
local ttl = tonumber(ARGV[2])
if ttl and ttl > 0 then
    redis.call("EXPIRE", KEYS[1], ttl)
end
redis.call("RPUSH", {target}, ARGV[1]){lane}
return 1
"""
# The lane variant (the events queue's per-portal lanes, see EventsQueue): the job id goes to its portal's
# lane (KEYS[6]) instead of the queue's list; a lane with no turn yet joins the end of the ring (KEYS[4]); one
# token on the wake list (KEYS[5]) wakes a blocked worker (the list is capped: a worker takes one per wait).
_LANE_PUSH = """
if not redis.call("LPOS", KEYS[4], KEYS[6]) then
    redis.call("RPUSH", KEYS[4], KEYS[6])
end
redis.call("RPUSH", KEYS[5], "1")
redis.call("LTRIM", KEYS[5], -64, -1)"""
# The unique enqueue writes RQ's job hash itself and leans on RQ internals (`rq.scripts._build_hset_args`,
# `Queue._prepare_for_queue`, the hash's field names). It was written for, and is tested against, this
# release line; another one must be checked with tests/test_queue.py before this number changes.
RQ_RELEASE_LINE = (2, 12)


def check_rq_version(version: str | None = None) -> None:
    """Refuse to take the fast path on an RQ release it was not written for (RuntimeError)."""
    version = version or rq.__version__
    parts = version.split(".")
    try:
        line = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError):
        line = (-1, -1)
    if line != RQ_RELEASE_LINE:
        expected = ".".join(map(str, RQ_RELEASE_LINE))
        raise RuntimeError(f"app.core.queue's unique enqueue was written for rq {expected}.x, not rq {version}")


_PER_JOB_FIELDS = ("created_at", "data", "description", "enqueued_at")


@dataclass(frozen=True)
class _JobKind:
    """What every unique job of one queue, function, retry policy and timeouts shares."""

    client: Redis  # the dedicated client the script is registered on and sent through
    script: Script
    func_name: str
    serializer: Any
    ttl: int
    queue_key: str
    queues_key: str


_JOB_KINDS: dict[tuple[Any, ...], _JobKind] = {}


EVENTS_QUEUE = "events"
LANE_PREFIX = "rc:events:lane:"  # + portal id: the jobs of one portal waiting in the events queue
RING_KEY = "rc:events:ring"  # the lanes with jobs waiting, in the order of their next turn
WAKE_KEY = "rc:events:wake"  # one token per queued event: a blocked worker waits on this list

# The fair picker of the events queue, in one atomic step: the lane at the head of the ring gives its oldest
# job and, if it has more, goes to the end of the ring; so a portal with 200 events waiting and one with 1
# take turns. RQ's own list of the queue (KEYS[2]: retries and re-runs of abandoned jobs land there) takes
# its turn as one more lane. A job id whose job is no longer queued (removed, cancelled, or an old copy) is
# dropped. The picked id is recorded in RQ's intermediate list (KEYS[3]) when ARGV[2] is "1", as RQ's own
# BLMOVE does for a worker of one queue. With nothing to pick, the wake tokens are cleared (KEYS[4]): the
# caller then waits for a new one. Lanes are keys the script finds in the ring (one Redis, not a cluster).
_PICK_SCRIPT = """
local ring, base = KEYS[1], KEYS[2]
if redis.call("LLEN", base) > 0 and not redis.call("LPOS", ring, base) then
    redis.call("RPUSH", ring, base)
end
while true do
    local lane = redis.call("LPOP", ring)
    if not lane then
        redis.call("DEL", KEYS[4])
        return false
    end
    local job_id = redis.call("LPOP", lane)
    if job_id then
        if redis.call("LLEN", lane) > 0 then
            redis.call("RPUSH", ring, lane)
        end
        if redis.call("HGET", ARGV[1] .. job_id, "status") == "queued" then
            if ARGV[2] == "1" then
                redis.call("RPUSH", KEYS[3], job_id)
            end
            return job_id
        end
    end
end
"""


_PICK_SCRIPTS: dict[int, Script] = {}


def lane_key(lane: int | str) -> str:
    """The Redis list of one portal's jobs waiting in the events queue."""
    return f"{LANE_PREFIX}{lane}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class EventsQueue(Queue):
    """RQ's Queue, with the events queue's jobs waiting in per-portal lanes and picked in turn.

    Jobs queued with a lane (`enqueue_unique(..., lane=portal_id)`: every inbox event) wait in their
    portal's list; everything RQ itself queues (retries, re-runs of abandoned jobs) in the queue's own list,
    which takes its turn as one more lane. `dequeue_any` takes the events queue's next job through the fair
    picker and the other queues' as RQ does, in the order given (events first). Any other queue behaves as
    RQ's. The job's origin stays `events`, so its registries (started, failed, scheduled) are RQ's own.
    """

    def _lanes(self) -> list[str]:
        return [_text(key) for key in self.connection.lrange(RING_KEY, 0, -1)]

    @property
    def count(self) -> int:
        if self.name != EVENTS_QUEUE:
            return super().count
        lanes = [lane for lane in self._lanes() if lane != self.key]
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.llen(self.key)
            for lane in lanes:
                pipe.llen(lane)
            return int(sum(pipe.execute()))

    def get_job_ids(self, offset: int = 0, length: int = -1) -> list[str]:
        if self.name != EVENTS_QUEUE:
            return super().get_job_ids(offset, length)
        ids = super().get_job_ids()
        for lane in self._lanes():
            if lane != self.key:
                ids += [_text(raw) for raw in self.connection.lrange(lane, 0, -1)]
        return ids[offset:] if length < 0 else ids[offset : offset + length]

    def remove(self, job_or_id: Job | str, pipeline: Any = None) -> Any:
        removed = super().remove(job_or_id, pipeline=pipeline)
        if self.name == EVENTS_QUEUE:
            job_id = job_or_id.id if isinstance(job_or_id, Job) else job_or_id
            target = pipeline if pipeline is not None else self.connection
            for lane in self._lanes():
                if lane != self.key:
                    target.lrem(lane, 1, job_id)
        return removed

    @classmethod
    def pick(cls, queue: Queue, record_intermediate: bool) -> str | None:
        """The events queue's next job id by the fair picker, or None when nothing waits."""
        script = _PICK_SCRIPTS.get(id(queue.connection))
        if script is None:
            script = _PICK_SCRIPTS[id(queue.connection)] = queue.connection.register_script(_PICK_SCRIPT)
        keys = [RING_KEY, queue.key, queue.intermediate_queue_key, WAKE_KEY]
        args = [Job.redis_job_namespace_prefix, "1" if record_intermediate else "0"]
        picked = script(keys=keys, args=args, client=queue.connection)
        return None if picked is None else _text(picked)

    @classmethod
    def dequeue_any(
        cls,
        queues: Iterable[Queue],
        timeout: int | None,
        connection: Redis,
        job_class: type[Job] | None = None,
        serializer: Any = None,
        death_penalty_class: Any = None,
    ) -> tuple[Job, Queue] | None:
        """RQ's dequeue_any with the events queue's fair picker.

        Blocking (`timeout`): waits for a wake token or a job of another queue, at most a second at a time
        for the events queue (RQ's own pushes of retries carry no token), until `timeout` is spent.
        """
        ordered = list(queues)
        job_cls: type[Job] = job_class or cls.job_class
        events = next((queue for queue in ordered if queue.name == EVENTS_QUEUE), None)
        if events is None:
            return super().dequeue_any(ordered, timeout, connection, job_class, serializer, death_penalty_class)
        waited = 0.0
        while True:
            found: tuple[str, Queue] | None = None
            for queue in ordered:
                if queue is events:
                    job_id = cls.pick(queue, record_intermediate=len(ordered) == 1)
                else:
                    raw = connection.lpop(queue.key)
                    job_id = None if raw is None else _text(raw)
                if job_id:
                    found = (job_id, queue)
                    break
            if found is None:
                if timeout is None:
                    return None
                if waited >= timeout:
                    raise DequeueTimeout(timeout, [queue.key for queue in ordered])
                step = 1
                others = [queue.key for queue in ordered if queue is not events]
                result = connection.blpop([WAKE_KEY, *others], step)
                waited += step
                if result is None or _text(result[0]) == WAKE_KEY:
                    continue
                key, raw_id = _text(result[0]), _text(result[1])
                found = (raw_id, next(queue for queue in ordered if queue.key == key))
            job_id, queue = found
            try:
                job = job_cls.fetch(job_id, connection=connection, serializer=serializer)
            except NoSuchJobError:
                continue
            return job, queue


# The seconds a job of the hot worker may wait for a CRM rate-limiter slot before it is put back instead
# (app.core.worker sets it around each job; app.crm.ratelimit reads it). None: wait as long as the limiter allows.
LIMITER_WAIT_BUDGET: ContextVar[float | None] = ContextVar("limiter_wait_budget", default=None)


class JobDeferred(Exception):
    """Raised by a job that should run again in `retry_after` seconds without that counting as a failure
    (its portal is at the CRM's rate limit); the worker schedules it and the inbox does not count the attempt."""

    retry_after: float | None = None


def redis_url(app: Flask | None = None) -> str:
    """REDIS_URL, or the unix socket of the embedded Redis started by the run command."""
    config = (app or current_app).config
    return config["REDIS_URL"] or f"unix://{config['EMBEDDED_REDIS_SOCKET']}"


def get_redis(app: Flask | None = None, *, dedicated: bool = False) -> Redis:
    """One Redis client per process and URL, created on first use, never at import.

    `dedicated`: a client that keeps one connection of its own instead of a pool, for the unique enqueue
    that every webhook makes (a pool checkout costs about a tenth of that call); threads take turns on it
    under the client's lock. A pool notices a connection closed by a Redis restart when it hands it out;
    this client learns it from the failed write, so it reconnects and sends the command once more (safe:
    the enqueue script refuses a job id that exists; `_run_script` does the same on its direct path).
    """
    url = redis_url(app)
    key = (os.getpid(), url, dedicated)
    client = _CONNECTIONS.get(key)
    if client is None:
        options: dict[str, Any] = {"socket_connect_timeout": 2, "socket_timeout": 10, "health_check_interval": 30}
        if dedicated:
            options["single_connection_client"] = True
            options["retry"] = RedisRetry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
        client = Redis.from_url(url, **options)
        _CONNECTIONS[key] = client
    return client


def get_queue(name: str, app: Flask | None = None) -> Queue:
    """A named queue on the app's Redis."""
    app = app or current_app
    if name not in app.config["QUEUE_NAMES"]:
        raise ValueError(f"unknown queue {name!r}")
    return EventsQueue(name, connection=get_redis(app), default_timeout=app.config["JOB_TIMEOUT_SECONDS"])


def enqueue(
    queue_name: str,
    func: Callable[..., Any] | str,
    *args: Any,
    job_id: str | None = None,
    unique: bool = False,
    retry: Retry | None = None,
    timeout: int | None = None,
    at: datetime | None = None,
    delay: timedelta | None = None,
    result_ttl: int | None = None,
    failure_ttl: int | None = None,
) -> Job | None:
    """Enqueue a job now, at a time, or after a delay. With unique=True a duplicate job id returns None."""
    queue = get_queue(queue_name)
    options: dict[str, Any] = {"job_id": job_id, "retry": retry, "job_timeout": timeout, "unique": unique}
    if result_ttl is not None:
        options["result_ttl"] = result_ttl
    if failure_ttl is not None:
        options["failure_ttl"] = failure_ttl
    try:
        if at is None and delay is None:
            if unique and job_id:
                queued = enqueue_unique(
                    queue_name,
                    func,
                    *args,
                    job_id=job_id,
                    retry=retry,
                    timeout=timeout,
                    result_ttl=result_ttl,
                    failure_ttl=failure_ttl,
                )
                return Job(job_id, connection=queue.connection, serializer=queue.serializer) if queued else None
            return queue.enqueue(func, *args, **options)  # type: ignore[type-var]  # rq: str or callable, not the union
        # Queue.enqueue_at ignores unique= in RQ 2.12, so the job is built and scheduled in two steps.
        run_at = at if at is not None else datetime.now(UTC) + (delay or timedelta())
        job = queue.create_job(
            func,  # type: ignore[type-var]  # rq's TypeVar takes a str or a callable, not their union
            args=args,
            job_id=job_id,
            retry=retry,
            timeout=timeout,
            result_ttl=result_ttl,
            failure_ttl=failure_ttl,
            status=JobStatus.SCHEDULED,
        )
        return queue.schedule_job(job, run_at, unique=unique)
    except DuplicateJobError:
        return None


def _lua_string(value: str | bytes) -> str:
    """A Lua string literal holding exactly these bytes (printable ASCII as is, the rest as decimal escapes)."""
    raw = value if isinstance(value, bytes) else str.encode(value)
    return '"' + "".join(chr(c) if 32 <= c < 127 and c not in b'"\\' else f"\\{c:03d}" for c in raw) + '"'


def _job_kind(
    queue_name: str,
    func: Callable[..., Any] | str,
    retry: Retry | None,
    timeout: int | None,
    result_ttl: int | None,
    failure_ttl: int | None,
    laned: bool = False,
) -> _JobKind:
    """The script and shared fields of one kind of job, built once per process from a job RQ prepares itself."""
    connection = get_redis(dedicated=True)
    default_timeout = current_app.config["JOB_TIMEOUT_SECONDS"]
    intervals = tuple(retry.intervals) if retry is not None else None
    retries = retry.max if retry is not None else None
    key = (connection, queue_name, default_timeout, func, retries, intervals, timeout, result_ttl, failure_ttl, laned)
    kind = _JOB_KINDS.get(key)
    if kind is not None:
        return kind
    check_rq_version()
    queue = get_queue(queue_name)
    prototype = queue.create_job(
        func,  # type: ignore[type-var]  # rq's TypeVar takes a str or a callable, not their union
        args=(),
        job_id="prototype",
        retry=retry,
        timeout=timeout,
        result_ttl=result_ttl,
        failure_ttl=failure_ttl,
        status=JobStatus.QUEUED,
    )
    queue._prepare_for_queue(prototype)
    hset_args = _build_hset_args(prototype)
    fields = dict(zip(hset_args[::2], hset_args[1::2], strict=True))
    missing = [name for name in _PER_JOB_FIELDS if name not in fields]
    if missing:
        raise RuntimeError(f"rq no longer writes {missing} into a job hash; check app.core.queue against rq")
    shared = "".join(
        f", {_lua_string(name)}, {_lua_string(value)}" for name, value in fields.items() if name not in _PER_JOB_FIELDS
    )
    source = UNIQUE_ENQUEUE_SCRIPT.replace("{fields}", shared).replace("{lane}", _LANE_PUSH if laned else "")
    source = source.replace("{target}", "KEYS[6]" if laned else "KEYS[2]")
    script = connection.register_script(source)
    kind = _JobKind(
        client=connection,
        script=script,
        func_name=str(prototype.func_name),
        serializer=prototype.serializer,
        ttl=prototype.ttl if prototype.ttl is not None else -1,
        queue_key=queue.key,
        queues_key=queue.redis_queues_keys,
    )
    _JOB_KINDS[key] = kind
    return kind


def enqueue_unique(
    queue_name: str,
    func: Callable[..., Any] | str,
    *args: Any,
    job_id: str,
    retry: Retry | None = None,
    timeout: int | None = None,
    result_ttl: int | None = None,
    failure_ttl: int | None = None,
    lane: int | str | None = None,
) -> bool:
    """Queue.enqueue(..., unique=True) for a job without dependencies, in one Redis round trip.

    True when the job was queued, False when a job with this id exists. No RQ `Job` or `Queue` is built
    per call (the webhook path calls this once per event): the per-job fields are made as RQ makes them
    (its serializer on (function, None, args, {}), zlib, its call string and timestamp format).
    `lane` (the events queue only): the portal whose lane the job waits in, for the fair picker.
    """
    if queue_name not in current_app.config["QUEUE_NAMES"]:
        raise ValueError(f"unknown queue {queue_name!r}")
    laned = lane is not None and queue_name == EVENTS_QUEUE
    kind = _job_kind(queue_name, func, retry, timeout, result_ttl, failure_ttl, laned)
    data = zlib.compress(kind.serializer.dumps((kind.func_name, None, args, {})))
    description = get_call_string(kind.func_name, args, {}, max_length=75)
    moment = utcformat(now())
    keys: tuple[str, ...] = (Job.redis_job_namespace_prefix + job_id, kind.queue_key, kind.queues_key)
    if laned and lane is not None:
        keys = (*keys, RING_KEY, WAKE_KEY, lane_key(lane))
    stored = _run_script(kind.client, kind.script, keys, (job_id, kind.ttl, moment, data, description, moment))
    return stored == 1


def _run_script(client: Redis, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """EVALSHA sent straight on a dedicated client's connection (`get_redis(dedicated=True)`), under its lock.

    What `script(keys=..., args=...)` does, minus redis-py's per-command layers (retry wrapper, metrics,
    response callbacks), which cost about a third of the webhook's Redis call. Kept: the health check
    before a command on a connection idle for a while, one resend after a connection error (a Redis
    restart; the unique scripts refuse a job id that exists, so a resend cannot queue twice), and loading
    the script when Redis does not know it (a restarted Redis has an empty script cache).
    """
    connection = client.connection
    assert connection is not None, "a dedicated client keeps its connection"
    with client.single_connection_lock:
        try:
            return _evalsha(client, connection, script, keys, args)
        except RedisConnectionError:
            connection.disconnect()
            return _evalsha(client, connection, script, keys, args)


def _evalsha(client: Redis, connection: Any, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """One EVALSHA on the connection; through redis-py's Script (which loads it) on NOSCRIPT."""
    try:
        connection.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
        return connection.read_response()
    except NoScriptError:
        return script(keys=list(keys), args=list(args), client=client)


def replace_scheduled(queue_name: str, func: Callable[..., Any] | str, *args: Any, job_id: str, at: datetime) -> Job:
    """Schedule a one-per-key job at `at`, cancelling any earlier job with the same id."""
    queue = get_queue(queue_name)
    existing = queue.fetch_job(job_id)
    if existing is not None:
        existing.cancel()
        existing.delete()
    job = enqueue(queue_name, func, *args, job_id=job_id, unique=True, at=at)
    if job is None:
        raise RuntimeError(f"job {job_id} could not be replaced")
    return job


def queue_depths(app: Flask | None = None) -> dict[str, int]:
    """Jobs waiting in each queue (scheduled ones not counted; the events queue with its portals' lanes)."""
    app = app or current_app
    return {name: get_queue(name, app).count for name in app.config["QUEUE_NAMES"]}
