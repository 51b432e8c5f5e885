"""SQLAlchemy models. Every tenant-owned row carries portal_id; lookups go through `for_portal`."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, TypeVar

import sqlalchemy as sa
from flask import abort
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from app.core.db import Base, db

JsonType = sa.JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as UTC and always returns them aware (SQLite forgets the zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Portal(Base):
    """A tenant: one Bitrix24 portal (member_id) or one amoCRM account (account id)."""

    __tablename__ = "portals"
    __table_args__ = (sa.UniqueConstraint("crm", "external_id", name="uq_portals_crm_external_id"),)

    BITRIX24 = "bitrix24"
    AMOCRM = "amocrm"

    id: Mapped[int] = mapped_column(primary_key=True)
    crm: Mapped[str] = mapped_column(sa.String(16))
    external_id: Mapped[str] = mapped_column(sa.String(64))
    domain: Mapped[str] = mapped_column(sa.String(255), default="")
    rest_base: Mapped[str] = mapped_column(sa.String(512), default="")
    access_token: Mapped[str | None] = mapped_column(sa.Text)
    refresh_token: Mapped[str | None] = mapped_column(sa.Text)
    token_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    application_token: Mapped[str | None] = mapped_column(sa.String(128))
    language: Mapped[str] = mapped_column(sa.String(8), default="ru")
    timezone: Mapped[str] = mapped_column(sa.String(64), default="Europe/Moscow")
    settings: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    status: Mapped[str] = mapped_column(sa.String(32), default="installing")
    status_detail: Mapped[str] = mapped_column(sa.Text, default="")
    installed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    uninstalled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return f"<Portal {self.id} {self.crm}:{self.external_id}>"


class InboxItem(Base):
    """Every inbound CRM call, stored before it is acknowledged.

    Status: `pending` from ingest until its job finishes it (`done`) or gives up (`failed`); `queued` when
    the sweep had to enqueue it (Redis was down at ingest, or the job was lost), `enqueued_at` saying when.
    """

    __tablename__ = "inbox"

    PENDING = "pending"
    QUEUED = "queued"
    DONE = "done"
    FAILED = "failed"

    id: Mapped[int] = mapped_column(primary_key=True)
    portal_id: Mapped[int | None] = mapped_column(sa.ForeignKey("portals.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(sa.String(16))
    kind: Mapped[str] = mapped_column(sa.String(64))
    dedupe_key: Mapped[str] = mapped_column(sa.String(255), unique=True)
    body: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.String(16), default=PENDING, index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str] = mapped_column(sa.Text, default="")
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    processed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class AuditEntry(Base):
    """One decision of the app: who attempted what, what we did, and why."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(primary_key=True)
    portal_id: Mapped[int] = mapped_column(sa.ForeignKey("portals.id", ondelete="CASCADE"), index=True)
    deal_id: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    actor: Mapped[str] = mapped_column(sa.String(64))
    attempted: Mapped[str] = mapped_column(sa.String(128))
    outcome: Mapped[str] = mapped_column(sa.String(128))
    reason: Mapped[str] = mapped_column(sa.Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)


TenantRow = TypeVar("TenantRow", bound=Base)


def for_portal(model: type[TenantRow], row_id: int, portal: Portal) -> TenantRow:
    """Fetch a tenant-owned row by id, or 404 when it is missing or belongs to another portal."""
    # Every tenant-owned model has `id` and `portal_id`; the bound (Base) cannot say so.
    query = sa.select(model).where(model.id == row_id, model.portal_id == portal.id)  # type: ignore[attr-defined]
    row = db.session.scalars(query).first()
    if row is None:
        abort(404, description="not found")
    return row


