"""Task control: every open deal should have a next step, overdue tasks are chased, heads get a report.

CRM-agnostic: only the CrmClient port and the database.

* `scan_portal` streams open tasks / to-dos, then open deals (`CrmClient.iter_open_work`), marks deals
  that have a next step in a bitmap (flat memory), and plans notices: a deal without an open task to
  its responsible (a deal waiting in «Отложено» is not one: its return task comes on its return day), an
  overdue task to its responsible, creator and auditors, a daily digest to heads.
* A notice is a `TaskNotice` row unique per object, user and day: a second scan run or a second
  worker inserts nothing. Rows are claimed atomically by one sender and sent as one digest per user.
* The optional next-step rule `require_task_to_advance` reverts a forward move, or a close as won, of a deal
  without an open task (hooked into the guard of app.domain.guard; lost stays with the guard).
* Robots: "check tasks" and "callback in N days".
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates
from sqlalchemy.orm.attributes import flag_modified

from app.core import i18n
from app.core.db import db, insert_ignore
from app.core.models import Effect, Portal, TaskNotice, TaskReport, utcnow
from app.core.queue import enqueue, get_redis
from app.core.timezones import portal_zone, zone_name
from app.crm.errors import CrmError, PortalNeedsReinstall
from app.crm.port import AUTOMATION, CrmClient, Deal, NewTask, Notice, Task, client_for
from app.domain import audit, directory, effects, guard, postpone
from app.domain.robots import Robot, RobotInvocation, RobotProperty
from app.domain.settings import guard_settings

log = logging.getLogger(__name__)

SECTION = "taskcontrol"
LAST_SCAN_KEY = "rc:tc:last-scan:{portal_id}"
SCAN_LOCK_KEY = "rc:lock:tc-scan:{portal_id}"
SCAN_LOCK_SECONDS = 3600
CLAIM_EXPIRY = timedelta(minutes=10)
FLUSH_EVERY = 500
SAMPLES = 20
DIGEST_LINES = 15
CHECK_TASKS = "rc_check_tasks"
CALLBACK = "rc_callback"

i18n.register(
    {
        "tc_tab": ("Задачи", "Tasks"),
        "tc_settings": ("Контроль задач", "Task control"),
        "tc_settings_enabled": ("Проверять сделки и задачи", "Check deals and tasks"),
        "tc_settings_interval": ("Проверять каждые, минут", "Scan every, minutes"),
        "tc_settings_digest_hour": ("Сводка руководителям в, час", "Digest to heads at, hour"),
        "tc_settings_no_task": ("Напоминать о сделках без задач", "Remind about deals without tasks"),
        "tc_settings_overdue": ("Напоминать о просроченных задачах", "Remind about overdue tasks"),
        "tc_settings_forward": (
            "Не пускать сделку на следующую стадию без открытой задачи и не закрывать её без задачи как успешную",
            "Do not let a deal move forward without an open task, nor be closed as won without one",
        ),
        "tc_title": ("Контроль задач", "Task control"),
        "tc_scanned_at": ("Последняя проверка:", "Last scan:"),
        "tc_never": ("Проверки ещё не было.", "No scan yet."),
        "tc_rescan": ("Проверить сейчас", "Scan now"),
        "tc_rescan_queued": (
            "Проверка запущена: отчёт обновится сам, как только она закончится.",
            "Scan started: the report updates itself as soon as it is done.",
        ),
        "tc_manager": ("Менеджер", "Manager"),
        "tc_open_deals": ("Открытых сделок", "Open deals"),
        "tc_without_tasks": ("Без задач", "Without tasks"),
        "tc_overdue": ("Просроченных задач", "Overdue tasks"),
        "tc_oldest": ("Самая старая просрочка", "Oldest overdue"),
        "tc_heads_only": (
            "Отчёт доступен руководителям продаж и администратору.",
            "The report is for heads of sales and the administrator.",
        ),
        "tc_notice_header": ("Контроль задач:", "Task control:"),
        "tc_notice_no_task": (
            "Сделка «{title}» без открытой задачи — запланируйте следующий шаг. {link}",
            'The deal "{title}" has no open task; plan the next step. {link}',
        ),
        "tc_notice_overdue": (
            "Просрочена задача «{title}» (срок {deadline}, исполнитель {responsible}). {link}",
            'The task "{title}" is overdue (due {deadline}, assignee {responsible}). {link}',
        ),
        "tc_notice_more": ("…и ещё {count}. Полный список — во вкладке «Задачи» приложения.", "…and {count} more."),
        "tc_digest_header": ("Просрочки на {day}:", "Overdue report for {day}:"),
        "tc_digest_line": (
            "{name}: сделок без задач — {without}, просроченных задач — {overdue}{oldest}",
            "{name}: deals without tasks — {without}, overdue tasks — {overdue}{oldest}",
        ),
        "tc_digest_oldest": (" (самая старая с {when})", " (oldest since {when})"),
        "tc_digest_clean": ("Просроченных задач и сделок без задач нет.", "No overdue tasks or deals without tasks."),
        "tc_forward_blocked": (
            "Сделку «{title}» нельзя двигать дальше без открытой задачи. Она возвращена на прежнюю стадию: "
            "поставьте задачу со следующим шагом и переведите сделку снова. {link}",
            'The deal "{title}" cannot move forward without an open task. It was returned to its previous '
            "stage: set a task with the next step and move it again. {link}",
        ),
        "tc_won_blocked": (
            "Сделку «{title}» нельзя закрыть как успешную без открытой задачи со следующим шагом. Она возвращена "
            "на прежнюю стадию: поставьте задачу (например, на передачу клиента в работу) и закройте сделку снова. "
            "{link}",
            'The deal "{title}" cannot be closed as won without an open task with the next step. It was returned '
            "to its previous stage: set a task (for example, handing the client over) and close it again. {link}",
        ),
        "tc_callback_title": ("Перезвонить клиенту", "Call the client back"),
    }
)


# ------------------------------------------------------------------------------------------ settings


class TaskControlSettingsSchema(Schema):
    """Task-control settings (portal.settings["taskcontrol"]); unknown keys are refused."""

    class Meta:
        unknown = RAISE

    enabled = fields.Boolean(load_default=True)
    scan_interval_minutes = fields.Integer(load_default=120, validate=validate.Range(min=15, max=1440))
    digest_hour = fields.Integer(load_default=9, validate=validate.Range(min=0, max=23))
    notify_deals_without_tasks = fields.Boolean(load_default=True)
    notify_overdue = fields.Boolean(load_default=True)
    require_task_to_advance = fields.Boolean(load_default=False)
    pipelines = fields.Raw(load_default="all")

    @validates("pipelines")
    def check_pipelines(self, value: Any, data_key: str) -> None:
        if value == "all":
            return
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise ValidationError('either "all" or a list of pipeline ids')


@dataclass(frozen=True)
class TaskControlSettings:
    """Task-control settings of one portal."""

    enabled: bool
    scan_interval_minutes: int
    digest_hour: int
    notify_deals_without_tasks: bool
    notify_overdue: bool
    require_task_to_advance: bool
    pipelines: str | tuple[str, ...]

    def checks(self, pipeline_id: str) -> bool:
        """Whether deals of this pipeline must have a next step."""
        return self.pipelines == "all" or pipeline_id in self.pipelines

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        return {
            "enabled": self.enabled,
            "scan_interval_minutes": self.scan_interval_minutes,
            "digest_hour": self.digest_hour,
            "notify_deals_without_tasks": self.notify_deals_without_tasks,
            "notify_overdue": self.notify_overdue,
            "require_task_to_advance": self.require_task_to_advance,
            "pipelines": self.pipelines if self.pipelines == "all" else list(self.pipelines),
        }


def _to_settings(loaded: dict[str, Any]) -> TaskControlSettings:
    pipelines = loaded["pipelines"]
    return TaskControlSettings(
        enabled=loaded["enabled"],
        scan_interval_minutes=loaded["scan_interval_minutes"],
        digest_hour=loaded["digest_hour"],
        notify_deals_without_tasks=loaded["notify_deals_without_tasks"],
        notify_overdue=loaded["notify_overdue"],
        require_task_to_advance=loaded["require_task_to_advance"],
        pipelines="all" if pipelines == "all" else tuple(pipelines),
    )


def taskcontrol_settings(portal: Portal) -> TaskControlSettings:
    """The stored settings with defaults filled in."""
    return _to_settings(TaskControlSettingsSchema().load(dict((portal.settings or {}).get(SECTION, {}))))


def update_taskcontrol_settings(portal: Portal, changes: dict[str, Any]) -> TaskControlSettings:
    """Validate and store changes (the caller commits); raises ValidationError with a message per field."""
    merged = {**taskcontrol_settings(portal).as_dict(), **changes}
    settings = _to_settings(TaskControlSettingsSchema().load(merged))
    stored = dict(portal.settings or {})
    stored[SECTION] = settings.as_dict()
    portal.settings = stored
    flag_modified(portal, "settings")
    return settings


# ------------------------------------------------------------------------------------------ helpers


def _zone(portal: Portal) -> ZoneInfo:
    return portal_zone(portal)


def local_day(portal: Portal, moment: datetime) -> date:
    """The calendar day of a moment in the portal's time zone."""
    return moment.astimezone(_zone(portal)).date()


