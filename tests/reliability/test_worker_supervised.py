"""The events queue's in-process worker under its supervisor (`flask --app wsgi worker`), in real processes.

No fork per job: the events jobs of one child run in that child's own process. What a fork per job gave
for free, the supervisor keeps: a job hung past its timeout where RQ's SIGALRM cannot reach it is stopped
(the child is killed) and retried; a child killed mid-job has its job retried at once; a child is replaced
after WORKER_MAX_JOBS jobs, so memory growth is bounded. Timings are scaled down through the environment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from rq import Retry
from rq.job import Job, JobStatus

from app.core.queue import enqueue, get_redis
from tests.conftest import TEST_REDIS_URL

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def supervised(app: Flask, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `flask --app wsgi worker` (a session of its own) with scaled-down timings; stopped at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(**settings: str) -> subprocess.Popen[bytes]:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST", "COV_"))}
        env.update(
            INSTANCE_PATH=str(tmp_path),
            DATABASE_URL=app.config["DATABASE_URL"],
            REDIS_URL=TEST_REDIS_URL,
            SECRET_KEY=app.config["SECRET_KEY"],
            JOB_HEARTBEAT_SECONDS="1",
            JOB_HEARTBEAT_GRACE_SECONDS="2",
            WORKER_MAINTENANCE_SECONDS="2",
            LOG_LEVEL="INFO",
            **settings,
        )
        log = (tmp_path / "worker.log").open("ab")
        worker = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "wsgi", "worker"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()


def wait_for(check: Callable[[], Any], timeout: float, what: str, log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    tail = log.read_text()[-4000:] if log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def finished(job_id: str) -> Any:
    job = Job.fetch(job_id, connection=get_redis())
    return job.return_value() if job.get_status() == JobStatus.FINISHED else None


def test_events_jobs_run_in_the_childs_own_process_which_is_replaced_after_max_jobs(
    app: Flask, supervised, tmp_path: Path
):
    worker = supervised(WORKER_MAX_JOBS="3")
    jobs = [enqueue("events", "tests.reliability.jobs.pid", job_id=f"pid-{n}") for n in range(7)]
    assert all(job is not None for job in jobs)
    pids = [wait_for(lambda n=n: finished(f"pid-{n}"), 60, f"job {n}", tmp_path / "worker.log") for n in range(7)]
    assert worker.pid not in pids  # run by the child, not by the supervisor
    # no fork per job: three jobs in one process, then a fresh process for the next three, and so on
    assert pids[0] == pids[1] == pids[2] and pids[3] == pids[4] == pids[5]
    assert len(set(pids)) == 3


def test_a_job_hung_past_its_timeout_where_sigalrm_cannot_reach_it_is_stopped_and_retried(
    app: Flask, supervised, tmp_path: Path
):
    supervised()
    marker = tmp_path / "hung"
    started = time.monotonic()
    enqueue("events", "tests.reliability.jobs.hang_once", str(marker), job_id="hung", timeout=2, retry=Retry(3, [60]))
    result = wait_for(lambda: finished("hung"), 40, "the hung job to be retried", tmp_path / "worker.log")
    elapsed = time.monotonic() - started
    hung_pid = int(marker.read_text())
    assert result != hung_pid  # the retry ran in the replacement child
    with pytest.raises(ProcessLookupError):
        os.kill(hung_pid, 0)  # the hung child is gone
    # timeout 2 s + 5 s of margin + 2 s of silence, then retried at once (not after the 60 s back-off)
    assert elapsed < 30, f"retried after {elapsed:.1f} s"
    assert Job.fetch("hung", connection=get_redis()).retries_left == 2


def test_the_in_process_child_killed_mid_job_its_job_is_retried_at_once(app: Flask, supervised, tmp_path: Path):
    supervised()
    marker = tmp_path / "killed"
    enqueue(
        "events", "tests.reliability.jobs.sleep_once", str(marker), job_id="killed", timeout=120, retry=Retry(3, [60])
    )
    wait_for(marker.exists, 30, "the job to start", tmp_path / "worker.log")
    time.sleep(0.2)
    child = int(marker.read_text())
    os.kill(child, signal.SIGKILL)
    killed_at = time.monotonic()
    result = wait_for(lambda: finished("killed"), 30, "the killed job to be retried", tmp_path / "worker.log")
    assert result != child
    # requeued by the supervisor when the child died, and run by the replacement child (RQ alone: 60-90 s)
    assert time.monotonic() - killed_at < 10
    assert Job.fetch("killed", connection=get_redis()).retries_left == 2


def test_after_a_redis_restart_the_supervised_workers_go_on_with_new_events(
    database_url: str, tmp_path: Path, app: Flask
):
    """Redis goes away and comes back empty-handed (a restart): the workers reconnect, or the supervisor
    replaces a child that gave up, and an event queued afterwards is run."""
    from app.core import embedded_redis
    from tests.conftest import make_app

    socket_path = Path("/tmp") / f"rc-sup-{tmp_path.name}.sock"
    server = embedded_redis.start(socket_path)
    redis_url = f"unix://{socket_path}"
    outage_app = make_app(database_url, tmp_path, REDIS_URL=redis_url)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST", "COV_"))}
    env.update(
        INSTANCE_PATH=str(tmp_path),
        DATABASE_URL=app.config["DATABASE_URL"],
        REDIS_URL=redis_url,
        SECRET_KEY=app.config["SECRET_KEY"],
        JOB_HEARTBEAT_SECONDS="1",
        JOB_HEARTBEAT_GRACE_SECONDS="2",
        WORKER_MAINTENANCE_SECONDS="2",
        LOG_LEVEL="INFO",
    )
    log = tmp_path / "worker.log"
    with log.open("ab") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "wsgi", "worker"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with outage_app.app_context():
            connection = get_redis(outage_app)
            enqueue("events", "tests.reliability.jobs.pid", job_id="before")
            wait_for(lambda: finished_on(connection, "before"), 30, "the first job", log)
            server.terminate()
            server.wait(timeout=10)
            time.sleep(3)  # the workers meet a dead socket for a while
            server = embedded_redis.start(socket_path)
            deadline = time.monotonic() + 30
            while True:  # the web side's enqueue after the restart (its connection reconnects)
                try:
                    enqueue("events", "tests.reliability.jobs.pid", job_id="after")
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            assert wait_for(lambda: finished_on(connection, "after"), 40, "the job after the restart", log)
            assert worker.poll() is None  # the supervisor itself kept running
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        server.terminate()
        server.wait(timeout=10)


def finished_on(connection: Any, job_id: str) -> Any:
    try:
        job = Job.fetch(job_id, connection=connection)
    except Exception:
        return None
    return job.return_value() if job.get_status() == JobStatus.FINISHED else None


def test_an_idle_child_waiting_for_its_first_job_is_not_taken_for_a_silent_one(app: Flask, supervised, tmp_path: Path):
    supervised()
    log = tmp_path / "worker.log"
    wait_for(lambda: log.exists() and log.stat().st_size > 0, 30, "the worker to start", log)
    time.sleep(6)  # three times the stall limit (JOB_HEARTBEAT_SECONDS 1 + half of the grace 2) with no job
    assert enqueue("events", "tests.reliability.jobs.pid", job_id="idle-0") is not None
    first = wait_for(lambda: finished("idle-0"), 30, "the first job", log)
    assert "worker child silent" not in log.read_text()
    time.sleep(6)
    assert enqueue("events", "tests.reliability.jobs.pid", job_id="idle-1") is not None
    assert wait_for(lambda: finished("idle-1"), 30, "the second job", log) == first  # the same child, never replaced
    assert "worker child silent" not in log.read_text()
