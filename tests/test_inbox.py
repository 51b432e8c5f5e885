"""The inbox stores each delivery once and hands it to its processor through the queue."""

import threading
from datetime import timedelta

import psycopg
import pytest
import sqlalchemy as sa
from flask import Flask

from app import jobs
from app.core import inbox
from app.core.db import db
from app.core.models import InboxItem, utcnow
from app.jobs import PERIODIC_JOBS, purge_inbox
from tests.helpers import make_portal


def _rows() -> list[InboxItem]:
    return list(db.session.scalars(sa.select(InboxItem).order_by(InboxItem.id)))


def test_same_key_twice_gives_one_row(app: Flask):
    portal = make_portal()
    before = utcnow()
    first = inbox.store("b24", "ONCRMDEALUPDATE", "k1", "body=1", portal.id)
    second = inbox.store("b24", "ONCRMDEALUPDATE", "k1", "body=1", portal.id)
    assert first is not None
    assert second is None
    [row] = _rows()
    assert (row.id, row.portal_id, row.source, row.kind, row.dedupe_key, row.body) == (
        first,
        portal.id,
        "b24",
        "ONCRMDEALUPDATE",
        "k1",
        "body=1",
    )
    assert (row.status, row.attempts, row.last_error, row.enqueued_at) == (InboxItem.PENDING, 0, "", None)
    assert before <= row.received_at <= utcnow()  # stored as UTC, read back aware


def _kill(dbapi_connection: object, database_url: str) -> None:
    """The database drops this connection: PostgreSQL terminates its backend; SQLite's file handle closes."""
    if database_url.startswith("postgresql"):
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (dbapi_connection.info.backend_pid,))
    else:
        dbapi_connection.close()


def test_the_webhook_path_keeps_its_connection_and_replaces_it_when_the_database_drops_it(
    app: Flask, database_url: str
):
    portal_id = make_portal().id
    db.session.remove()
    first = inbox.store("b24", "ONCRMDEALUPDATE", "k-1", "b", portal_id)
    held = inbox._WRITER._held
    assert inbox.store("b24", "ONCRMDEALUPDATE", "k-2", "b", portal_id) is not None
    assert inbox._WRITER._held is held  # one checkout, not one per webhook
    _kill(held.connection.dbapi_connection, database_url)

    third = inbox.store("b24", "ONCRMDEALUPDATE", "k-3", "b", portal_id)
    assert third is not None and inbox._WRITER._held is not held
    assert [row.dedupe_key for row in _rows()] == ["k-1", "k-2", "k-3"]
    assert first is not None and inbox.store("b24", "ONCRMDEALUPDATE", "k-1", "b", portal_id) is None


def test_a_write_the_session_holds_is_committed_before_the_row_not_locked_against_it(app: Flask):
    """The row goes through its own connection; an open session write must not hold SQLite's lock against it."""
    portal = make_portal()
    portal.domain = "changed.bitrix24.test"
    db.session.flush()  # the session now holds a write transaction
    inbox_id = inbox.accept("b24", "ONCRMDEALUPDATE", "k-locked", "b", portal.id)
    db.session.rollback()  # nothing left to undo: the change was committed with the row
    assert inbox_id is not None and [row.dedupe_key for row in _rows()] == ["k-locked"]
    assert db.session.get(type(portal), portal.id).domain == "changed.bitrix24.test"