def _text(key: str, language: str, **values: str) -> str:
    return i18n.translate(key, language).format(**values)


class DealBitmap:
    """A set of numeric deal ids as one bit each (12.5 KB per 100 000 ids); other ids go to a set."""

    def __init__(self) -> None:
        self.bits = bytearray()
        self.other: set[str] = set()

    def add(self, deal_id: str) -> None:
        """Mark a deal."""
        if not deal_id.isdigit():
            self.other.add(deal_id)
            return
        number = int(deal_id)
        index = number >> 3
        if index >= len(self.bits):
            self.bits.extend(bytes(index + 1 - len(self.bits) + len(self.bits) // 2))
        self.bits[index] |= 1 << (number & 7)

    def __contains__(self, deal_id: str) -> bool:
        if not deal_id.isdigit():
            return deal_id in self.other
        number = int(deal_id)
        index = number >> 3
        return index < len(self.bits) and bool(self.bits[index] & (1 << (number & 7)))


@dataclass
class ManagerStats:
    """What one manager has open, for the report."""

    user_id: str
    open_deals: int = 0
    deals_without_tasks: int = 0
    overdue_tasks: int = 0
    oldest_overdue: datetime | None = None
    deals: list[dict[str, str]] = field(default_factory=list)
    tasks: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self, name: str) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "user_id": self.user_id,
            "name": name,
            "open_deals": self.open_deals,
            "deals_without_tasks": self.deals_without_tasks,
            "overdue_tasks": self.overdue_tasks,
            "oldest_overdue": self.oldest_overdue.isoformat() if self.oldest_overdue else None,
            "deals": self.deals,
            "tasks": self.tasks,
        }


