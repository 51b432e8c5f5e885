"""The CRM port: what the domain modules may ask of any CRM, in plain dataclasses.

Domain modules (refusals, penalties, exchange, taskcontrol, reports) see only these types; the
adapters translate them to and from each CRM's wire format.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from app.core.models import Portal

StageSemantics = Literal["process", "success", "failure"]
# How a deal field is checked when a stage requires it (app.domain.requirements): text that is not blank, a
# number or amount other than zero, a date, a list item chosen, a flag set, a link to a user or a CRM record.
FieldKind = Literal["string", "number", "money", "date", "enum", "boolean", "link"]
AUTOMATION = "automation"  # the mover of a change made by a robot, workflow or agent
CRM_REASON_PREFIX = "crm_"  # the code of a refusal reason the app first met as an item of the CRM's field


def reason_code_for_item(item_id: str) -> str:
    """The code of a refusal-reason item the app has no reason for yet (an admin added it in the CRM)."""
    return f"{CRM_REASON_PREFIX}{item_id}"


def item_of_reason_code(code: str) -> str | None:
    """The CRM item id a `crm_<id>` code stands for; None for any other code."""
    item = code[len(CRM_REASON_PREFIX) :] if code.startswith(CRM_REASON_PREFIX) else ""
    return item if item.isdigit() else None


@dataclass(frozen=True)
class Stage:
    """One stage (status) of a pipeline."""

    id: str
    pipeline_id: str
    name: str
    sort: int
    semantics: StageSemantics


@dataclass(frozen=True)
class Pipeline:
    """A deal pipeline (Bitrix24 category, amoCRM pipeline) with its stages in order."""

    id: str
    name: str
    stages: tuple[Stage, ...]
    is_default: bool = False


@dataclass(frozen=True)
class StageSpec:
    """A stage the app keeps in every pipeline (Conditional refusal): an in-progress stage right before the
    final ones. A CRM with stage codes (Bitrix24) finds it by `code`; one without (amoCRM) by any of `names`
    (the name it was created with may be another language's). `color` is a hint: a CRM with a fixed palette
    uses its own closest colour."""

    code: str
    name: str
    names: tuple[str, ...]
    color: str


@dataclass(frozen=True)
class Deal:
    """A deal (amoCRM lead) as the domain needs it; custom values are already decoded."""

    id: str
    title: str
    pipeline_id: str
    stage_id: str
    stage_semantics: StageSemantics
    responsible_id: str
    modified_by_id: str | None
    modified_at: datetime | None
    created_at: datetime | None = None
    moved_by_id: str | None = None
    moved_at: datetime | None = None
    amount: Decimal = Decimal("0")
    currency: str = ""
    source_id: str = ""
    refusal_reason: str | None = None
    refusal_comment: str = ""
    qa_verdict: str | None = None
    cpl: Decimal | None = None
    last_activity_at: datetime | None = None
    # ABC qualification (app.domain.abc): the need, budget and urgency answers ("yes", "no", None unanswered)
    # and the class field as the CRM holds it ("A", "B", "C", None empty); all None where the fields are not installed.
    abc_need: str | None = None
    abc_budget: str | None = None
    abc_urgency: str | None = None
    abc_class: str | None = None
    # Every field of the deal by its code (Bitrix24 field names such as OPPORTUNITY or UF_CRM_…; amoCRM
    # "name", "price" and custom field ids), each as its non-empty values in text ("" and nulls left out).
    values: Mapping[str, tuple[str, ...]] = field(default_factory=dict, compare=False, hash=False)
    postpone_reason: str | None = None  # the code of the «Отложено» reason (catalog.POSTPONE_REASONS)
    postpone_date: date | None = None  # the day the postponed deal comes back, in the portal's calendar


@dataclass(frozen=True)
class DealField:
    """A deal field an admin can require on a stage: its code (the key of `Deal.values`), label and kind."""

    code: str
    label: str
    kind: FieldKind
    multiple: bool = False


@dataclass(frozen=True)
class Client:
    """A contact or company (the client of a deal) as the repeat-client rule needs it."""

    kind: Literal["contact", "company"]
    id: str
    responsible_id: str
    created_at: datetime | None = None


@dataclass(frozen=True)
class ClientHistory:
    """What the CRM knows of a deal's client: the deal's own contacts and company (`own`), the other contacts and
    companies that share a phone or an e-mail with them (`duplicates`), and the open deals of all of them other
    than this deal."""

    own: tuple[Client, ...] = ()
    duplicates: tuple[Client, ...] = ()
    open_deals: tuple[Deal, ...] = ()


@dataclass(frozen=True)
class DealChange:
    """What the app wants written to a deal; None leaves a field as it is."""

    stage_id: str | None = None
    pipeline_id: str | None = None
    responsible_id: str | None = None
    refusal_reason: str | None = None
    refusal_comment: str | None = None
    qa_verdict: str | None = None
    abc_class: str | None = None  # "A", "B", "C"; "" empties the class field


@dataclass(frozen=True)
class FieldOption:
    """One item of the CRM's refusal-reason field (Bitrix24 enumeration item, amoCRM select option).

    `id` is the CRM's item id ("" for an item still to be added); `code` is our reason code where the CRM keeps
    one with the item (Bitrix24 XML_ID; amoCRM keeps none)."""

    id: str
    name: str
    sort: int
    code: str = ""


@dataclass(frozen=True)
class Notice:
    """A notice for a user; notices with the same non-empty key replace each other (a resent notice shows once).
    `deal_id`: the deal the notice is about (amoCRM attaches it to that lead). `parts`: a digest of several deals
    split into one notice per line, for a CRM that attaches each line to its own deal instead of sending
    `message` as one (amoCRM); a part without a deal goes out unattached."""

    user_id: str
    message: str
    key: str = ""
    deal_id: str = ""
    parts: tuple[Notice, ...] = ()


@dataclass(frozen=True)
class DealWrite:
    """A change to one deal and the notices that go with it (a notice is sent only when the change landed)."""

    deal_id: str
    change: DealChange | None
    notices: tuple[Notice, ...] = ()


@dataclass(frozen=True)
class EchoWindow:
    """When the CRM stamps the one deal event that a write of ours sends back to us (the event's own stamp:
    Bitrix24 `ts`, amoCRM `last_modified`), in unix seconds, both ends included."""

    earliest: int
    latest: int

    def holds(self, stamp: int) -> bool:
        return self.earliest <= stamp <= self.latest


@dataclass(frozen=True)
class WriteOutcome:
    """What became of one DealWrite: one entry per write (the change first when there is one, then each
    notice), None when it was carried out, else the error; `echo` when the change landed and the CRM sends
    exactly one deal event back for it."""

    errors: tuple[Exception | None, ...]
    echo: EchoWindow | None = None


@dataclass(frozen=True)
class User:
    """A CRM user."""

    id: str
    name: str
    active: bool = True
    department_ids: tuple[str, ...] = ()
    is_admin: bool = False


@dataclass(frozen=True)
class Department:
    """A department (amoCRM: users group)."""

    id: str
    name: str
    head_id: str | None = None
    parent_id: str | None = None


@dataclass(frozen=True)
class Source:
    """A lead source (Bitrix24 crm.status ENTITY_ID SOURCE)."""

    id: str
    name: str


@dataclass(frozen=True)
class Task:
    """A task (or to-do) linked to a deal."""

    id: str
    title: str
    responsible_id: str
    deal_id: str | None
    deadline: datetime | None
    is_open: bool
    created_by: str | None = None
    auditor_ids: tuple[str, ...] = ()
    overdue: bool = False
    kind: Literal["task", "todo"] = "task"


@dataclass(frozen=True)
class NewTask:
    """A task the app creates."""

    title: str
    responsible_id: str
    deal_id: str
    deadline: datetime
    description: str = ""
    created_by: str | None = None
    auditor_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskCompletion:
    """A task, or a to-do made by `create_todo` (`kind` "todo"), to mark completed with `result` as its outcome."""

    task_id: str
    result: str = ""
    kind: Literal["task", "todo"] = "task"


@dataclass(frozen=True)
class Call:
    """A phone call linked to a deal, with its recording when there is one."""

    id: str
    deal_id: str
    user_id: str | None
    direction: Literal["in", "out"]
    started_at: datetime | None
    duration_seconds: int
    recording_url: str | None = None
    recording_file_id: str | None = None
    phone: str = ""


@dataclass(frozen=True)
class NewTodo:
    """A to-do (a reminder in the deal's timeline, e.g. "call the client") the app creates."""

    title: str
    responsible_id: str
    deal_id: str
    deadline: datetime
    description: str = ""


@dataclass(frozen=True)
class Recording:
    """A call recording being streamed from the CRM; call `close()` when done."""

    content_type: str
    chunks: Iterator[bytes]
    close: Callable[[], None]
    length: int | None = None


@dataclass(frozen=True)
class CrmTimeZone:
    """The time zone the CRM reports for the portal or account: an IANA name where it names one, and the UTC
    offset it reports now (Bitrix24 names only the admin's own zone; its server time carries the offset)."""

    name: str | None
    offset: timedelta | None = None


@dataclass(frozen=True)
class DealPage:
    """Deals from a scan, with the cursor to continue from."""

    deals: Sequence[Deal]
    next_cursor: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


class CrmClient(Protocol):
    """Everything the domain asks of a CRM. Adapters raise app.crm.errors.CrmError subclasses."""

    def get_deal(self, deal_id: str) -> Deal:
        """Re-read one deal (never trust a webhook payload)."""
        ...

    def get_deals(self, deal_ids: Sequence[str]) -> dict[str, Deal]:
        """Read many deals in as few calls as possible; missing ids are left out."""
        ...

    def update_deal(self, deal_id: str, change: DealChange) -> None:
        """Write the given fields of a deal."""
        ...

    def stage_before(self, deal_id: str, stage_id: str) -> str | None:
        """The stage a deal was in before it last entered `stage_id` (from the CRM's stage history)."""
        ...

    def iter_deals(self, *, modified_since: datetime | None = None, open_only: bool = False) -> Iterator[Deal]:
        """Stream deals (oldest id first) without loading them all."""
        ...

    def drain_deal_changes(self, handle: Callable[[list[str]], None]) -> int | None:
        """Feed ids of deals changed since the last drain to `handle`, acknowledging a batch only after
        `handle` returns. None when the CRM keeps no such queue for this account (then sweep instead)."""
        ...

    def list_pipelines(self) -> list[Pipeline]:
        """Every deal pipeline with its stages."""
        ...

    def ensure_stage(self, pipeline_id: str, spec: StageSpec) -> str:
        """The id of the `spec` stage in one pipeline, created when the CRM has none (looked up first, so a
        rerun creates nothing). The caller keeps two of these for one pipeline from running at once."""
        ...

    def list_users(self) -> list[User]:
        """Every user of the portal."""
        ...

    def list_departments(self) -> list[Department]:
        """Every department."""
        ...

    def list_sources(self) -> list[Source]:
        """The lead sources a deal can carry, in the CRM's order."""
        ...

    def list_deal_fields(self) -> list[DealField]:
        """The deal fields a person can fill in (standard and user fields), with their labels, in the CRM's
        order; read-only and computed fields are left out."""
        ...

    def deal_url(self, deal_id: str) -> str:
        """The address of the deal's card in the CRM, for links in notices."""
        ...

    def notify(self, user_id: str, message: str, key: str = "", deal_id: str = "") -> None:
        """Tell a user something in the CRM (notification, or a task where there is none). A repeated
        notice with the same non-empty `key` replaces the earlier one instead of adding a second; a notice
        about a deal (`deal_id`) is attached to it where the CRM keeps notes on deals (amoCRM)."""
        ...

    def update_deal_and_notify(
        self, deal_id: str, change: DealChange, notices: Sequence[Notice]
    ) -> list[Exception | None]:
        """Write a change to a deal, then send notices, in as few requests as the CRM allows. Returns one
        entry per write (the change first, then each notice): None when it was carried out, else the
        error. Notices are not sent when the change failed (their entries then hold that error)."""
        ...

    def write_deals(self, writes: Sequence[DealWrite]) -> list[WriteOutcome]:
        """Many deals' changes and their notices in as few requests as the CRM allows (Bitrix24: batches of
        50 commands; amoCRM: one PATCH of many leads, then one POST of the notice tasks). One outcome per
        write, in order; a failed write never stops the others."""
        ...

    def create_task(self, task: NewTask) -> str:
        """Create a task linked to a deal; returns its id."""
        ...

    def create_tasks(self, tasks: Sequence[NewTask]) -> list[str | Exception]:
        """Many tasks, each linked to its deal, in as few requests as the CRM allows (Bitrix24: batches of 50
        `tasks.task.add`; amoCRM: POSTs of 50 tasks). One entry per task, in order: its id, or the error that
        kept it from being created; a failed task never stops the others."""
        ...

    def complete_tasks(self, completions: Sequence[TaskCompletion]) -> list[Exception | None]:
        """Many tasks and to-dos completed in as few requests as the CRM allows (Bitrix24: batches of 50;
        amoCRM: PATCHes of 50 tasks), each as `complete_task` / `complete_todo` would (one already completed or
        gone is not an error). One entry per completion, in order: None when done, else the error."""
        ...

    def list_deal_tasks(self, deal_id: str) -> list[Task]:
        """Tasks linked to a deal."""
        ...

    def list_deal_calls(self, deal_id: str) -> list[Call]:
        """Calls linked to a deal, with recordings."""
        ...

    def count_open_deals(self, responsible_id: str, pipeline_id: str) -> int:
        """How many open deals of one pipeline a user is responsible for (one call, no rows)."""
        ...

    def create_todo(self, todo: NewTodo) -> str:
        """Create a to-do on the deal for a user; returns its id."""
        ...

    def complete_task(self, task_id: str, result: str = "") -> None:
        """Mark a task completed, with `result` as its outcome where the CRM keeps one. A task that is
        already completed or no longer exists (deleted, or gone with its deal) is not an error."""
        ...

    def complete_todo(self, todo_id: str, result: str = "") -> None:
        """Mark a to-do (made by `create_todo`) completed, with `result` where the CRM keeps one. A to-do
        that is already completed or no longer exists is not an error."""
        ...

    def open_recording(self, call: Call) -> Recording:
        """Stream a call's recording from the CRM (server-side: no CRM token ever reaches a browser)."""
        ...

    def open_deal_tasks(self, deal_id: str) -> list[Task]:
        """The deal's open tasks and open to-dos (its next steps), in as few calls as possible."""
        ...

    def iter_open_work(self) -> Iterator[Task | Deal]:
        """Stream every open task and to-do bound to a deal, then every open deal (never all in memory).

        Every Task comes before the first Deal, so a caller can mark deals with a next step first.
        """
        ...

    def notify_many(self, notices: Sequence[Notice]) -> None:
        """Send several notices in as few calls as possible (keys are not used here)."""
        ...

    def list_reason_options(self) -> list[FieldOption]:
        """The items of the refusal-reason field as the CRM has them now, in the CRM's order."""
        ...

    def save_reason_options(self, options: Sequence[FieldOption]) -> list[FieldOption]:
        """Write the refusal-reason field's items: an option with an id renames and re-sorts that item, one
        without an id is added; items not named stay as they are (deals holding them keep their value).
        Returns the field's items as the CRM has them afterwards."""
        ...

    def client_history(self, deal_id: str) -> ClientHistory:
        """The deal's contacts and company, their duplicates by phone and e-mail, and the open deals of all of
        them (this deal left out), in as few calls as the CRM allows."""
        ...

    def time_zone(self) -> CrmTimeZone:
        """The portal's or account's own time zone as the CRM reports it."""
        ...

    def order_stages(self, pipeline_id: str, stage_ids: Sequence[str]) -> None:
        """Move the named in-progress stages of a pipeline, in this order, after its other in-progress stages
        (the final ones stay last); stages already in place are not written."""
        ...


ClientFactory = Callable[["Portal"], CrmClient]
_factory: list[ClientFactory] = []


def use_client_factory(factory: ClientFactory) -> None:
    """How a portal's CrmClient is made; set once by create_app (the adapters live outside the domain)."""
    _factory[:] = [factory]


def client_for(portal: Portal) -> CrmClient:
    """The CrmClient for a portal, made by the factory create_app installed."""
    if not _factory:
        raise RuntimeError("no CRM client factory installed: build the app with create_app()")
    return _factory[0](portal)
