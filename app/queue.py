"""RQ on Redis: connections, named queues, enqueue helpers and the app-aware worker."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask, current_app
from redis import Redis
from redis.commands.core import Script
from rq import Queue, Retry, SimpleWorker, Worker
from rq.exceptions import AbandonedJobError, DuplicateJobError
from rq.job import Job, JobStatus
from rq.scripts import _build_hset_args

_CONNECTIONS: dict[tuple[int, str], Redis] = {}

# RQ 2.12's unique enqueue (rq.scripts.UNIQUE_ENQUEUE_SCRIPT: refuse an existing job hash, save it, set its TTL,
# push its id) plus the `SADD rq:queues` that Queue.enqueue_job sends in a transaction of its own beforehand:
# one round trip to Redis instead of two on the webhook path. tests/test_queue.py checks that the job hash,
# the queue list and the queue registry match what rq's own Queue.enqueue(..., unique=True) writes.
UNIQUE_ENQUEUE_SCRIPT = """
if redis.call("EXISTS", KEYS[1]) == 1 then
    return 0
end
redis.call("SADD", KEYS[3], KEYS[2])
if #ARGV > 2 then
    redis.call("HSET", KEYS[1], unpack(ARGV, 3))
end
local ttl = tonumber(ARGV[2])
if ttl and ttl > 0 then
    redis.call("EXPIRE", KEYS[1], ttl)
end
redis.call("RPUSH", KEYS[2], ARGV[1])
return 1
"""
_SCRIPTS: dict[Redis, Script] = {}


def redis_url(app: Flask | None = None) -> str:
    """REDIS_URL, or the unix socket of the embedded Redis started by the run command."""
    config = (app or current_app).config
    return config["REDIS_URL"] or f"unix://{config['EMBEDDED_REDIS_SOCKET']}"


def get_redis(app: Flask | None = None) -> Redis:
    """One Redis client per process and URL, created on first use, never at import."""
    url = redis_url(app)
    key = (os.getpid(), url)
    if key not in _CONNECTIONS:
        _CONNECTIONS[key] = Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10, health_check_interval=30)
    return _CONNECTIONS[key]


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
                return _enqueue_unique(queue, func, args, job_id, retry, timeout, result_ttl, failure_ttl)
            return queue.enqueue(func, *args, **options)
        # Queue.enqueue_at ignores unique= in RQ 2.12, so the job is built and scheduled in two steps.
        run_at = at if at is not None else datetime.now(UTC) + (delay or timedelta())
        job = queue.create_job(
            func,
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


def _enqueue_unique(
    queue: Queue,
    func: Callable[..., Any] | str,
    args: tuple[Any, ...],
    job_id: str,
    retry: Retry | None,
    timeout: int | None,
    result_ttl: int | None,
    failure_ttl: int | None,
) -> Job:
    """Queue.enqueue(..., unique=True) for a job without dependencies, in one Redis round trip.

    The job is built and prepared by RQ itself (create_job, _prepare_for_queue, the hash fields of
    rq.scripts); only the two writes are merged. Raises DuplicateJobError when the job id exists.
    """
    job = queue.create_job(
        func,
        args=args,
        job_id=job_id,
        retry=retry,
        timeout=timeout,
        result_ttl=result_ttl,
        failure_ttl=failure_ttl,
        status=JobStatus.QUEUED,
    )
    queue._prepare_for_queue(job)
    connection = queue.connection
    script = _SCRIPTS.get(connection)
    if script is None:
        script = _SCRIPTS[connection] = connection.register_script(UNIQUE_ENQUEUE_SCRIPT)
    ttl = job.ttl if job.ttl is not None else -1
    stored = script(keys=[job.key, queue.key, queue.redis_queues_keys], args=[job.id, ttl, *_build_hset_args(job)])
    if stored == 0:
        raise DuplicateJobError(f"Job with ID {job.id!r} already exists")
    return job


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


def retry_abandoned_at_once(job: Job, exc_type: type[BaseException], exc_value: BaseException, tb: Any) -> bool:
    """Exception handler: a job abandoned by a dead worker is retried now, not after the back-off for failures.

    RQ calls the worker's exception handlers from StartedJobRegistry.cleanup before `job.retry()`, which
    schedules the retry after the job's next interval; a scheduled retry also waits for a live scheduler,
    and a killed worker's scheduler lock stays taken for a minute. The abandoned attempt did not fail, so
    the interval of this one retry becomes 0 (the job goes straight back to its queue); later failures keep
    their back-off. Returns True: the other handlers still run.
    """
    if exc_type is AbandonedJobError and job.retries_left and job.retry_intervals:
        intervals = list(job.retry_intervals)
        intervals[max(len(intervals) - job.retries_left, 0)] = 0
        job.retry_intervals = intervals
    return True


class AppJobMixin:
    """Runs every job inside a fresh Flask app context (fresh DB session per job)."""

    flask_app: Flask

    def perform_job(self, job: Job, queue: Queue) -> bool:
        with self.flask_app.app_context():
            return super().perform_job(job, queue)  # type: ignore[misc]

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()  # type: ignore[misc]
        from app.schedule import ensure_periodic_jobs

        with self.flask_app.app_context():
            ensure_periodic_jobs()


class AppWorker(AppJobMixin, Worker):
    """The production worker: forks a work-horse per job.

    RQ reports a running job alive every `job_monitoring_interval` and treats it as abandoned once a
    report is `60` seconds late; here the margin is JOB_HEARTBEAT_GRACE_SECONDS, so a job whose
    work-horse died with its worker (SIGKILL, OOM, a lost machine) is noticed within seconds, by the
    next maintenance run of any worker (every WORKER_MAINTENANCE_SECONDS, also while idle).
    """

    heartbeat_grace: int = 60

    @property
    def dequeue_timeout(self) -> int:
        """How long an idle worker blocks waiting for a job: at most the maintenance interval (RQ: the
        worker TTL less 15 s, 405 s by default), since maintenance only runs between two waits."""
        return max(1, min(self.worker_ttl - 15, self.maintenance_interval))

    def get_heartbeat_ttl(self, job: Job) -> int:
        interval = self.job_monitoring_interval
        if job.timeout and job.timeout > 0:
            interval = min(job.timeout - self.current_job_working_time, interval)
        return int(interval) + self.heartbeat_grace


class AppSimpleWorker(AppJobMixin, SimpleWorker):
    """Runs jobs in-process; used by tests to drive the queue deterministically."""


def make_worker(app: Flask, queue_names: Sequence[str] | None = None, simple: bool = False) -> Worker:
    """A worker bound to the app, listening on the given queues (all by default, events first)."""
    names = list(queue_names or app.config["QUEUE_NAMES"])
    connection = get_redis(app)
    queues = [Queue(name, connection=connection) for name in names]
    worker: Worker
    if simple:
        worker = AppSimpleWorker(queues, connection=connection)
    else:
        forking = AppWorker(
            queues,
            connection=connection,
            job_monitoring_interval=app.config["JOB_HEARTBEAT_SECONDS"],
            maintenance_interval=app.config["WORKER_MAINTENANCE_SECONDS"],
        )
        forking.heartbeat_grace = app.config["JOB_HEARTBEAT_GRACE_SECONDS"]
        worker = forking
    worker.push_exc_handler(retry_abandoned_at_once)
    worker.flask_app = app
    return worker


def init_app(app: Flask) -> None:
    """Register the worker command."""
    from app.cli import worker_command

    app.cli.add_command(worker_command)