def test_concurrent_deliveries_of_one_key_store_one_row(app: Flask, database_url: str):
    """Ten threads storing the same key at once: exactly one wins (row locking on PostgreSQL)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite serialises writers; concurrency is a PostgreSQL property")
    portal_id = make_portal().id
    results: list[int | None] = []
    barrier = threading.Barrier(10)

    def deliver() -> None:
        with app.app_context():
            barrier.wait()
            results.append(inbox.store("b24", "ONCRMDEALUPDATE", "same", "b", portal_id))
            db.session.remove()

    threads = [threading.Thread(target=deliver) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len([r for r in results if r is not None]) == 1
    assert len(_rows()) == 1


def test_accepted_row_is_processed_by_the_worker(app: Flask, worker, monkeypatch: pytest.MonkeyPatch):
    seen: list[str] = []
    monkeypatch.setitem(inbox.PROCESSORS, ("test", "ok"), lambda item: seen.append(item.body))
    portal = make_portal()
    inbox_id = inbox.accept("test", "ok", "k-ok", "payload", portal.id)
    row = db.session.get(InboxItem, inbox_id)
    assert row.status == InboxItem.PENDING  # one write per delivery: the job finishes the row
    assert row.enqueued_at is None
    assert inbox.sweep(older_than=timedelta(0)) == 0  # its job is already queued
    worker()
    db.session.expire_all()
    row = db.session.get(InboxItem, inbox_id)
    assert seen == ["payload"]
    assert row.status == InboxItem.DONE
    assert row.attempts == 1
    assert row.processed_at is not None


def test_a_failing_processor_keeps_the_error_and_the_row(app: Flask, worker, monkeypatch: pytest.MonkeyPatch):
    def explode(item: InboxItem) -> None:
        raise ValueError("deal vanished")

    monkeypatch.setitem(inbox.PROCESSORS, ("test", "bad"), explode)
    inbox_id = inbox.accept("test", "bad", "k-bad", "payload", make_portal().id)
    worker()
    db.session.expire_all()
    row = db.session.get(InboxItem, inbox_id)
    assert row.status == InboxItem.PENDING  # retries are scheduled
    assert inbox.sweep(older_than=timedelta(0)) == 0  # the job waits for its retry: nothing to re-queue
    assert row.attempts == 1
    assert row.last_error == "ValueError: deal vanished"


def test_sweep_queues_rows_left_pending(app: Flask, worker, monkeypatch: pytest.MonkeyPatch):
    """A row stored while Redis was down is picked up by the sweep and processed once."""
    seen: list[str] = []
    monkeypatch.setitem(inbox.PROCESSORS, ("test", "ok"), lambda item: seen.append(item.dedupe_key))
    inbox_id = inbox.store("test", "ok", "k-pending", "payload", make_portal().id)
    row = db.session.get(InboxItem, inbox_id)
    row.received_at = utcnow() - timedelta(minutes=5)
    db.session.commit()
    assert inbox.sweep() == 1
    db.session.expire_all()
    row = db.session.get(InboxItem, inbox_id)
    assert row.status == InboxItem.QUEUED and row.enqueued_at is not None
    assert inbox.sweep() == 0  # the job is already queued
    worker()
    assert seen == ["k-pending"]
    assert inbox.sweep() == 0


def _abandon_the_job(inbox_id: int) -> None:
    """The row's job ended as failed without the processor recording anything (a killed worker, no retry left)."""
    from rq.job import JobStatus

    from app.core.queue import get_queue

    queue = get_queue("events")
    job = queue.fetch_job(f"inbox-{inbox_id}")
    queue.remove(job)
    job.set_status(JobStatus.FAILED)


def test_sweep_gives_a_fresh_job_to_a_row_whose_job_was_given_up(app: Flask, worker, monkeypatch: pytest.MonkeyPatch):
    seen: list[str] = []
    monkeypatch.setitem(inbox.PROCESSORS, ("test", "ok"), lambda item: seen.append(item.dedupe_key))
    inbox_id = inbox.accept("test", "ok", "k-abandoned", "payload", make_portal().id)
    _abandon_the_job(inbox_id)
    assert inbox.sweep(older_than=timedelta(0)) == 1
    assert inbox.sweep(older_than=timedelta(0)) == 0  # the fresh job is queued
    worker()
    db.session.expire_all()
    assert seen == ["k-abandoned"]
    assert db.session.get(InboxItem, inbox_id).status == InboxItem.DONE


def test_sweep_fails_a_row_whose_job_was_given_up_after_its_last_attempt(app: Flask, worker):
    inbox_id = inbox.accept("test", "ok", "k-spent", "payload", make_portal().id)
    row = db.session.get(InboxItem, inbox_id)
    row.attempts = inbox.MAX_ATTEMPTS
    db.session.commit()
    _abandon_the_job(inbox_id)
    assert inbox.sweep(older_than=timedelta(0)) == 0
    db.session.expire_all()
    row = db.session.get(InboxItem, inbox_id)
    assert row.status == InboxItem.FAILED
    assert row.last_error == f"its job was given up after {inbox.MAX_ATTEMPTS} attempts"


def _finished(key: str, status: str, processed_days_ago: float | None, portal_id: int) -> None:
    inbox_id = inbox.store("b24", "ONCRMDEALUPDATE", key, "body", portal_id)
    row = db.session.get(InboxItem, inbox_id)
    row.status = status
    row.processed_at = None if processed_days_ago is None else utcnow() - timedelta(days=processed_days_ago)
    db.session.commit()


def test_purge_deletes_done_rows_past_retention_and_keeps_everything_else(app: Flask):
    portal_id = make_portal().id
    for n in range(5):
        _finished(f"old-done-{n}", InboxItem.DONE, 31, portal_id)
    _finished("recent-done", InboxItem.DONE, 29, portal_id)
    _finished("old-failed", InboxItem.FAILED, 400, portal_id)
    _finished("old-pending", InboxItem.PENDING, None, portal_id)
    _finished("old-queued", InboxItem.QUEUED, None, portal_id)

    assert inbox.purge(timedelta(days=30), batch_size=2) == 5
    db.session.expire_all()
    assert [row.dedupe_key for row in _rows()] == ["recent-done", "old-failed", "old-pending", "old-queued"]
    assert inbox.purge(timedelta(days=30), batch_size=2) == 0
    # A late copy of a purged delivery is stored (and processed) again: the job re-reads the deal anyway.
    assert inbox.store("b24", "ONCRMDEALUPDATE", "old-done-0", "body", portal_id) is not None