# ------------------------------------------------------------------------------------------ the scan


def scan_due_portals() -> int:
    """Periodic: queue a scan of every installed portal whose interval has passed."""
    now = utcnow().timestamp()
    queued = 0
    for portal in db.session.scalars(sa.select(Portal).where(Portal.status == "installed")):
        try:
            settings = taskcontrol_settings(portal)
        except ValidationError:
            log.warning("task control settings invalid", extra={"portal_id": portal.id})
            continue
        if not settings.enabled:
            continue
        last = get_redis().get(LAST_SCAN_KEY.format(portal_id=portal.id))
        if last is not None and now - float(last) < settings.scan_interval_minutes * 60:
            continue
        queue_scan(portal.id)
        queued += 1
    return queued


def queue_scan(portal_id: int) -> bool:
    """Queue one scan of a portal; a scan already waiting makes this a no-op."""
    job = enqueue(
        "default",
        "app.jobs.scan_portal",
        portal_id,
        job_id=f"tc-scan-{portal_id}",
        unique=True,
        timeout=SCAN_LOCK_SECONDS,
        result_ttl=0,
        failure_ttl=600,
    )
    return job is not None


def scan_portal(portal_id: int) -> dict[str, int]:
    """Scan one portal (one scan at a time per portal), then send what it planned."""
    portal = db.session.get(Portal, portal_id)
    if portal is None or portal.status != "installed":
        return {}
    lock = get_redis().lock(SCAN_LOCK_KEY.format(portal_id=portal_id), timeout=SCAN_LOCK_SECONDS)
    if not lock.acquire(blocking=False):
        log.info("task control scan already running", extra={"portal_id": portal_id})
        return {}
    try:
        crm = client_for(portal)
        scanner = Scanner(portal, crm)
        counts = scanner.collect()
        counts["sent"] = send_notices(portal, crm)
        get_redis().set(LAST_SCAN_KEY.format(portal_id=portal_id), str(utcnow().timestamp()), ex=7 * 86400)
    except PortalNeedsReinstall:
        log.warning("task control scan stopped: portal needs reinstall", extra={"portal_id": portal_id})
        return {}
    finally:
        try:
            lock.release()
        except Exception:  # noqa: BLE001 - an expired lock is not worth failing the job for
            log.warning("task control scan lock expired", extra={"portal_id": portal_id})
    log.info("task control scan done", extra={"portal_id": portal_id, **counts})
    return counts


