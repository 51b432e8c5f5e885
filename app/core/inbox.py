"""The inbox: every verified inbound CRM call is stored once, then processed by a job."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import redis
import sqlalchemy as sa
from rq import Retry
from rq.job import Job, JobStatus
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from app.core.db import HeldConnection, db
from app.core.models import InboxItem, utcnow
from app.core.queue import JobDeferred, enqueue_unique, get_queue

log = logging.getLogger(__name__)

InboxProcessor = Callable[[InboxItem], None]
PROCESSORS: dict[tuple[str, str], InboxProcessor] = {}
# Kinds whose rows may be processed together, per source (deal events: the processor of one row also takes the
# rows of the same portal already waiting, see `waiting_rows`), filled by create_app.
GROUP_KINDS: dict[str, tuple[str, ...]] = {}
GROUP_ROWS = 100
RETRY = Retry(max=5, interval=[5, 30, 120, 600, 1800])
MAX_ATTEMPTS = RETRY.max + 1


def processor(source: str, kind: str) -> Callable[[InboxProcessor], InboxProcessor]:
    """Register the function that processes inbox rows of one source and kind."""

    def register(func: InboxProcessor) -> InboxProcessor:
        PROCESSORS[(source, kind)] = func
        return func

    return register


INBOX = cast(sa.Table, InboxItem.__table__)  # a declarative table is typed as any FromClause


_STORED_COLUMNS = (
    "portal_id", "source", "kind", "dedupe_key", "body", "status", "attempts", "last_error", "received_at",
)  # fmt: skip


@dataclass(frozen=True)
class _StoreStatement:
    """The insert-or-ignore of the ingest path, compiled for one dialect and its DBAPI driver."""

    sql: str
    positions: tuple[str, ...] | None  # parameter order for positional paramstyles; None: named
    processors: tuple[tuple[str, Callable[[Any], Any]], ...]  # the columns' own bind conversions


_STORE_STATEMENTS: dict[tuple[str, str, str], _StoreStatement] = {}
_WRITER = HeldConnection()


def _store_statement(dialect: Dialect) -> _StoreStatement:
    """Compiled once per dialect and driver by SQLAlchemy itself: the SQL, its parameter order, the conversions."""
    key = (dialect.name, dialect.driver, dialect.paramstyle)
    cached = _STORE_STATEMENTS.get(key)
    if cached is not None:
        return cached
    insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(INBOX)
        .values({name: sa.bindparam(name) for name in _STORED_COLUMNS})
        .on_conflict_do_nothing(index_elements=[INBOX.c.dedupe_key])
        .returning(INBOX.c.id)
    )
    compiled = statement.compile(dialect=dialect)
    processors = []
    for name in _STORED_COLUMNS:
        processor_of = INBOX.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        if processor_of is not None:
            processors.append((name, processor_of))
    positions = tuple(compiled.positiontup) if compiled.positiontup else None
    _STORE_STATEMENTS[key] = _StoreStatement(compiled.string, positions, tuple(processors))
    return _STORE_STATEMENTS[key]


def store(source: str, kind: str, dedupe_key: str, body: str, portal_id: int | None) -> int | None:
    """Insert one row and commit; returns its id, or None when the same dedupe key was stored before.

    The webhook path's only write, so it runs on a DBAPI connection the process keeps (app.core.db.HeldConnection):
    the statement is compiled once by SQLAlchemy (SQL, parameter order and the columns' bind conversions),
    and the Session, Core execution and pool checkout, which cost several times the database's own work per
    webhook, are skipped. The row is committed before this returns, in a transaction of its own. Should the
    connection die after the commit but before its answer, the retry finds the key stored and returns None;
    that row is then queued by the sweep.
    """
    if db.session.registry.has():
        # The row goes through another connection: end what the session has open first (its writes would
        # hold SQLite's write lock against that connection; its reads, a PostgreSQL snapshot).
        db.session.commit()
    engine = db.engine
    statement = _store_statement(engine.dialect)
    values: dict[str, Any] = {
        "portal_id": portal_id,
        "source": source,
        "kind": kind,
        "dedupe_key": dedupe_key[:255],
        "body": body,
        "status": InboxItem.PENDING,
        "attempts": 0,
        "last_error": "",
        "received_at": utcnow(),
    }
    for name, convert in statement.processors:
        values[name] = convert(values[name])
    parameters = [values[name] for name in statement.positions] if statement.positions else values

    def insert(connection: Any) -> Any:
        cursor = connection.cursor()
        try:
            cursor.execute(statement.sql, parameters)
            row = cursor.fetchone()
        finally:
            cursor.close()
        connection.commit()
        return row

    row = _WRITER.run(engine, insert)
    return int(row[0]) if row is not None else None


def _enqueue_job(inbox_id: int, portal_id: int | None) -> bool:
    """Queue the processing job of one row; its id is derived from the row, so a second copy is refused (False).

    The job waits in its portal's lane of the events queue, so one portal's burst does not hold back the
    events of another (app.core.queue.EventsQueue); a row of no portal waits in the queue's own list.
    """
    return enqueue_unique(
        "events", "app.jobs.process_inbox", inbox_id, job_id=f"inbox-{inbox_id}", retry=RETRY, lane=portal_id
    )


def enqueue_item(inbox_id: int, portal_id: int | None = None) -> bool:
    """Queue the processing job; on a Redis failure the row stays pending for the sweep.

    The row is not written again: it stays `pending` until its job finishes it. A second write per
    webhook (marking the row queued) would double the commits of the ingest path, and the sweep needs
    no such mark: it re-enqueues under the same unique job id, which is a no-op while the job exists
    (queued, running, or waiting for a retry).
    """
    try:
        _enqueue_job(inbox_id, portal_id)
    except (redis.RedisError, OSError) as error:
        log.warning(
            "inbox row left for the sweep: redis unavailable", extra={"inbox_id": inbox_id, "error": str(error)}
        )
        return False
    return True


MAX_REPEATS = 100


def accept(
    source: str, kind: str, dedupe_key: str, body: str, portal_id: int | None, *, repeatable: bool = False
) -> int | None:
    """Store then enqueue. Returns the row id, or None for a duplicate delivery.

    With `repeatable`, the key only collapses deliveries while the first one waits unprocessed. Bitrix24
    events carry no id: two real changes of one deal within the same second give identical bodies, and the
    second must not be lost once the first has been picked up (the job re-reads the deal anyway).
    """
    inbox_id = store(source, kind, dedupe_key, body, portal_id)
    repeat = 0
    while inbox_id is None and repeatable and repeat < MAX_REPEATS:
        key = dedupe_key if repeat == 0 else f"{dedupe_key}#{repeat}"
        attempts = db.session.scalar(sa.select(InboxItem.attempts).where(InboxItem.dedupe_key == key[:255]))
        if attempts == 0:
            return None
        repeat += 1
        inbox_id = store(source, kind, f"{dedupe_key}#{repeat}", body, portal_id)
    if inbox_id is not None:
        enqueue_item(inbox_id, portal_id)
    return inbox_id


def process(inbox_id: int) -> str:
    """Run the registered processor for one row; failures are recorded and re-raised for a retry."""
    item = db.session.get(InboxItem, inbox_id)
    if item is None:
        return "missing"
    if item.status == InboxItem.DONE:
        return "already done"
    item.attempts += 1
    db.session.commit()
    func = PROCESSORS.get((item.source, item.kind))
    if func is None:
        item.status = InboxItem.DONE
        item.last_error = f"no processor for {item.source}/{item.kind}"
        item.processed_at = utcnow()
        db.session.commit()
        log.warning("inbox row without processor", extra={"inbox_id": inbox_id, "kind": item.kind})
        return "ignored"
    try:
        func(item)
    except Exception as error:
        db.session.rollback()
        item = db.session.get(InboxItem, inbox_id)
        assert item is not None
        item.last_error = f"{type(error).__name__}: {error}"[:2000]
        if isinstance(error, JobDeferred):  # put back for a moment (its portal's rate limit): not an attempt
            item.attempts -= 1
        elif item.attempts >= MAX_ATTEMPTS:
            item.status = InboxItem.FAILED
        db.session.commit()
        raise
    # By id: the processor's commits expired `item`, and setting its attributes would read the row back first.
    db.session.execute(
        sa.update(InboxItem)
        .where(InboxItem.id == inbox_id)
        .values(status=InboxItem.DONE, last_error="", processed_at=utcnow())
    )
    db.session.commit()
    return "done"


def waiting_rows(item: InboxItem, limit: int = GROUP_ROWS) -> list[InboxItem]:
    """Rows of `item`'s portal and source, of a kind that groups with it, stored and not yet finished (oldest
    first, `item` left out): what the processor of `item` may decide together with it.

    Nothing is marked: a row stays pending until its decision is complete (`finish_rows`), so a worker killed
    mid-group leaves every row to its own job (retried) or to the sweep. Who decides which deal is settled by
    the deal locks the group takes without waiting, as SKIP LOCKED would on a row lock."""
    kinds = GROUP_KINDS.get(item.source, ())
    if item.portal_id is None or item.kind not in kinds:
        return []
    return list(
        db.session.scalars(
            sa.select(InboxItem)
            .where(
                InboxItem.portal_id == item.portal_id,
                InboxItem.source == item.source,
                InboxItem.kind.in_(kinds),
                InboxItem.status.in_([InboxItem.PENDING, InboxItem.QUEUED]),
                InboxItem.id != item.id,
            )
            .order_by(InboxItem.id)
            .limit(limit)
        ).all()
    )


def is_done(inbox_id: int) -> bool:
    """Whether a row is finished (read from the database, not the session's copy)."""
    status = db.session.execute(sa.select(InboxItem.status).where(InboxItem.id == inbox_id)).scalar_one_or_none()
    return status == InboxItem.DONE


def claim_rows(inbox_ids: Sequence[int]) -> None:
    """Count an attempt on rows a group took, before it reads their deals: from then on a delivery with the
    same body is a new change to store (see `accept`), not a duplicate of a row nobody picked up."""
    if not inbox_ids:
        return
    db.session.execute(
        sa.update(InboxItem)
        .where(InboxItem.id.in_(list(inbox_ids)), InboxItem.status != InboxItem.DONE)
        .values(attempts=InboxItem.attempts + 1)
    )
    db.session.commit()


def finish_rows(inbox_ids: Sequence[int]) -> None:
    """Mark rows decided by a group done (their own jobs then find them done and return without a CRM call)."""
    if not inbox_ids:
        return
    db.session.execute(
        sa.update(InboxItem)
        .where(InboxItem.id.in_(list(inbox_ids)), InboxItem.status != InboxItem.DONE)
        .values(status=InboxItem.DONE, last_error="", processed_at=utcnow())
    )
    db.session.commit()


def sweep(older_than: timedelta = timedelta(seconds=30)) -> int:
    """Enqueue rows that are not done and not failed (Redis was down, or a job was lost or given up).

    Rows whose job is still queued, running or waiting for a retry are skipped by the unique job id. A
    row whose job ended as failed although the row is neither done nor failed lost its job without
    the processor recording the outcome (the job was abandoned by a killed worker with no retry left):
    it gets a fresh job while the row has attempts left, else it is marked failed. The rows this call
    did enqueue are marked `queued`, with `enqueued_at`.
    """
    cutoff = utcnow() - older_than
    rows = db.session.execute(
        sa.select(InboxItem.id, InboxItem.attempts, InboxItem.portal_id)
        .where(InboxItem.status.in_([InboxItem.PENDING, InboxItem.QUEUED]), InboxItem.received_at < cutoff)
        .order_by(InboxItem.id)
        .limit(5000)
    ).all()
    count = 0
    for inbox_id, attempts, portal_id in rows:
        enqueued = _enqueue_job(inbox_id, portal_id)
        given_up = None if enqueued else _given_up_job(inbox_id)
        if given_up is not None:
            if attempts >= MAX_ATTEMPTS:
                db.session.execute(
                    sa.update(InboxItem)
                    .where(InboxItem.id == inbox_id)
                    .values(status=InboxItem.FAILED, last_error=f"its job was given up after {attempts} attempts")
                )
                log.error("inbox row failed: job given up", extra={"inbox_id": inbox_id, "attempts": attempts})
                continue
            given_up.delete()
            enqueued = _enqueue_job(inbox_id, portal_id)
            log.warning("inbox row re-queued: job given up", extra={"inbox_id": inbox_id, "attempts": attempts})
        if enqueued:
            count += 1
            db.session.execute(
                sa.update(InboxItem)
                .where(InboxItem.id == inbox_id)
                .values(status=InboxItem.QUEUED, enqueued_at=utcnow())
            )
    db.session.commit()
    return count


def retry_failed(inbox_ids: Sequence[int] | None = None) -> list[int]:
    """Give failed rows (all, or those of `inbox_ids`) a fresh set of attempts; returns the ids queued.

    For after the cause is fixed (a CRM outage longer than the retry schedule, a bug): a failed row is a
    delivery the app never acted on. The row goes back to `pending` with no attempts counted, its spent
    job is removed and a new one queued; should Redis be down, the sweep queues it later.
    """
    query = sa.select(InboxItem).where(InboxItem.status == InboxItem.FAILED).order_by(InboxItem.id)
    if inbox_ids is not None:
        query = query.where(InboxItem.id.in_(inbox_ids))
    rows = db.session.scalars(query).all()
    for row in rows:
        row.status = InboxItem.PENDING
        row.attempts = 0
    db.session.commit()
    queued = [(row.id, row.portal_id) for row in rows]
    try:
        for inbox_id, portal_id in queued:
            spent = _given_up_job(inbox_id)
            if spent is not None:
                spent.delete()
            _enqueue_job(inbox_id, portal_id)
    except (redis.RedisError, OSError) as error:
        # The rows are pending again: the sweep replaces their spent jobs once Redis answers.
        log.warning("failed rows left for the sweep: redis unavailable", extra={"error": str(error)})
    return [inbox_id for inbox_id, _portal in queued]


def _given_up_job(inbox_id: int) -> Job | None:
    """The row's job if it ended as failed or stopped (it will not run again by itself)."""
    job = get_queue("events").fetch_job(f"inbox-{inbox_id}")
    if job is not None and job.get_status(refresh=False) in (JobStatus.FAILED, JobStatus.STOPPED):
        return job
    return None


def purge(older_than: timedelta, batch_size: int = 1000, max_rows: int = 100_000) -> int:
    """Delete rows that were processed (`done`) more than `older_than` ago; returns how many went.

    The inbox keeps every delivery's whole body, so without this it grows by every event forever. Rows
    that are not done stay whatever their age: pending and queued ones still wait for their job, failed
    ones are the record of what the app could not do. Once a done row is gone, its dedupe key is too: a
    delivery of the same event arriving later still would be stored and processed again, which changes
    nothing (the job re-reads the deal, effects are keyed). Deleted in batches, each committed on its
    own, oldest first, at most `max_rows` per call (the next run goes on).
    """
    cutoff = utcnow() - older_than
    purged = 0
    while purged < max_rows:
        ids = db.session.scalars(
            sa.select(InboxItem.id)
            .where(InboxItem.status == InboxItem.DONE, InboxItem.processed_at < cutoff)
            .order_by(InboxItem.id)
            .limit(min(batch_size, max_rows - purged))
        ).all()
        if not ids:
            break
        db.session.execute(sa.delete(InboxItem).where(InboxItem.id.in_(ids)))
        db.session.commit()
        purged += len(ids)
    return purged