def test_purge_stops_at_its_limit_and_the_next_run_goes_on(app: Flask):
    portal_id = make_portal().id
    for n in range(5):
        _finished(f"old-done-{n}", InboxItem.DONE, 60, portal_id)
    assert inbox.purge(timedelta(days=30), batch_size=2, max_rows=3) == 3
    assert [row.dedupe_key for row in _rows()] == ["old-done-3", "old-done-4"]
    assert inbox.purge(timedelta(days=30), batch_size=2, max_rows=3) == 2
    assert _rows() == []


def test_the_hourly_purge_job_follows_the_retention_setting(app: Flask):
    assert ("inbox-purge", purge_inbox) in [(job.name, job.func) for job in PERIODIC_JOBS]
    portal_id = make_portal().id
    _finished("done-10-days-ago", InboxItem.DONE, 10, portal_id)
    app.config["INBOX_RETENTION_DAYS"] = 0
    assert jobs.purge_inbox() == 0
    app.config["INBOX_RETENTION_DAYS"] = 30
    assert jobs.purge_inbox() == 0
    app.config["INBOX_RETENTION_DAYS"] = 7
    assert jobs.purge_inbox() == 1
    assert _rows() == []


def test_an_operator_lists_failed_deliveries_and_queues_them_again_once_fixed(
    app: Flask, worker, monkeypatch: pytest.MonkeyPatch
):
    seen: list[str] = []
    monkeypatch.setitem(inbox.PROCESSORS, ("test", "crm-down"), lambda item: seen.append(item.dedupe_key))
    inbox_id = inbox.accept("test", "crm-down", "k-given-up", "payload", make_portal().id)
    row = db.session.get(InboxItem, inbox_id)
    row.status, row.attempts, row.last_error = InboxItem.FAILED, inbox.MAX_ATTEMPTS, "CrmUnavailable: 503"
    db.session.commit()
    _abandon_the_job(inbox_id)
    cli = app.test_cli_runner()

    listed = cli.invoke(args=["inbox", "failed"])
    assert listed.exit_code == 0
    assert f"{inbox_id}\t" in listed.output and "test/crm-down" in listed.output
    assert "CrmUnavailable: 503" in listed.output
    assert cli.invoke(args=["inbox", "retry"]).exit_code == 2  # neither ids nor --all

    retried = cli.invoke(args=["inbox", "retry", str(inbox_id), "999999"])
    assert retried.exit_code == 0
    assert "left as they are: 999999" in retried.output and f"Queued again: 1 ({inbox_id})" in retried.output
    worker()
    db.session.expire_all()
    row = db.session.get(InboxItem, inbox_id)
    assert seen == ["k-given-up"]
    assert (row.status, row.attempts, row.last_error) == (InboxItem.DONE, 1, "")
    assert cli.invoke(args=["inbox", "failed"]).output == "No failed deliveries.\n"
    assert cli.invoke(args=["inbox", "retry", "--all"]).output == "Queued again: 0\n"


def test_failed_deliveries_retried_while_redis_is_down_are_queued_by_the_sweep_once_it_is_back(
    app: Flask, database_url: str, tmp_path, worker, monkeypatch: pytest.MonkeyPatch
):
    from tests.conftest import make_app

    seen: list[str] = []
    monkeypatch.setitem(inbox.PROCESSORS, ("test", "crm-down"), lambda item: seen.append(item.dedupe_key))
    inbox_id = inbox.accept("test", "crm-down", "k-given-up", "payload", make_portal().id)
    row = db.session.get(InboxItem, inbox_id)
    row.status, row.attempts = InboxItem.FAILED, inbox.MAX_ATTEMPTS
    row.received_at = utcnow() - timedelta(hours=2)
    db.session.commit()
    _abandon_the_job(inbox_id)

    no_redis = make_app(database_url, tmp_path, REDIS_URL="redis://127.0.0.1:1/0")
    with no_redis.app_context():  # the command runs in the app context it finds
        retried = no_redis.test_cli_runner().invoke(args=["inbox", "retry", "--all"])
        db.session.remove()
    assert retried.exit_code == 0, retried.output
    assert f"Queued again: 1 ({inbox_id})" in retried.output

    db.session.expire_all()
    assert (db.session.get(InboxItem, inbox_id).status, db.session.get(InboxItem, inbox_id).attempts) == (
        InboxItem.PENDING,
        0,
    )
    assert inbox.sweep() == 1  # Redis is back: the spent job is replaced
    worker()
    db.session.expire_all()
    assert seen == ["k-given-up"]
    assert db.session.get(InboxItem, inbox_id).status == InboxItem.DONE