class Scanner:
    """One pass over a portal's open work: marks, counts and planned notices."""

    def __init__(self, portal: Portal, crm: CrmClient, now: datetime | None = None) -> None:
        self.portal = portal
        self.crm = crm
        self.now = now or utcnow()
        self.day = local_day(portal, self.now)
        self.settings = taskcontrol_settings(portal)
        self.guard = guard_settings(portal)
        self.language = portal.language
        self.refusal_stages = set(((portal.settings or {}).get("refusal_stages") or {}).values())
        self.postponed_stages = set(((portal.settings or {}).get(postpone.STAGES) or {}).values())
        self.stats: dict[str, ManagerStats] = {}
        self.buffer: list[dict[str, Any]] = []
        self.counts = {"tasks": 0, "overdue": 0, "deals": 0, "without_tasks": 0, "planned": 0}
        self.names: dict[str, str] = {}
        self.active: set[str] = set()

    def collect(self) -> dict[str, int]:
        """Read everything, plan notices, store the report. Returns counts."""
        people = directory.users(self.portal.id, self.crm)
        self.names = {user.id: user.name for user in people}
        self.active = {user.id for user in people if user.active}
        heads = directory.heads(self.portal.id, self.crm, self.guard)
        marked = DealBitmap()
        for item in self.crm.iter_open_work():
            if isinstance(item, Task):
                self._on_task(item, marked)
            else:
                self._on_deal(item, marked)
        report = self._report()
        self._plan_digest(heads, report)
        self._flush()
        self._store(report)
        db.session.commit()
        return dict(self.counts)

    def _manager(self, user_id: str) -> ManagerStats:
        if user_id not in self.stats:
            self.stats[user_id] = ManagerStats(user_id)
        return self.stats[user_id]

    def _on_task(self, task: Task, marked: DealBitmap) -> None:
        if not task.deal_id:
            return
        marked.add(task.deal_id)
        self.counts["tasks"] += 1
        if task.kind != "task" or not task.overdue:
            return
        self.counts["overdue"] += 1
        stats = self._manager(task.responsible_id)
        stats.overdue_tasks += 1
        if task.deadline is not None and (stats.oldest_overdue is None or task.deadline < stats.oldest_overdue):
            stats.oldest_overdue = task.deadline
        if len(stats.tasks) < SAMPLES:
            stats.tasks.append(
                {
                    "id": task.id,
                    "title": task.title,
                    "deal_id": task.deal_id,
                    "deadline": task.deadline.isoformat() if task.deadline else "",
                    "url": self.crm.deal_url(task.deal_id),
                }
            )
        if not self.settings.notify_overdue:
            return
        text = _text(
            "tc_notice_overdue",
            self.language,
            title=task.title,
            deadline=i18n.when(task.deadline, self.language, zone_name(self.portal)),
            responsible=self.names.get(task.responsible_id, task.responsible_id),
            link=self.crm.deal_url(task.deal_id),
        )
        recipients = dict.fromkeys([task.responsible_id, task.created_by or "", *task.auditor_ids])
        for user_id in recipients:
            if user_id and user_id in self.active:
                self._plan(f"overdue:{task.id}:{self.day}:{user_id}", user_id, "overdue", text, task.deal_id, task.id)

    def _on_deal(self, deal: Deal, marked: DealBitmap) -> None:
        if deal.stage_semantics != "process" or deal.stage_id in self.refusal_stages:
            return
        if not self.settings.checks(deal.pipeline_id):
            return
        self.counts["deals"] += 1
        stats = self._manager(deal.responsible_id)
        stats.open_deals += 1
        if deal.id in marked or deal.stage_id in self.postponed_stages:
            return  # a next step, or a wait in «Отложено» whose return task is due on its day
        self.counts["without_tasks"] += 1
        stats.deals_without_tasks += 1
        url = self.crm.deal_url(deal.id)
        if len(stats.deals) < SAMPLES:
            stats.deals.append({"id": deal.id, "title": deal.title, "url": url})
        if self.settings.notify_deals_without_tasks and deal.responsible_id in self.active:
            text = _text("tc_notice_no_task", self.language, title=deal.title, link=url)
            self._plan(f"notask:{deal.id}:{self.day}", deal.responsible_id, "no_task", text, deal.id, None)

    def _plan(self, key: str, user_id: str, kind: str, text: str, deal_id: str | None, task_id: str | None) -> None:
        self.buffer.append(
            {
                "portal_id": self.portal.id,
                "key": key[:255],
                "user_id": user_id,
                "kind": kind,
                "deal_id": deal_id,
                "task_id": task_id,
                "text": text,
                "status": TaskNotice.PENDING,
                "created_at": self.now,
            }
        )
        if len(self.buffer) >= FLUSH_EVERY:
            self._flush()

    def _flush(self) -> None:
        """Insert the planned notices; ones planned before (this day) are left as they are."""
        for values in self.buffer:
            statement = insert_ignore(TaskNotice, values, ["portal_id", "key"]).returning(TaskNotice.id)
            self.counts["planned"] += len(db.session.execute(statement).all())
        self.buffer = []
        db.session.commit()

    def _report(self) -> dict[str, Any]:
        managers = sorted(
            self.stats.values(), key=lambda s: (-s.overdue_tasks, -s.deals_without_tasks, len(s.user_id), s.user_id)
        )
        return {
            "day": self.day.isoformat(),
            "managers": [stats.as_dict(self.names.get(stats.user_id, stats.user_id)) for stats in managers],
            "totals": {k: self.counts[k] for k in ("tasks", "overdue", "deals", "without_tasks")},
        }

    def _plan_digest(self, heads: list[str], report: dict[str, Any]) -> None:
        """The heads' daily digest, on the first scan at or after the digest hour (portal time)."""
        if self.now.astimezone(_zone(self.portal)).hour < self.settings.digest_hour:
            return
        text = digest_text(report, self.language, zone_name(self.portal))
        for head in heads:
            self._plan(f"digest:{head}:{self.day}", head, "digest", text, None, None)

    def _store(self, report: dict[str, Any]) -> None:
        row = db.session.scalar(sa.select(TaskReport).where(TaskReport.portal_id == self.portal.id))
        if row is None:
            row = TaskReport(portal_id=self.portal.id)
            db.session.add(row)
        row.scanned_at = self.now
        row.data = report


