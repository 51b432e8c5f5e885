"""RQ workers bound to the app: a fresh app context per job, fast recovery of abandoned jobs, the periodic
jobs kept scheduled by every worker's maintenance run, and jobs stored under moved module names.

`flask worker` runs a small supervisor (`Supervisor`): the events queue's jobs run in-process in one child
(`HotWorker`, no fork per job), the other queues in a forking RQ worker in another child, which also runs the
scheduler for every queue. The supervisor restarts a child that exits (the hot one after WORKER_MAX_JOBS
jobs, for bounded memory) and kills the hot child when it stops reporting (a job hung past its timeout, or
a process stuck), after which the job it was running is retried at once as abandoned.
"""

from __future__ import annotations

import ctypes
import logging
import math
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flask import Flask
from rq import Queue, SimpleWorker, Worker
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.scheduler import RQScheduler
from rq.utils import import_attribute, now
from rq.worker import WorkerStatus

from app.core.queue import (
    EVENTS_QUEUE,
    LIMITER_WAIT_BUDGET,
    EventsQueue,
    JobDeferred,
    check_rq_version,
    get_redis,
)
from app.core.schedule import ensure_periodic_jobs

log = logging.getLogger(__name__)


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


def put_back_deferred(job: Job, exc_type: type[BaseException], exc_value: BaseException, tb: Any) -> bool:
    """Exception handler: a job that raised JobDeferred (its portal at the CRM's rate limit) runs again after
    the exception's `retry_after`, and that does not use up one of its retries.

    RQ then retries the job as after a failure (`job.retry`): one more retry is given, and the interval of
    this retry is the deferral's, the later ones stay those of the job's schedule.
    """
    if isinstance(exc_value, JobDeferred):
        delay = max(1, math.ceil(exc_value.retry_after or 1))
        left = job.retries_left or 0
        intervals = list(job.retry_intervals or [0])
        # The interval each remaining retry would get (RQ reads index len(intervals) - retries_left, at least 0).
        upcoming = [intervals[max(len(intervals) - k, 0)] for k in range(left, 0, -1)]
        job.retry_intervals = [delay, *upcoming]
        job.retries_left = left + 1
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
    """The worker of the slow queues: forks a work-horse per job.

    RQ reports a running job alive every `job_monitoring_interval` and treats it as abandoned once a
    report is `60` seconds late; here the margin is JOB_HEARTBEAT_GRACE_SECONDS, so a job whose
    work-horse died with its worker (SIGKILL, OOM, a lost machine) is noticed within seconds, by the
    next maintenance run of any worker (every WORKER_MAINTENANCE_SECONDS, also while idle).
    `scheduled_queues`: the queues its scheduler serves besides its own (the events queue, whose worker
    runs no scheduler: RQ's scheduler is a forked process, and the in-process worker keeps a thread).
    """

    queue_class = EventsQueue
    heartbeat_grace: int = 60
    scheduled_queues: Sequence[str] = ()

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

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = "%H:%M:%S",
        log_format: str = "%(asctime)s %(message)s",
    ) -> None:
        """RQ 2.12's BaseWorker._start_scheduler, with the scheduled queues added (private API: check_rq_version)."""
        if not self.scheduled_queues:
            super()._start_scheduler(burst, logging_level, date_format, log_format)
            return
        own = {queue.name for queue in self.queues}
        extra = [
            self.queue_class(name, connection=self.connection, job_class=self.job_class, serializer=self.serializer)
            for name in self.scheduled_queues
            if name not in own
        ]
        self.scheduler = RQScheduler(
            [*self.queues, *extra],
            connection=self.connection,
            logging_level=logging_level if logging_level is not None else self.log.level,
            date_format=date_format,
            log_format=log_format,
            serializer=self.serializer,
        )
        self.scheduler.acquire_locks()
        if self.scheduler.acquired_locks:
            if burst:
                try:
                    self.scheduler.register_birth()
                    self.scheduler.enqueue_scheduled_jobs()
                finally:
                    self.scheduler.release_locks()
                    self.scheduler.register_death()
            else:
                self.scheduler.start()


