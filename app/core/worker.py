"""RQ workers bound to the app: a fresh app context per job, fast recovery of abandoned jobs, the periodic
jobs kept scheduled by every worker's maintenance run, and jobs stored under moved module names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask import Flask
from rq import Queue, SimpleWorker, Worker
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.utils import import_attribute

from app.core.queue import get_redis
from app.core.schedule import ensure_periodic_jobs


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


# Modules the layout change of December 2026 moved. Jobs already in Redis (callbacks are scheduled up to
# 90 days ahead, periodic slots and retries too) name the old module; they run the function at its new
# place. Kept for one release: remove in the first release after 2027-03-31.
RENAMED_JOB_MODULES: dict[str, str] = {
    **{f"app.{name}": f"app.core.{name}" for name in ("inbox", "schedule", "queue")},
    **{
        f"app.{name}": f"app.domain.{name}"
        for name in ("ledger", "penalties", "review", "exchange", "taskcontrol", "reports", "reconcile", "audit")
    },
    "app.refusals": "app.domain.guard",
}


class AppJob(Job):
    """An RQ job that still finds functions named by their module before the layout change."""

    @property
    def func(self) -> Any:
        name = self.func_name
        if name and not self.instance:
            module, _, attribute = name.rpartition(".")
            if module in RENAMED_JOB_MODULES:
                return import_attribute(f"{RENAMED_JOB_MODULES[module]}.{attribute}")
        return super().func


class AppJobMixin:
    """Runs every job inside a fresh Flask app context (fresh DB session per job)."""

    flask_app: Flask

    def perform_job(self, job: Job, queue: Queue) -> bool:
        with self.flask_app.app_context():
            return super().perform_job(job, queue)  # type: ignore[misc]

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()  # type: ignore[misc]
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


def make_worker(
    app: Flask, queue_names: Sequence[str] | None = None, simple: bool = False
) -> AppWorker | AppSimpleWorker:
    """A worker bound to the app, listening on the given queues (all by default, events first)."""
    names = list(queue_names or app.config["QUEUE_NAMES"])
    connection = get_redis(app)
    queues = [Queue(name, connection=connection, job_class=AppJob) for name in names]
    worker: AppWorker | AppSimpleWorker
    if simple:
        worker = AppSimpleWorker(queues, connection=connection, job_class=AppJob)
    else:
        forking = AppWorker(
            queues,
            connection=connection,
            job_class=AppJob,
            job_monitoring_interval=app.config["JOB_HEARTBEAT_SECONDS"],
            maintenance_interval=app.config["WORKER_MAINTENANCE_SECONDS"],
        )
        forking.heartbeat_grace = app.config["JOB_HEARTBEAT_GRACE_SECONDS"]
        worker = forking
    worker.push_exc_handler(retry_abandoned_at_once)
    worker.flask_app = app
    return worker