def digest_text(report: dict[str, Any], language: str, timezone: str) -> str:
    """The heads' digest: one line per manager with something overdue or missing."""
    lines = [_text("tc_digest_header", language, day=report["day"])]
    for row in report["managers"]:
        if not row["overdue_tasks"] and not row["deals_without_tasks"]:
            continue
        oldest = ""
        if row["oldest_overdue"]:
            when = i18n.when(datetime.fromisoformat(row["oldest_overdue"]), language, timezone)
            oldest = _text("tc_digest_oldest", language, when=when)
        lines.append(
            _text(
                "tc_digest_line",
                language,
                name=row["name"],
                without=i18n.number(row["deals_without_tasks"], language),
                overdue=i18n.number(row["overdue_tasks"], language),
                oldest=oldest,
            )
        )
    if len(lines) == 1:
        lines.append(i18n.translate("tc_digest_clean", language))
    return "\n".join(lines)


def _claim(portal_id: int) -> list[TaskNotice]:
    """Take every pending notice (and ones a crashed sender left claimed) for this sender only."""
    token = uuid.uuid4().hex
    now = utcnow()
    db.session.execute(
        sa.update(TaskNotice)
        .where(
            TaskNotice.portal_id == portal_id,
            sa.or_(
                TaskNotice.status == TaskNotice.PENDING,
                sa.and_(TaskNotice.status == TaskNotice.CLAIMED, TaskNotice.claimed_at < now - CLAIM_EXPIRY),
            ),
        )
        .values(status=TaskNotice.CLAIMED, claim=token, claimed_at=now)
    )
    db.session.commit()
    return list(
        db.session.scalars(
            sa.select(TaskNotice)
            .where(TaskNotice.portal_id == portal_id, TaskNotice.claim == token)
            .order_by(TaskNotice.id)
        )
    )


def compose(lines: list[str], language: str) -> str:
    """One user's digest: header, then at most DIGEST_LINES lines."""
    shown = lines[:DIGEST_LINES]
    message = "\n".join([i18n.translate("tc_notice_header", language), *shown])
    if len(lines) > len(shown):
        message += "\n" + _text("tc_notice_more", language, count=i18n.number(len(lines) - len(shown), language))
    return message