class AppSimpleWorker(AppJobMixin, SimpleWorker):
    """Runs jobs in-process until its queues are empty (`flask worker --burst`, and tests that drive the queue
    deterministically)."""

    queue_class = EventsQueue

    def subscribe(self) -> None:
        """No command channel: a burst run ends by itself, so it takes no `rq` shutdown or kill-horse commands,
        and RQ's listener thread would cost up to a second per run to stop (it blocks for a minute on its
        socket and is joined with a one-second timeout)."""


class Watch:
    """What the hot child tells its supervisor, in memory shared across the fork: when it last reported
    (time.monotonic, the same clock in both processes) and the id of the job it is running."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("fork")
        self.alive_at = context.RawValue(ctypes.c_double, time.monotonic())
        self.job_id = context.RawArray(ctypes.c_char, 256)

    def report(self) -> None:
        self.alive_at.value = time.monotonic()

    def silent_for(self) -> float:
        return time.monotonic() - self.alive_at.value

    def running(self) -> str:
        return self.job_id.value.decode(errors="replace")


class HotWorker(AppJobMixin, SimpleWorker):
    """The events queue's worker: runs each job in this process (no fork), in a fresh app context.

    A thread reports the running job alive every JOB_HEARTBEAT_SECONDS (RQ's forking worker does it from
    the parent; here nobody else could) and reports the process alive to the supervisor (`watch`) every
    moment, except once a job has run `kill_margin` seconds past its timeout: RQ's SIGALRM stops a job at
    its timeout, and when that does not work (a C call that ignores it) the silence lets the supervisor kill
    the process. A process stuck as a whole (its GIL held) falls silent too. The job's rate-limiter wait is
    bounded (`limiter_wait`, see app.crm.ratelimit): a job of a portal at its limit is put back instead.
    """

    queue_class = EventsQueue
    heartbeat_grace: int = 60
    limiter_wait: float | None = None
    kill_margin: float = 5.0
    watch: Watch | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._job_lock = threading.Lock()
        self._running: tuple[Job, float] | None = None
        self._reporter: threading.Thread | None = None
        self._stopped = threading.Event()

    @property
    def dequeue_timeout(self) -> int:
        return max(1, min(self.worker_ttl - 15, self.maintenance_interval))

    def get_heartbeat_ttl(self, job: Job) -> int:
        return int(self.job_monitoring_interval) + self.heartbeat_grace

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ's worker heartbeat (its key's TTL, minutes), sent at most once a second: RQ sends it three times
        per job, which at dozens of jobs a second is most of the worker's own Redis traffic."""
        last = self.last_heartbeat
        if timeout is None and pipeline is None and last is not None and (now() - last).total_seconds() < 1:
            return
        super().heartbeat(timeout, pipeline)

    def _report_loop(self) -> None:
        """The reporting thread: the supervisor every 0.25 s, the running job every job_monitoring_interval.

        It blocks the signals the main thread acts on, so the kernel delivers SIGALRM (the job's timeout) and
        SIGTERM/SIGINT to the main thread, interrupting a blocking call there.
        """
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGTERM, signal.SIGINT})
        last_beat = time.monotonic()
        while not self._stopped.wait(0.25):
            with self._job_lock:
                running = self._running
            now = time.monotonic()
            if running is None:
                if self.watch is not None:
                    self.watch.report()
                continue
            job, deadline = running
            if now > deadline:
                continue  # past its timeout and its margin: silence, the supervisor kills this process
            if self.watch is not None:
                self.watch.report()
            if now - last_beat >= self.job_monitoring_interval:
                last_beat = now
                try:
                    self.maintain_heartbeats(job)
                except Exception:
                    log.warning("job heartbeat failed", extra={"job_id": job.id}, exc_info=True)

    def work(self, *args: Any, **kwargs: Any) -> bool:
        # Report from the start: an idle worker waiting for its first job is alive, not silent.
        self._start_reporter()
        return bool(super().work(*args, **kwargs))

    def _start_reporter(self) -> None:
        if self._reporter is None:
            self._reporter = threading.Thread(target=self._report_loop, name="job-reporter", daemon=True)
            self._reporter.start()

    def execute_job(self, job: Job, queue: Queue) -> None:
        self._start_reporter()
        self.prepare_execution(job)
        timeout = job.timeout if job.timeout and job.timeout > 0 else self.queue_class.DEFAULT_TIMEOUT
        if self.watch is not None:
            self.watch.job_id.value = job.id.encode()[:255]
            self.watch.report()
        with self._job_lock:
            self._running = (job, time.monotonic() + timeout + self.kill_margin)
        budget = LIMITER_WAIT_BUDGET.set(self.limiter_wait)
        try:
            self.perform_job(job, queue)
        finally:
            LIMITER_WAIT_BUDGET.reset(budget)
            with self._job_lock:
                self._running = None
            if self.watch is not None:
                self.watch.job_id.value = b""
                self.watch.report()
        self.set_state(WorkerStatus.IDLE)

    def teardown(self) -> None:
        self._stopped.set()
        super().teardown()


