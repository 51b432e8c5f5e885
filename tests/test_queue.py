"""Queue behaviour on a real Redis: retries with backoff, the failed registry, the scheduler."""

import time
from datetime import timedelta

from flask import Flask
from rq import Retry
from rq.job import Job, JobStatus

from app import jobs
from app.core import schedule
from app.core.queue import enqueue, get_queue, get_redis, replace_scheduled
from app.core.worker import make_worker
from tests import helpers


def test_failing_job_is_retried_with_backoff_then_lands_in_failed_registry(app: Flask, worker):
    helpers.CALLS.clear()
    job = enqueue("default", helpers.always_fails, "x", retry=Retry(max=2, interval=[1, 2]))
    worker()
    assert helpers.CALLS == ["x"]
    assert job.id in get_queue("default").scheduled_job_registry  # waiting for its backoff
    time.sleep(1.2)
    worker()
    assert helpers.CALLS == ["x", "x"]
    time.sleep(2.2)
    worker()
    assert helpers.CALLS == ["x", "x", "x"]
    assert job.id in get_queue("default").failed_job_registry
    assert Job.fetch(job.id, connection=get_redis()).get_status() == JobStatus.FAILED


def test_scheduled_job_runs_only_when_due(app: Flask, worker):
    helpers.CALLS.clear()
    enqueue("callbacks", helpers.remember, "later", delay=timedelta(seconds=1))
    worker()
    assert helpers.CALLS == []
    time.sleep(1.2)
    worker()
    assert helpers.CALLS == ["later"]


def test_unique_job_id_refuses_a_second_copy(app: Flask):
    assert enqueue("default", helpers.remember, "a", job_id="deal-1-check", unique=True) is not None
    assert enqueue("default", helpers.remember, "a", job_id="deal-1-check", unique=True) is None
    assert get_queue("default").count == 1


def test_a_unique_job_is_still_queued_once_after_redis_forgot_its_scripts(app: Flask, redis_client):
    """A restarted Redis has an empty script cache: the enqueue loads the script again instead of failing."""
    assert enqueue("default", helpers.remember, "a", job_id="deal-1-check", unique=True) is not None
    redis_client.script_flush()
    assert enqueue("default", helpers.remember, "b", job_id="deal-2-check", unique=True) is not None
    redis_client.script_flush()
    assert enqueue("default", helpers.remember, "b", job_id="deal-2-check", unique=True) is None
    assert get_queue("default").get_job_ids() == ["deal-1-check", "deal-2-check"]


def test_replacing_a_scheduled_job_leaves_exactly_one(app: Flask):
    from datetime import UTC, datetime

    queue = get_queue("callbacks")
    first = datetime.now(UTC) + timedelta(hours=1)
    replace_scheduled("callbacks", helpers.remember, "cb", job_id="callback-case-7", at=first)
    replace_scheduled("callbacks", helpers.remember, "cb", job_id="callback-case-7", at=first + timedelta(hours=1))
    assert queue.scheduled_job_registry.get_job_ids() == ["callback-case-7"]
    scheduled_at = queue.scheduled_job_registry.get_scheduled_time("callback-case-7")
    assert abs((scheduled_at - (first + timedelta(hours=1))).total_seconds()) < 1


def test_periodic_jobs_are_scheduled_once_per_slot(app: Flask):
    """Every worker calls ensure_periodic_jobs on start; only the first call schedules anything."""
    app.config["PERIODIC_JOBS"] = jobs.PERIODIC_JOBS
    now = time.time()
    first = schedule.ensure_periodic_jobs(now)
    second = schedule.ensure_periodic_jobs(now)
    assert set(first) == {job.name for job in jobs.PERIODIC_JOBS}
    assert second == []


def test_periodic_job_runs_and_schedules_its_next_slot(app: Flask, worker):
    helpers.CALLS.clear()
    job = schedule.PeriodicJob("probe", helpers.tick, timedelta(seconds=3))
    app.config["PERIODIC_JOBS"] = (job,)
    now = time.time()
    schedule.ensure_periodic_jobs(now)
    time.sleep(schedule.next_slot(job, now) * 3 - now + 0.1)  # until the first slot is due, not the second
    worker()
    assert helpers.CALLS == ["tick"]
    registry = get_queue("default").scheduled_job_registry
    assert len(registry.get_job_ids()) == 1  # the next slot, and only that