def send_notices(portal: Portal, crm: CrmClient) -> int:
    """Send every claimable notice of the portal as one message per user. Returns the rows sent."""
    claimed = _claim(portal.id)
    if not claimed:
        return 0
    by_user: dict[str, list[TaskNotice]] = {}
    for notice in sorted(claimed, key=lambda n: (n.kind != "digest", n.id)):
        by_user.setdefault(notice.user_id, []).append(notice)
    messages = [
        Notice(
            user_id,
            compose([n.text for n in rows], portal.language),
            parts=tuple(Notice(user_id, n.text, deal_id=n.deal_id or "") for n in rows),
        )
        for user_id, rows in by_user.items()
    ]
    try:
        crm.notify_many(messages)
    except CrmError:
        log.warning("task control notices not sent; retried later", extra={"portal_id": portal.id})
        raise
    ids = [notice.id for notice in claimed]
    db.session.execute(
        sa.update(TaskNotice).where(TaskNotice.id.in_(ids)).values(status=TaskNotice.SENT, sent_at=utcnow())
    )
    db.session.commit()
    return len(ids)


# ------------------------------------------------------------------------------------------ report


def overdue_report(portal: Portal) -> dict[str, Any] | None:
    """The last scan's report: per manager open deals, deals without tasks, overdue tasks, oldest overdue."""
    row = db.session.scalar(sa.select(TaskReport).where(TaskReport.portal_id == portal.id))
    if row is None:
        return None
    return {"scanned_at": row.scanned_at, **row.data}


# ------------------------------------------------------------------------------------------ guard rule


def forward_move_rule(
    deal_guard: guard.Guard, deal: Deal, previous_stage: str, previous_pipeline: str, mover: str, role: str
) -> guard.Decision | None:
    """The next-step rule (when enabled): a deal without an open task or to-do may not move forward to a later
    in-progress stage, nor be closed as won; it goes back with a notice. Lost stays with the guard; heads, QA
    and exempt users (robots when the portal exempts them) pass."""
    settings = taskcontrol_settings(deal_guard.portal)
    if not settings.require_task_to_advance or not settings.checks(deal.pipeline_id):
        return None
    won = deal.stage_semantics == "success"
    if previous_pipeline != deal.pipeline_id or deal.stage_semantics == "failure" or role in ("head", "qa", "exempt"):
        return None
    before = directory.stage(deal_guard.portal.id, deal_guard.crm, previous_stage)
    if before is None or before.semantics != "process":
        return None
    if not won:
        after = directory.stage(deal_guard.portal.id, deal_guard.crm, deal.stage_id)
        if after is None or after.sort <= before.sort:
            return None
    if deal_guard.crm.open_deal_tasks(deal.id):
        return None
    portal = deal_guard.portal
    key = f"noforward:{deal.id}:{deal.stage_id}:{guard._stamp(deal)}"
    guard.remember(portal.id, deal, stage_id=previous_stage)
    effects.plan_effect(portal.id, deal.id, f"{key}:move", "move", {"stage_id": previous_stage})
    recipient = deal.responsible_id if mover in ("", AUTOMATION) else mover
    template = "tc_won_blocked" if won else "tc_forward_blocked"
    message = _text(template, portal.language, title=deal.title, link=deal_guard.crm.deal_url(deal.id))
    effects.plan_effect(portal.id, deal.id, f"{key}:notice", "notify", {"user_id": recipient, "message": message})
    audit.record(
        portal.id,
        mover or AUTOMATION,
        "close as won" if won else "move forward",
        "reverted",
        "the deal has no open task",
        deal_id=deal.id,
        violation=True,
        back_to=previous_stage,
    )
    return guard.Decision("reverted", "no open task")


# ------------------------------------------------------------------------------------------ robots


def _robot_portal(invocation: RobotInvocation) -> tuple[Portal, CrmClient]:
    portal = db.session.get(Portal, invocation.portal_id)
    if portal is None:
        raise LookupError(f"portal {invocation.portal_id} not found")
    return portal, client_for(portal)


def check_tasks_robot(invocation: RobotInvocation) -> dict[str, Any]:
    """Robot "Check tasks": whether the deal has an open task or to-do, and how many tasks are overdue."""
    if not invocation.deal_id:
        return {"has_open_task": "N", "overdue_count": 0}
    _portal, crm = _robot_portal(invocation)
    steps = crm.open_deal_tasks(invocation.deal_id)
    overdue = sum(1 for step in steps if step.kind == "task" and step.overdue)
    return {"has_open_task": "Y" if steps else "N", "overdue_count": overdue}