AnyWorker = AppWorker | AppSimpleWorker | HotWorker


def make_worker(
    app: Flask, queue_names: Sequence[str] | None = None, simple: bool = False, *, hot: bool = False
) -> AnyWorker:
    """A worker bound to the app, listening on the given queues (all by default, events first).

    Default: RQ's forking worker. `simple`: in-process without a watchdog (tests). `hot`: the supervised
    in-process worker of the events queue (`HotWorker`).
    """
    check_rq_version()  # the fair picker and the scheduler override lean on RQ 2.12's internals
    names = list(queue_names or app.config["QUEUE_NAMES"])
    connection = get_redis(app)
    queues = [EventsQueue(name, connection=connection, job_class=AppJob) for name in names]
    worker: AnyWorker
    if simple:
        worker = AppSimpleWorker(queues, connection=connection, job_class=AppJob)
    elif hot:
        hot_worker = HotWorker(
            queues,
            connection=connection,
            job_class=AppJob,
            job_monitoring_interval=app.config["JOB_HEARTBEAT_SECONDS"],
            maintenance_interval=app.config["WORKER_MAINTENANCE_SECONDS"],
        )
        hot_worker.heartbeat_grace = app.config["JOB_HEARTBEAT_GRACE_SECONDS"]
        hot_worker.limiter_wait = app.config["WORKER_LIMITER_WAIT_SECONDS"]
        worker = hot_worker
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
    worker.push_exc_handler(put_back_deferred)
    worker.push_exc_handler(retry_abandoned_at_once)
    worker.flask_app = app
    return worker


def abandon_now(app: Flask, queue_name: str, job_id: str) -> bool:
    """Treat a job of a killed worker as abandoned now (not after its heartbeat lapses): it is retried at
    once (retry_abandoned_at_once) or failed. False when the job was not running any more."""
    connection = get_redis(app)
    registry = StartedJobRegistry(queue_name, connection=connection, job_class=AppJob)
    members = [m.decode() if isinstance(m, bytes) else str(m) for m in connection.zrange(registry.key, 0, -1)]
    ours = [member for member in members if member == job_id or member.startswith(f"{job_id}:")]
    if not ours:
        return False
    connection.zadd(registry.key, dict.fromkeys(ours, 1), xx=True)
    registry.cleanup(exception_handlers=[put_back_deferred, retry_abandoned_at_once])
    return True


