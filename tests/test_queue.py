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


# ---- the events queue: per-portal lanes and the fair picker


def _pick_all(app: Flask) -> list[str]:
    """Job ids in the order the events queue gives them out (nothing run)."""
    from app.core.queue import EventsQueue

    queue = get_queue("events")
    picked = []
    while (job_id := EventsQueue.pick(queue, record_intermediate=False)) is not None:
        picked.append(job_id)
    return picked


def test_the_picker_gives_each_portal_a_turn_in_order_of_arrival(app: Flask):
    from app.core.queue import enqueue_unique

    for n in range(5):
        assert enqueue_unique("events", helpers.remember, f"a{n}", job_id=f"a{n}", lane=1)
    assert enqueue_unique("events", helpers.remember, "b0", job_id="b0", lane=2)
    assert enqueue_unique("events", helpers.remember, "c0", job_id="c0", lane=3)
    assert enqueue_unique("events", helpers.remember, "b1", job_id="b1", lane=2)
    queue = get_queue("events")
    assert queue.count == 8
    assert sorted(queue.get_job_ids()) == sorted(["a0", "a1", "a2", "a3", "a4", "b0", "b1", "c0"])
    assert _pick_all(app) == ["a0", "b0", "c0", "a1", "b1", "a2", "a3", "a4"]
    assert queue.count == 0


def test_jobs_rq_queues_itself_take_turns_with_the_portals(app: Flask):
    """Retries and re-runs of abandoned jobs go to the queue's own list: one more lane, not behind a burst."""
    from app.core.queue import enqueue_unique

    for n in range(4):
        enqueue_unique("events", helpers.remember, f"a{n}", job_id=f"a{n}", lane=1)
    get_queue("events").enqueue(helpers.remember, "retry", job_id="retry")  # as RQ's job.retry() queues it
    assert _pick_all(app) == ["a0", "retry", "a1", "a2", "a3"]


def test_a_removed_or_no_longer_queued_job_is_skipped_by_the_picker(app: Flask):
    from app.core.queue import enqueue_unique

    for name in ("a0", "a1", "a2"):
        enqueue_unique("events", helpers.remember, name, job_id=name, lane=1)
    queue = get_queue("events")
    queue.remove("a0")
    assert queue.count == 2
    Job.fetch("a1", connection=get_redis()).set_status(JobStatus.FAILED)  # given up while still listed
    assert _pick_all(app) == ["a2"]


def test_one_portals_burst_does_not_hold_back_another_portals_single_event(app: Flask, monkeypatch):
    """200 events of one portal queued before one event of another: the second is among the first jobs run."""
    from app.core import inbox

    order: list[int | None] = []
    monkeypatch.setitem(inbox.PROCESSORS, ("test", "ok"), lambda item: order.append(item.portal_id))
    busy, quiet = helpers.make_portal("busy"), helpers.make_portal("quiet")
    for n in range(200):
        inbox.accept("test", "ok", f"busy-{n}", "body", busy.id)
    inbox.accept("test", "ok", "quiet-0", "body", quiet.id)
    assert get_queue("events").count == 201
    make_worker(app, ["events"], hot=True).work(burst=True)
    assert len(order) == 201
    assert order.index(quiet.id) <= 2  # picked second (its portal's first turn), not 201st


def test_an_idle_worker_wakes_for_a_new_event_at_once(app: Flask):
    import threading

    from app.core.queue import EventsQueue, enqueue_unique

    queue = get_queue("events")
    connection = get_redis()
    got: list[str] = []

    def wait() -> None:
        result = EventsQueue.dequeue_any([queue], 10, connection=connection)
        got.append(result[0].id if result else "")

    waiter = threading.Thread(target=wait)
    started = time.monotonic()
    waiter.start()
    time.sleep(0.3)
    enqueue_unique("events", helpers.remember, "e", job_id="e", lane=7)
    waiter.join(10)
    assert got == ["e"]
    assert time.monotonic() - started < 2  # woken by the event, not by the end of the wait


# ---- a job at its portal's rate limit is put back, not slept on


