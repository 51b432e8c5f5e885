"""RQ on Redis: connections, named queues, enqueue helpers and the app-aware worker."""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Sequence
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
from rq.exceptions import DuplicateJobError
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
redis.call("RPUSH", KEYS[2], ARGV[1])
return 1
"""
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
    return Queue(name, connection=get_redis(app), default_timeout=app.config["JOB_TIMEOUT_SECONDS"])


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
) -> _JobKind:
    """The script and shared fields of one kind of job, built once per process from a job RQ prepares itself."""
    connection = get_redis(dedicated=True)
    default_timeout = current_app.config["JOB_TIMEOUT_SECONDS"]
    intervals = tuple(retry.intervals) if retry is not None else None
    retries = retry.max if retry is not None else None
    key = (connection, queue_name, default_timeout, func, retries, intervals, timeout, result_ttl, failure_ttl)
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
    script = connection.register_script(UNIQUE_ENQUEUE_SCRIPT.replace("{fields}", shared))
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
) -> bool:
    """Queue.enqueue(..., unique=True) for a job without dependencies, in one Redis round trip.

    True when the job was queued, False when a job with this id exists. No RQ `Job` or `Queue` is built
    per call (the webhook path calls this once per event): the per-job fields are made as RQ makes them
    (its serializer on (function, None, args, {}), zlib, its call string and timestamp format).
    """
    if queue_name not in current_app.config["QUEUE_NAMES"]:
        raise ValueError(f"unknown queue {queue_name!r}")
    kind = _job_kind(queue_name, func, retry, timeout, result_ttl, failure_ttl)
    data = zlib.compress(kind.serializer.dumps((kind.func_name, None, args, {})))
    description = get_call_string(kind.func_name, args, {}, max_length=75)
    moment = utcformat(now())
    keys = (Job.redis_job_namespace_prefix + job_id, kind.queue_key, kind.queues_key)
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
    """Jobs waiting in each queue (scheduled ones not counted)."""
    app = app or current_app
    return {name: get_queue(name, app).count for name in app.config["QUEUE_NAMES"]}