def _stop_with_parent(parent_pid: int) -> None:
    """Linux: SIGTERM (a warm stop) to this process when its supervisor dies, even by SIGKILL; a supervisor
    already gone by now stops it at once. Elsewhere the child outlives a killed supervisor."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class _Child:
    role: str  # "hot" (events, in-process) or "slow" (the other queues, forking, with the scheduler)
    queue_names: list[str]
    process: Any = None
    watch: Watch | None = None
    started_at: float = 0.0


class Supervisor:
    """`flask worker`: runs the hot child and the slow child, restarts them, and kills a silent hot child.

    `stall_seconds`: how long the hot child may stay silent (JOB_HEARTBEAT_SECONDS plus half the grace by
    default): shorter than the time after which other workers would take its job for abandoned, so a stuck
    job never runs twice at once.
    """

    def __init__(self, app: Flask, queue_names: Sequence[str] | None = None, logging_level: str = "INFO") -> None:
        config = app.config
        self.app = app
        self.logging_level = logging_level
        names = list(queue_names or config["QUEUE_NAMES"])
        self.children: list[_Child] = []
        if EVENTS_QUEUE in names:
            self.children.append(_Child("hot", [EVENTS_QUEUE]))
        slow = [name for name in names if name != EVENTS_QUEUE]
        if slow:
            self.children.append(_Child("slow", slow))
        self.max_jobs = max(1, int(config["WORKER_MAX_JOBS"]))
        self.stall_seconds = config["JOB_HEARTBEAT_SECONDS"] + config["JOB_HEARTBEAT_GRACE_SECONDS"] / 2
        self.stopping = False

    def _child_main(self, child: _Child, supervisor_pid: int) -> None:
        """In the forked child: a fresh worker of its role, run until it stops (or after max_jobs)."""
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        _stop_with_parent(supervisor_pid)
        with self.app.app_context():
            if child.role == "hot":
                worker = make_worker(self.app, child.queue_names, hot=True)
                assert isinstance(worker, HotWorker)
                worker.watch = child.watch
                scheduler = not any(other.role == "slow" for other in self.children)
                worker.work(with_scheduler=scheduler, max_jobs=self.max_jobs, logging_level=self.logging_level)
            else:
                slow = make_worker(self.app, child.queue_names)
                assert isinstance(slow, AppWorker)
                slow.scheduled_queues = [EVENTS_QUEUE] if any(c.role == "hot" for c in self.children) else []
                slow.work(with_scheduler=True, logging_level=self.logging_level)

    def _start(self, child: _Child) -> None:
        context = multiprocessing.get_context("fork")
        if child.role == "hot":
            child.watch = Watch()
        child.process = context.Process(target=self._child_main, args=(child, os.getpid()), name=f"rq-{child.role}")
        child.process.start()
        child.started_at = time.monotonic()
        log.info("worker child started", extra={"role": child.role, "pid": child.process.pid})

    def _recover(self, child: _Child, reason: str) -> None:
        """After the hot child died or was killed: its job is retried now, not when its heartbeat lapses."""
        job_id = child.watch.running() if child.watch is not None else ""
        if not job_id:
            return
        try:
            with self.app.app_context():
                retried = abandon_now(self.app, EVENTS_QUEUE, job_id)
        except Exception:
            log.warning("could not requeue the job of a dead worker", extra={"job_id": job_id}, exc_info=True)
            return
        log.warning("job of a dead worker requeued", extra={"job_id": job_id, "reason": reason, "requeued": retried})

    def _stop(self, _signum: int, _frame: Any) -> None:
        self.stopping = True

    def run(self) -> int:
        """Supervise until SIGTERM or SIGINT; then stop the children (warm: each finishes its job)."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for child in self.children:
            self._start(child)
        while not self.stopping:
            time.sleep(0.2)
            for child in self.children:
                if self.stopping:
                    break
                process = child.process
                if process.exitcode is not None:
                    process.join()
                    if child.role == "hot":
                        self._recover(child, f"exited with {process.exitcode}")
                    if time.monotonic() - child.started_at < 1.0:
                        time.sleep(1.0)  # a child that cannot start (Redis down) is not restarted in a loop
                    self._start(child)
                elif child.watch is not None and child.watch.silent_for() > self.stall_seconds:
                    log.error(
                        "worker child silent: killed",
                        extra={"pid": process.pid, "job_id": child.watch.running(), "silent": child.watch.silent_for()},
                    )
                    os.kill(process.pid, signal.SIGKILL)
                    process.join()
                    self._recover(child, "killed: silent")
                    self._start(child)
        for child in self.children:
            if child.process is not None and child.process.exitcode is None:
                os.kill(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        for child in self.children:
            if child.process is None:
                continue
            child.process.join(max(0.0, deadline - time.monotonic()))
            if child.process.exitcode is None:
                os.kill(child.process.pid, signal.SIGKILL)
                child.process.join()
        return 0