def test_unique_enqueue_writes_what_rq_itself_writes(app: Flask, redis_client):
    """The one-round-trip unique enqueue stores the same job hash, queue entry and registry as RQ's own."""
    retry = Retry(max=3, interval=[5, 30])
    ours = enqueue("events", helpers.remember, "a", job_id="ours", unique=True, retry=retry, result_ttl=60)
    queue = get_queue("events")
    theirs = queue.enqueue(helpers.remember, "a", job_id="theirs", unique=True, retry=retry, result_ttl=60)
    assert ours is not None
    stored_ours, stored_theirs = redis_client.hgetall(ours.key), redis_client.hgetall(theirs.key)
    for moment in (b"created_at", b"enqueued_at"):
        assert stored_ours.pop(moment) and stored_theirs.pop(moment)
    assert stored_ours == stored_theirs
    assert redis_client.ttl(ours.key) == redis_client.ttl(theirs.key)
    assert queue.get_job_ids() == ["ours", "theirs"]
    assert redis_client.smembers("rq:queues") == {queue.key.encode()}
    fetched = Job.fetch("ours", connection=get_redis())
    assert fetched.get_status() == JobStatus.QUEUED
    assert fetched.retries_left == 3 and fetched.origin == "events"


def test_the_forking_worker_reports_running_jobs_alive_on_the_configured_schedule(app: Flask):
    app.config.update(JOB_HEARTBEAT_SECONDS=5, JOB_HEARTBEAT_GRACE_SECONDS=10, WORKER_MAINTENANCE_SECONDS=10)
    worker = make_worker(app)
    long_job = enqueue("default", helpers.remember, "long", timeout=180)
    short_job = enqueue("default", helpers.remember, "short", timeout=3)
    assert worker.job_monitoring_interval == 5 and worker.maintenance_interval == 10
    assert worker.get_heartbeat_ttl(long_job) == 15  # abandoned 15 s after its last report, not 90 s (RQ)
    assert worker.get_heartbeat_ttl(short_job) == 13
    assert worker.dequeue_timeout == 10  # an idle worker still runs its maintenance every 10 s, not 405 s


def test_a_job_abandoned_by_a_dead_worker_is_retried_at_once_and_keeps_its_backoff(app: Flask):
    job = enqueue("default", helpers.remember, "a", job_id="abandoned", retry=Retry(max=3, interval=[5, 30, 60]))
    queue = get_queue("default")
    worker = make_worker(app)
    assert queue.pop_job_id() == "abandoned"  # a worker took the job and died while running it
    worker.prepare_execution(job)
    assert "abandoned" in queue.started_job_registry
    queue.started_job_registry.cleanup(time.time() + 3600, exception_handlers=worker._exc_handlers)
    again = Job.fetch("abandoned", connection=get_redis())
    assert queue.get_job_ids() == ["abandoned"]  # back in the queue now, not in 5 s through the scheduler
    assert "abandoned" not in queue.scheduled_job_registry
    assert again.retries_left == 2
    assert again.retry_intervals == [0, 30, 60]  # a real failure later still backs off


def test_a_job_queued_under_a_module_name_from_before_the_layout_change_still_runs(app: Flask, worker):
    """Callbacks wait in Redis for up to 90 days: a job stored as "app.ledger.sweep_notices" still runs."""
    job = get_queue("default").enqueue("app.ledger.sweep_notices")
    worker()
    fetched = Job.fetch(job.id, connection=get_redis())
    assert fetched.get_status() == JobStatus.FINISHED
    assert fetched.return_value() == 0  # app.domain.ledger.sweep_notices ran: no notices were due


def test_every_renamed_module_of_stored_jobs_still_exists_at_its_new_place(app: Flask):
    import importlib

    from app.core.worker import RENAMED_JOB_MODULES

    for new in RENAMED_JOB_MODULES.values():
        importlib.import_module(new)


def test_the_unique_enqueue_refuses_an_rq_release_it_was_not_written_for():
    import pytest

    from app.core.queue import check_rq_version

    check_rq_version()  # the pinned one
    check_rq_version("2.12.9")
    for other in ("3.0.0", "2.13.0", "2.11.1", "nonsense"):
        with pytest.raises(RuntimeError, match=r"written for rq 2\.12\.x"):
            check_rq_version(other)