def test_a_deferred_job_runs_again_after_the_wait_without_using_up_a_retry(app: Flask, worker):
    job = enqueue("default", helpers.deferred, 1.5, retry=Retry(max=3, interval=[5, 30, 60]))
    worker()
    again = Job.fetch(job.id, connection=get_redis())
    registry = get_queue("default").scheduled_job_registry
    assert job.id in registry
    wait = registry.get_scheduled_time(job.id).timestamp() - time.time()
    assert 0 < wait <= 2.1  # after the deferral's 1.5 s (rounded up), not the 5 s back-off of a failure
    assert again.retries_left == 3 and again.retry_intervals == [2, 5, 30, 60]  # 3 left: none used up


def test_the_limiter_puts_a_hot_job_back_instead_of_sleeping(app: Flask, redis_client):
    import pytest

    from app.core.queue import LIMITER_WAIT_BUDGET
    from app.crm.ratelimit import Bucket, RateLimitDeferred, RateLimiter

    limiter = RateLimiter(redis_client, headroom=0.0, jitter_seconds=0.0)
    bucket = Bucket(rate=0.5, burst=1)  # one request, then one every 2 s
    assert limiter.acquire("portal", bucket) == 0
    token = LIMITER_WAIT_BUDGET.set(0.5)
    try:
        started = time.monotonic()
        with pytest.raises(RateLimitDeferred) as deferred:
            limiter.acquire("portal", bucket)
        assert time.monotonic() - started < 0.3  # no sleep
        assert 1.5 < deferred.value.retry_after <= 2.0
    finally:
        LIMITER_WAIT_BUDGET.reset(token)
    assert limiter.reserve("portal", bucket) > 1.5  # the deferred call reserved nothing: the next slot is still 2 s out


def test_an_inbox_event_put_back_does_not_count_as_an_attempt(app: Flask, worker, monkeypatch):
    from app.core import inbox
    from app.core.db import db
    from app.core.models import InboxItem
    from app.core.queue import JobDeferred

    def at_the_limit(item: InboxItem) -> None:
        error = JobDeferred("portal at its rate limit")
        error.retry_after = 1.0
        raise error

    monkeypatch.setitem(inbox.PROCESSORS, ("test", "ok"), at_the_limit)
    inbox_id = inbox.accept("test", "ok", "k-deferred", "body", helpers.make_portal().id)
    worker(["events"])
    db.session.expire_all()
    row = db.session.get(InboxItem, inbox_id)
    assert row.attempts == 0 and row.status == InboxItem.PENDING
    job = Job.fetch(f"inbox-{inbox_id}", connection=get_redis())
    assert job.get_status() == JobStatus.SCHEDULED and job.retries_left == inbox.RETRY.max


def test_the_events_worker_puts_back_a_portals_event_at_its_rate_limit_and_goes_on(app: Flask, monkeypatch):
    """Two events of a portal whose CRM allows one request now and the next in 5 s, and one of another
    portal: the second event is put back (not slept on for 5 s) and the other portal's runs meanwhile."""
    from app.core import inbox
    from app.core.db import db
    from app.core.models import InboxItem
    from app.crm.ratelimit import Bucket, limiter_for

    done: list[str] = []

    def one_crm_request(item: InboxItem) -> None:
        limiter_for().acquire(f"b24:{item.portal_id}", Bucket(rate=0.2, burst=1))
        done.append(item.dedupe_key)

    monkeypatch.setitem(inbox.PROCESSORS, ("test", "ok"), one_crm_request)
    limited, other = helpers.make_portal("limited"), helpers.make_portal("other")
    first = inbox.accept("test", "ok", "limited-1", "body", limited.id)
    second = inbox.accept("test", "ok", "limited-2", "body", limited.id)
    inbox.accept("test", "ok", "other-1", "body", other.id)
    started = time.monotonic()
    make_worker(app, ["events"], hot=True).work(burst=True)
    assert time.monotonic() - started < 3  # nobody slept for the 5 s slot
    assert done == ["limited-1", "other-1"]
    db.session.expire_all()
    assert db.session.get(InboxItem, first).status == InboxItem.DONE
    put_back = db.session.get(InboxItem, second)
    assert put_back.status == InboxItem.PENDING and put_back.attempts == 0
    job = Job.fetch(f"inbox-{second}", connection=get_redis())
    assert job.get_status() == JobStatus.SCHEDULED and job.retries_left == inbox.RETRY.max
    scheduled = get_queue("events").scheduled_job_registry.get_scheduled_time(job.id).timestamp()
    assert 3 < scheduled - time.time() <= 7  # when the portal's next slot frees