class DealSnapshot(Base):
    """What we last saw (or wrote) of a deal; a webhook whose re-read matches it changes nothing."""

    __tablename__ = "deal_snapshots"
    __table_args__ = (sa.UniqueConstraint("portal_id", "deal_id", name="uq_deal_snapshots_portal_deal"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    portal_id: Mapped[int] = mapped_column(sa.ForeignKey("portals.id", ondelete="CASCADE"), index=True)
    deal_id: Mapped[str] = mapped_column(sa.String(64))
    pipeline_id: Mapped[str] = mapped_column(sa.String(64))
    stage_id: Mapped[str] = mapped_column(sa.String(64))
    stage_semantics: Mapped[str] = mapped_column(sa.String(16))
    responsible_id: Mapped[str] = mapped_column(sa.String(64), default="")
    refusal_reason: Mapped[str | None] = mapped_column(sa.String(64))
    refusal_comment: Mapped[str] = mapped_column(sa.Text, default="")
    modified_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    title: Mapped[str] = mapped_column(sa.String(255), default="", server_default="")
    amount: Mapped[str] = mapped_column(sa.String(32), default="0", server_default="0")
    currency: Mapped[str] = mapped_column(sa.String(8), default="", server_default="")
    source_id: Mapped[str] = mapped_column(sa.String(64), default="", server_default="")
    cpl: Mapped[str | None] = mapped_column(sa.String(32))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class DealDeletion(Base):
    """A deal deleted in the CRM: who deleted it, when, and what it looked like last (one row per deal)."""

    __tablename__ = "deal_deletions"
    __table_args__ = (sa.UniqueConstraint("portal_id", "deal_id", name="uq_deal_deletions_portal_deal"),)

    UNKNOWN = "unknown"

    id: Mapped[int] = mapped_column(primary_key=True)
    portal_id: Mapped[int] = mapped_column(sa.ForeignKey("portals.id", ondelete="CASCADE"), index=True)
    deal_id: Mapped[str] = mapped_column(sa.String(64))
    deleted_by: Mapped[str] = mapped_column(sa.String(64))
    role: Mapped[str] = mapped_column(sa.String(16))
    violation: Mapped[bool] = mapped_column(sa.Boolean)
    known: Mapped[bool] = mapped_column(sa.Boolean)  # whether we had seen the deal (a snapshot) before
    title: Mapped[str] = mapped_column(sa.String(255))
    amount: Mapped[str] = mapped_column(sa.String(32))
    currency: Mapped[str] = mapped_column(sa.String(8))
    pipeline_id: Mapped[str] = mapped_column(sa.String(64))
    stage_id: Mapped[str] = mapped_column(sa.String(64))
    responsible_id: Mapped[str] = mapped_column(sa.String(64))
    case_id: Mapped[int | None] = mapped_column(sa.ForeignKey("refusal_cases.id", ondelete="SET NULL"))
    penalty_id: Mapped[int | None] = mapped_column(sa.ForeignKey("penalties.id", ondelete="SET NULL"))
    deleted_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)


class RecoveredDeal(Base):
    """A deal returned to sales after QA found its refusal false (a leaked case), followed to its end: the money
    the app saved is what these deals bring when they are won. One row per leaked case."""

    __tablename__ = "recovered_deals"
    __table_args__ = (sa.UniqueConstraint("case_id", name="uq_recovered_deals_case"),)

    OPEN = "open"
    WON = "won"
    LOST = "lost"
    DELETED = "deleted"  # deleted in the CRM while still in work: it no longer counts as in progress

    id: Mapped[int] = mapped_column(primary_key=True)
    portal_id: Mapped[int] = mapped_column(sa.ForeignKey("portals.id", ondelete="CASCADE"), index=True)
    case_id: Mapped[int] = mapped_column(sa.ForeignKey("refusal_cases.id", ondelete="CASCADE"))
    deal_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    title: Mapped[str] = mapped_column(sa.String(255), default="")
    leaker_id: Mapped[str] = mapped_column(sa.String(64), index=True)  # whose refusal was found false
    manager_id: Mapped[str] = mapped_column(sa.String(64))  # who got the deal back
    returned_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    outcome: Mapped[str] = mapped_column(sa.String(16), default=OPEN)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    amount: Mapped[str] = mapped_column(sa.String(32), default="0")
    currency: Mapped[str] = mapped_column(sa.String(8), default="")


class RefusalCase(Base):
    """A conditional refusal under QA review, from the manager's claim to its outcome."""

    __tablename__ = "refusal_cases"
    __table_args__ = (
        # One open case per deal; closed ones stay as history.
        sa.Index(
            "uq_refusal_cases_open_deal",
            "portal_id",
            "deal_id",
            unique=True,
            sqlite_where=sa.text("closed_at IS NULL"),
            postgresql_where=sa.text("closed_at IS NULL"),
        ),
    )

    AWAITING_REVIEW = "awaiting_review"
    CALLBACK_SCHEDULED = "callback_scheduled"
    CONFIRMED = "confirmed"
    CLOSED_LOST = "closed_lost"
    WIN_BACK = "win_back"
    LEAKED = "leaked"
    UNREACHABLE = "unreachable"
    WITHDRAWN = "withdrawn"
    OPEN_STATES = (AWAITING_REVIEW, CALLBACK_SCHEDULED, CONFIRMED, UNREACHABLE)

    id: Mapped[int] = mapped_column(primary_key=True)
    portal_id: Mapped[int] = mapped_column(sa.ForeignKey("portals.id", ondelete="CASCADE"), index=True)
    deal_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    deal_title: Mapped[str] = mapped_column(sa.String(255), default="")
    pipeline_id: Mapped[str] = mapped_column(sa.String(64))
    manager_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    reason: Mapped[str] = mapped_column(sa.String(64))
    comment: Mapped[str] = mapped_column(sa.Text, default="")
    amount: Mapped[str] = mapped_column(sa.String(32), default="0")
    currency: Mapped[str] = mapped_column(sa.String(8), default="")
    source_id: Mapped[str] = mapped_column(sa.String(64), default="")
    state: Mapped[str] = mapped_column(sa.String(32), default=AWAITING_REVIEW, index=True)
    qa_user_id: Mapped[str | None] = mapped_column(sa.String(64))
    qa_task_id: Mapped[str | None] = mapped_column(sa.String(64))
    previous_stage_id: Mapped[str] = mapped_column(sa.String(64), default="")
    review_due_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class CaseEvent(Base):
    """One step of a case's timeline: who did what, when, with a note."""

    __tablename__ = "case_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    portal_id: Mapped[int] = mapped_column(sa.ForeignKey("portals.id", ondelete="CASCADE"), index=True)
    case_id: Mapped[int] = mapped_column(sa.ForeignKey("refusal_cases.id", ondelete="CASCADE"), index=True)
    actor: Mapped[str] = mapped_column(sa.String(64))
    action: Mapped[str] = mapped_column(sa.String(64))
    state_after: Mapped[str] = mapped_column(sa.String(32))
    note: Mapped[str] = mapped_column(sa.Text, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Effect(Base):
    """A pending or done effect on the CRM, keyed by case/violation and step: a retry never repeats it."""

    __tablename__ = "effects"
    __table_args__ = (sa.UniqueConstraint("portal_id", "key", name="uq_effects_portal_key"),)

    PENDING = "pending"
    DONE = "done"

    id: Mapped[int] = mapped_column(primary_key=True)
    portal_id: Mapped[int] = mapped_column(sa.ForeignKey("portals.id", ondelete="CASCADE"), index=True)
    deal_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    key: Mapped[str] = mapped_column(sa.String(255))
    kind: Mapped[str] = mapped_column(sa.String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    status: Mapped[str] = mapped_column(sa.String(16), default=PENDING, index=True)
    result: Mapped[str] = mapped_column(sa.String(255), default="")
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Penalty(Base):
    """An append-only ledger row: a fine for a leaked client, or the reversal of one after an appeal."""

    __tablename__ = "penalties"
    __table_args__ = (
        # One fine per case and one reversal per case: retries and double clicks change nothing.
        sa.UniqueConstraint("portal_id", "case_id", "kind", name="uq_penalties_portal_case_kind"),
    )

    PENALTY = "penalty"
    REVERSAL = "reversal"

    id: Mapped[int] = mapped_column(primary_key=True)
    portal_id: Mapped[int] = mapped_column(sa.ForeignKey("portals.id", ondelete="CASCADE"), index=True)
    manager_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    case_id: Mapped[int | None] = mapped_column(sa.ForeignKey("refusal_cases.id", ondelete="SET NULL"))
    deal_id: Mapped[str] = mapped_column(sa.String(64))
    kind: Mapped[str] = mapped_column(sa.String(16))
    amount: Mapped[Decimal] = mapped_column(sa.Numeric(14, 2))
    currency: Mapped[str] = mapped_column(sa.String(8))
    rule: Mapped[str] = mapped_column(sa.String(64))
    reverses_id: Mapped[int | None] = mapped_column(sa.ForeignKey("penalties.id"), unique=True)
    reason: Mapped[str] = mapped_column(sa.Text, default="")
    created_by: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)


class ReportDelivery(Base):
    """One scheduled report to one head for one period: the unique key makes it go out exactly once."""

    __tablename__ = "report_deliveries"
    __table_args__ = (
        sa.UniqueConstraint("portal_id", "period_key", "head_id", name="uq_report_deliveries_portal_period_head"),
    )

    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"

    id: Mapped[int] = mapped_column(primary_key=True)
    portal_id: Mapped[int] = mapped_column(sa.ForeignKey("portals.id", ondelete="CASCADE"), index=True)
    period_key: Mapped[str] = mapped_column(sa.String(32))
    head_id: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[str] = mapped_column(sa.String(16), default=SENDING)
    attempts: Mapped[int] = mapped_column(default=1)
    error: Mapped[str] = mapped_column(sa.Text, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ExchangeLot(Base):
    """A deal on the lead exchange: open in the pool, taken by a manager, or closed (left the exchange)."""

    __tablename__ = "exchange_lots"
    __table_args__ = (sa.UniqueConstraint("portal_id", "deal_id", name="uq_exchange_lots_portal_deal"),)

    OPEN = "open"
    TAKEN = "taken"
    CLOSED = "closed"

    id: Mapped[int] = mapped_column(primary_key=True)
    portal_id: Mapped[int] = mapped_column(sa.ForeignKey("portals.id", ondelete="CASCADE"), index=True)
    deal_id: Mapped[str] = mapped_column(sa.String(64))
    pipeline_id: Mapped[str] = mapped_column(sa.String(64))
    title: Mapped[str] = mapped_column(sa.String(255), default="")
    amount: Mapped[str] = mapped_column(sa.String(32), default="0")
    currency: Mapped[str] = mapped_column(sa.String(8), default="")
    source_id: Mapped[str] = mapped_column(sa.String(64), default="")
    department_id: Mapped[str | None] = mapped_column(sa.String(64))
    status: Mapped[str] = mapped_column(sa.String(16), default=OPEN, index=True)
    holder_id: Mapped[str | None] = mapped_column(sa.String(64))
    pooled_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    taken_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class ExchangeClaim(Base):
    """One manager holding one exchange deal, from the claim to its end (returned, idle, closed, reassigned)."""

    __tablename__ = "exchange_claims"
    __table_args__ = (
        # At most one active claim per deal: the database itself refuses a second winner.
        sa.Index(
            "uq_exchange_claims_active_deal",
            "portal_id",
            "deal_id",
            unique=True,
            sqlite_where=sa.text("ended_at IS NULL"),
            postgresql_where=sa.text("ended_at IS NULL"),
        ),
    )

    RETURNED = "returned"
    AUTO_RETURNED = "auto_returned"
    CLOSED = "closed"
    WON = "won"
    LOST = "lost"
    REASSIGNED = "reassigned"

    id: Mapped[int] = mapped_column(primary_key=True)
    portal_id: Mapped[int] = mapped_column(sa.ForeignKey("portals.id", ondelete="CASCADE"), index=True)
    lot_id: Mapped[int] = mapped_column(sa.ForeignKey("exchange_lots.id", ondelete="CASCADE"), index=True)
    deal_id: Mapped[str] = mapped_column(sa.String(64))
    manager_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    via: Mapped[str] = mapped_column(sa.String(16), default="app")
    claimed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    outcome: Mapped[str | None] = mapped_column(sa.String(32))
    reason: Mapped[str] = mapped_column(sa.Text, default="")
    # How long the deal waited on the exchange before this claim (None for claims made before it was kept).
    waited_seconds: Mapped[int | None] = mapped_column(sa.Integer)


class DutyDay(Base):
    """Who is on duty in a department on one calendar day (in the portal's time zone)."""

    __tablename__ = "duty_days"
    __table_args__ = (sa.UniqueConstraint("portal_id", "department_id", "day", name="uq_duty_days_portal_dept_day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    portal_id: Mapped[int] = mapped_column(sa.ForeignKey("portals.id", ondelete="CASCADE"), index=True)
    department_id: Mapped[str] = mapped_column(sa.String(64))
    day: Mapped[date] = mapped_column(sa.Date)
    user_id: Mapped[str] = mapped_column(sa.String(64))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class ReviewCallback(Base):
    """A client callback QA scheduled for a refusal case: one attempt, from scheduling to its answer."""

    __tablename__ = "review_callbacks"

    SCHEDULED = "scheduled"  # waiting for its time
    DUE = "due"  # the to-do was created in the CRM; waiting for QA to record the answer
    NO_ANSWER = "no_answer"
    ANSWERED = "answered"
    CANCELLED = "cancelled"
    ACTIVE_STATES = (SCHEDULED, DUE)

    id: Mapped[int] = mapped_column(primary_key=True)
    portal_id: Mapped[int] = mapped_column(sa.ForeignKey("portals.id", ondelete="CASCADE"), index=True)
    case_id: Mapped[int] = mapped_column(sa.ForeignKey("refusal_cases.id", ondelete="CASCADE"), index=True)
    deal_id: Mapped[str] = mapped_column(sa.String(64))
    assignee_id: Mapped[str] = mapped_column(sa.String(64))
    due_at: Mapped[datetime] = mapped_column(UtcDateTime)
    attempt: Mapped[int] = mapped_column(default=1)
    status: Mapped[str] = mapped_column(sa.String(16), default=SCHEDULED, index=True)
    todo_id: Mapped[str | None] = mapped_column(sa.String(64))
    note: Mapped[str] = mapped_column(sa.Text, default="")
    created_by: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class TaskNotice(Base):
    """One task-control notice line for one user, unique per object, user and day (a scan run or a second
    worker planning it again inserts nothing); claimed by one sender, then sent in a per-user digest."""

    __tablename__ = "task_notices"
    __table_args__ = (sa.UniqueConstraint("portal_id", "key", name="uq_task_notices_portal_key"),)

    PENDING = "pending"
    CLAIMED = "claimed"
    SENT = "sent"

    id: Mapped[int] = mapped_column(primary_key=True)
    portal_id: Mapped[int] = mapped_column(sa.ForeignKey("portals.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(sa.String(255))
    user_id: Mapped[str] = mapped_column(sa.String(64))
    kind: Mapped[str] = mapped_column(sa.String(32))
    deal_id: Mapped[str | None] = mapped_column(sa.String(64))
    task_id: Mapped[str | None] = mapped_column(sa.String(64))
    text: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.String(16), default=PENDING, index=True)
    claim: Mapped[str | None] = mapped_column(sa.String(64))
    claimed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class TaskReport(Base):
    """The last task-control scan of a portal: per manager, deals without tasks and overdue tasks."""

    __tablename__ = "task_reports"
    __table_args__ = (sa.UniqueConstraint("portal_id", name="uq_task_reports_portal"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    portal_id: Mapped[int] = mapped_column(sa.ForeignKey("portals.id", ondelete="CASCADE"))
    scanned_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    data: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)


class RefusalReason(Base):
    """A refusal reason of one portal: the company's own list, kept in sync with the CRM's reason field.

    `code` is what deals, cases and reports carry (the seven first reasons keep their historic codes; a reason
    added in the CRM is `crm_<item id>`); `crm_item_id` is the field's item (Bitrix24 enumeration item ID,
    amoCRM select enum id). A retired reason stays for history and reports and is refused for new refusals.
    """

    __tablename__ = "refusal_reasons"
    __table_args__ = (sa.UniqueConstraint("portal_id", "code", name="uq_refusal_reasons_portal_code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    portal_id: Mapped[int] = mapped_column(sa.ForeignKey("portals.id", ondelete="CASCADE"), index=True)
    code: Mapped[str] = mapped_column(sa.String(64))
    name_ru: Mapped[str] = mapped_column(sa.String(255))
    name_en: Mapped[str] = mapped_column(sa.String(255))
    sort: Mapped[int] = mapped_column(sa.Integer, default=0)
    retired: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    crm_item_id: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    def name(self, language: str) -> str:
        """The name in the portal's language (Russian unless English is asked for)."""
        return (self.name_en or self.name_ru) if language == "en" else (self.name_ru or self.name_en)


class Postponement(Base):
    """A deal put off in «Отложено» with a reason and a return day: waiting until that day, then returned to its
    manager (a task, and a move to the pipeline's return stage when one is set), or ended without a return (the
    deal left «Отложено» some other way, or was deleted). One row per stay in the stage."""

    __tablename__ = "postponements"

    WAITING = "waiting"
    RETURNED = "returned"  # by the app on its day, or moved back to work by a person before it
    ENDED = "ended"  # left «Отложено» for won, lost or refusal, or the deal is gone

    id: Mapped[int] = mapped_column(primary_key=True)
    portal_id: Mapped[int] = mapped_column(sa.ForeignKey("portals.id", ondelete="CASCADE"), index=True)
    deal_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    title: Mapped[str] = mapped_column(sa.String(255), default="")
    pipeline_id: Mapped[str] = mapped_column(sa.String(64), default="")
    manager_id: Mapped[str] = mapped_column(sa.String(64), index=True)  # the deal's responsible when postponed
    postponed_by: Mapped[str] = mapped_column(sa.String(64), default="")
    reason: Mapped[str] = mapped_column(sa.String(64), default="")
    due_date: Mapped[date] = mapped_column(sa.Date, index=True)
    postponed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    state: Mapped[str] = mapped_column(sa.String(16), default=WAITING, index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    ended_how: Mapped[str] = mapped_column(sa.String(32), default="")  # "on date", "by hand", "lost", "gone", ...
    amount: Mapped[str] = mapped_column(sa.String(32), default="0")
    currency: Mapped[str] = mapped_column(sa.String(8), default="")
    # The deal's move to won after its return (app.domain.postpone.deal_seen): when, and the amount it was won for.
    won_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    won_amount: Mapped[str] = mapped_column(sa.String(32), default="")


class DealClass(Base):
    """A deal's ABC class (app.domain.abc) as last computed from its need, budget and urgency, and what the
    reports by class and the A-idle notice need: the class since when, the deal's outcome, its last activity."""

    __tablename__ = "deal_classes"
    __table_args__ = (sa.UniqueConstraint("portal_id", "deal_id", name="uq_deal_classes_deal"),)

    OPEN = "open"
    WON = "won"
    LOST = "lost"

    id: Mapped[int] = mapped_column(primary_key=True)
    portal_id: Mapped[int] = mapped_column(sa.ForeignKey("portals.id", ondelete="CASCADE"), index=True)
    deal_id: Mapped[str] = mapped_column(sa.String(64))
    abc_class: Mapped[str] = mapped_column(sa.String(1), default="")  # "A", "B", "C"; "" unclassified
    title: Mapped[str] = mapped_column(sa.String(255), default="")
    pipeline_id: Mapped[str] = mapped_column(sa.String(64), default="")
    responsible_id: Mapped[str] = mapped_column(sa.String(64), default="")
    outcome: Mapped[str] = mapped_column(sa.String(16), default=OPEN)
    classified_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)  # when it got its class
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_activity_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    idle_notified_for: Mapped[datetime | None] = mapped_column(UtcDateTime)  # the activity an idle notice was for
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