def _int_property(value: Any, name: str, low: int, high: int, default: int) -> int:
    if value in (None, ""):
        return default
    try:
        number = int(str(value).strip())
    except ValueError as error:
        raise ValueError(f"{name} must be a whole number from {low} to {high}") from error
    if not low <= number <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}")
    return number


def callback_deadline(portal: Portal, days: int, hour: int, now: datetime | None = None) -> datetime:
    """N days ahead at the given hour in the portal's time zone (aware)."""
    zone = _zone(portal)
    day = (now or utcnow()).astimezone(zone).date() + timedelta(days=days)
    return datetime.combine(day, time(hour=hour), tzinfo=zone)


def callback_robot(invocation: RobotInvocation) -> dict[str, Any]:
    """Robot "Callback in N days": a call task for the deal's responsible, N days ahead at an hour."""
    if not invocation.deal_id:
        return {"task_id": "", "deadline": "", "error": "the robot runs only on deals"}
    portal, crm = _robot_portal(invocation)
    props = invocation.properties
    try:
        days = _int_property(props.get("days"), "days", 1, 365, 7)
        hour = _int_property(props.get("hour"), "hour", 0, 23, 10)
    except ValueError as error:
        return {"task_id": "", "deadline": "", "error": str(error)}
    text = str(props.get("text") or "").strip()
    deal = crm.get_deal(invocation.deal_id)
    deadline = callback_deadline(portal, days, hour)
    title = (text.splitlines()[0] if text else i18n.translate("tc_callback_title", portal.language))[:250]
    key = f"callback:{invocation.event_token or uuid.uuid4().hex}"
    with effects.deal_lock(portal.id, deal.id):
        effects.plan_effect(
            portal.id,
            deal.id,
            key,
            "callback_task",
            {
                "title": title,
                "description": text,
                "responsible_id": deal.responsible_id,
                "deadline": deadline.isoformat(),
            },
        )
        audit.record(portal.id, invocation.user_id or AUTOMATION, "callback robot", "task planned", deal_id=deal.id)
        db.session.commit()
        effects.run_pending_effects(portal.id, deal.id, crm)
    effect = db.session.scalar(sa.select(Effect).where(Effect.portal_id == portal.id, Effect.key == key))
    task_id = effect.result if effect is not None else ""
    return {"task_id": task_id, "deadline": deadline.isoformat(timespec="seconds"), "error": ""}


def create_callback_task(effect: Effect, crm: CrmClient) -> str:
    payload = effect.payload
    return crm.create_task(
        NewTask(
            title=payload["title"],
            responsible_id=payload["responsible_id"],
            deal_id=effect.deal_id,
            deadline=datetime.fromisoformat(payload["deadline"]),
            description=payload["description"],
        )
    )


CHECK_TASKS_ROBOT = Robot(
    code=CHECK_TASKS,
    name_ru="Проверить задачи",
    name_en="Check tasks",
    description_ru="Есть ли у сделки открытая задача и сколько задач просрочено.",
    description_en="Whether the deal has an open task, and how many tasks are overdue.",
    handler=check_tasks_robot,
    return_properties={
        "has_open_task": RobotProperty("Есть открытая задача", "Has an open task", type="bool"),
        "overdue_count": RobotProperty("Просроченных задач", "Overdue tasks", type="int"),
    },
)
CALLBACK_ROBOT = Robot(
    code=CALLBACK,
    name_ru="Перезвонить через N дней",
    name_en="Callback in N days",
    description_ru="Ставит ответственному задачу на звонок через N дней в выбранный час (время портала).",
    description_en="Sets the responsible a call task N days ahead at the chosen hour (portal time).",
    handler=callback_robot,
    properties={
        "days": RobotProperty("Через сколько дней", "In how many days", type="int", required=True, default=7),
        "hour": RobotProperty("Час звонка (0–23)", "Hour of the call (0–23)", type="int", default=10),
        "text": RobotProperty("Текст задачи", "Task text", type="text", default="Перезвонить клиенту"),
    },
    return_properties={
        "task_id": RobotProperty("ID задачи", "Task ID"),
        "deadline": RobotProperty("Срок", "Deadline"),
        "error": RobotProperty("Ошибка", "Error"),
    },
)
