"""An in-memory CrmClient for unit tests of the domain rules (a fake in the cosmicpython sense).

`InMemoryCrm` keeps a small CRM in dictionaries and follows the contract each `CrmClient` method states in
app/crm/port.py. Tests arrange the CRM with the `add_*` helpers, act as people in the CRM with `move`,
`fill_refusal`, `reassign` (these are *their* edits, never recorded as ours), and assert on what the app
wrote: `writes` lists every write made through the port, in order; `inbox(user)` is what a user sees
(keyed notices replace each other); `fail_next(method, error)` makes the next call of a method fail.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from app.crm.errors import CrmError
from app.crm.port import (
    Call,
    Client,
    ClientHistory,
    CrmClient,
    CrmTimeZone,
    Deal,
    DealChange,
    DealField,
    DealWrite,
    Department,
    EchoWindow,
    FieldOption,
    NewTask,
    NewTodo,
    Notice,
    Pipeline,
    Recording,
    Source,
    Stage,
    StageSemantics,
    StageSpec,
    Task,
    TaskCompletion,
    User,
    WriteOutcome,
    reason_code_for_item,
)

APP_USER = "1"  # who the CRM names as the author of the app's own writes (the installing admin's token)
DRAIN_BATCH = 50


class FakeNotFound(CrmError):
    """The fake has no such deal, task or recording."""

    default_code = "NOT_FOUND"


@dataclass(frozen=True)
class Write:
    """One write the app made through the port: the method, the object it touched and what it sent."""

    method: str
    target: str
    payload: Any


def _by_id(value: str) -> tuple[int, str]:
    """Numeric ids in numeric order (what both CRMs do for `ORDER BY ID`)."""
    return (len(value), value)


class InMemoryCrm:
    """A CRM portal in memory. Every `CrmClient` method works on the state below."""

    def __init__(
        self,
        *,
        domain: str = "crm.example.test",
        keeps_change_queue: bool = True,
        start: datetime | None = None,
        app_user_id: str = APP_USER,
    ) -> None:
        self.domain = domain
        self.keeps_change_queue = keeps_change_queue
        self.app_user_id = app_user_id
        self.clock = (start or datetime.now(UTC)).replace(microsecond=0)
        self.pipelines: dict[str, Pipeline] = {}
        self.users: dict[str, User] = {}
        self.departments: dict[str, Department] = {}
        self.sources: list[Source] = []
        self.fields: list[DealField] = []
        self.deals: dict[str, Deal] = {}
        self.stage_history: dict[str, list[str]] = defaultdict(list)  # stages each deal entered, oldest first
        self.tasks: dict[str, Task] = {}
        self.task_descriptions: dict[str, str] = {}
        self.task_results: dict[str, str] = {}  # result text of each task or to-do the app completed
        self.calls: dict[str, list[Call]] = defaultdict(list)
        self.recordings: dict[str, tuple[str, bytes]] = {}  # call id -> (content type, bytes)
        self.recordings_closed = 0
        self.writes: list[Write] = []
        self.notices: list[Notice] = []  # every notice delivered, in order (a resent keyed one included)
        self.reads: dict[str, int] = defaultdict(int)  # calls per method name
        self.batch_reads = 0  # get_deals calls (one request each, whatever the number of deals)
        self.batch_writes = 0  # write_deals calls (one request per 50 deal writes)
        self.batch_tasks = 0  # create_tasks / complete_tasks calls (one request per 50 tasks)
        self.read_deal_ids: list[str] = []  # every deal read, by get_deal or get_deals, in order
        self._inboxes: dict[str, list[Notice]] = defaultdict(list)
        self._changes: list[str] = []  # the CRM's queue of changed deal ids (one entry per change event)
        self._failures: dict[str, list[Exception]] = defaultdict(list)
        self._refused: set[str] = set()  # deals whose writes fail (see refuse_writes_to)
        self._next_id = 100
        self.reason_options: list[FieldOption] = []  # the refusal-reason field's items, in the CRM's order
        self.clients: dict[tuple[str, str], Client] = {}  # (kind, id) -> contact or company
        self.client_details: dict[tuple[str, str], tuple[str, ...]] = {}  # (kind, id) -> phones and e-mails
        self.deal_clients: dict[str, list[tuple[str, str]]] = defaultdict(list)  # deal id -> its (kind, id)
        self.zone = CrmTimeZone("Europe/Moscow", timedelta(hours=3))  # what time_zone() reports

    # ================================================================== arranging (tests, not the port)
    def now(self) -> datetime:
        """The CRM's clock: one second later on every change, so each change has its own moment."""
        self.clock += timedelta(seconds=1)
        return self.clock

    def _new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    def add_pipeline(
        self, pipeline_id: str, stages: Sequence[tuple[str, StageSemantics]], name: str = "", is_default: bool = False
    ) -> Pipeline:
        """A pipeline with stages (id, semantics) in the given order."""
        pipeline = Pipeline(
            id=pipeline_id,
            name=name or f"Pipeline {pipeline_id}",
            is_default=is_default,
            stages=tuple(
                Stage(id=stage_id, pipeline_id=pipeline_id, name=stage_id.title(), sort=(index + 1) * 10, semantics=sem)
                for index, (stage_id, sem) in enumerate(stages)
            ),
        )
        self.pipelines[pipeline_id] = pipeline
        return pipeline

    def add_user(self, user_id: str, name: str = "", *, departments: Sequence[str] = (), **fields: Any) -> User:
        user = User(id=user_id, name=name or f"User {user_id}", department_ids=tuple(departments), **fields)
        self.users[user_id] = user
        return user

    def add_department(self, department_id: str, name: str = "", head_id: str | None = None) -> Department:
        department = Department(id=department_id, name=name or f"Department {department_id}", head_id=head_id)
        self.departments[department_id] = department
        return department

    def add_source(self, source_id: str, name: str = "") -> Source:
        source = Source(id=source_id, name=name or source_id)
        self.sources.append(source)
        return source

    def add_field(self, code: str, label: str, kind: Any = "string", multiple: bool = False) -> DealField:
        """A deal field (standard or a user field) with its label, as the CRM lists it."""
        deal_field = DealField(code=code, label=label, kind=kind, multiple=multiple)
        self.fields.append(deal_field)
        return deal_field

    def fill(self, deal_id: str, values: dict[str, Any], *, by: str) -> Deal:
        """A person fills in (or, with None or "", clears) fields of a deal card."""
        deal = self._deal(deal_id)
        merged = dict(deal.values)
        for code, value in values.items():
            items = value if isinstance(value, list | tuple) else [value]
            texts = tuple(str(item) for item in items if item is not None and str(item) != "")
            if texts:
                merged[code] = texts
            else:
                merged.pop(code, None)
        self.deals[deal.id] = replace(deal, values=merged)
        return self._apply(deal_id, DealChange(), by)

    def stage(self, stage_id: str) -> Stage:
        for pipeline in self.pipelines.values():
            for stage in pipeline.stages:
                if stage.id == stage_id:
                    return stage
        raise KeyError(f"no stage {stage_id!r}")

    def add_deal(
        self,
        *,
        stage_id: str,
        responsible_id: str,
        title: str = "Machine tools",
        created_by: str | None = None,
        **fields: Any,
    ) -> Deal:
        """A deal created in the CRM by a person (by default its responsible)."""
        stage = self.stage(stage_id)
        moment = self.now()
        deal = Deal(
            id=fields.pop("id", None) or self._new_id(),
            title=title,
            pipeline_id=stage.pipeline_id,
            stage_id=stage.id,
            stage_semantics=stage.semantics,
            responsible_id=responsible_id,
            modified_by_id=created_by or responsible_id,
            modified_at=moment,
            created_at=moment,
            moved_by_id=created_by or responsible_id,
            moved_at=moment,
            **fields,
        )
        self.deals[deal.id] = deal
        self.stage_history[deal.id].append(stage.id)
        self._changes.append(deal.id)
        return deal

    def add_client(
        self,
        kind: str,
        responsible_id: str,
        *,
        deals: Sequence[str] = (),
        details: Sequence[str] = (),
        created_at: datetime | None = None,
    ) -> Client:
        """A contact or company (`kind`), linked to `deals`, with phones and e-mails (`details`)."""
        client = Client(
            kind="company" if kind == "company" else "contact",
            id=self._new_id(),
            responsible_id=responsible_id,
            created_at=created_at or self.now(),
        )
        self.clients[(client.kind, client.id)] = client
        self.client_details[(client.kind, client.id)] = tuple(details)
        for deal_id in deals:
            self.deal_clients[deal_id].append((client.kind, client.id))
        return client

    def move(self, deal_id: str, stage_id: str, *, by: str | None) -> Deal:
        """A person (`by`) or a robot (`by=None`: the CRM names no user) moves a deal in the CRM."""
        return self._apply(deal_id, DealChange(stage_id=stage_id, pipeline_id=self.stage(stage_id).pipeline_id), by)

    def fill_refusal(self, deal_id: str, *, by: str, reason: str | None, comment: str = "") -> Deal:
        """A person fills in the refusal fields of a deal card."""
        return self._apply(deal_id, DealChange(refusal_reason=reason, refusal_comment=comment), by)

    def reassign(self, deal_id: str, to: str, *, by: str) -> Deal:
        return self._apply(deal_id, DealChange(responsible_id=to), by)

    def add_task(
        self, deal_id: str | None, responsible_id: str, *, title: str = "Call back", deadline: datetime | None = None
    ) -> Task:
        """A task a person created in the CRM."""
        task = Task(
            id=self._new_id(),
            title=title,
            responsible_id=responsible_id,
            deal_id=deal_id,
            deadline=deadline,
            is_open=True,
            created_by=responsible_id,
        )
        self.tasks[task.id] = task
        return task

    def delete_task(self, task_id: str) -> None:
        """Someone deleted a task or to-do in the CRM."""
        self.tasks.pop(task_id, None)

    def add_call(self, deal_id: str, user_id: str, *, duration: int = 42, recording: bytes | None = None) -> Call:
        call_id = self._new_id()
        call = Call(
            id=call_id,
            deal_id=deal_id,
            user_id=user_id,
            direction="out",
            started_at=self.now(),
            duration_seconds=duration,
            recording_url=f"https://{self.domain}/records/{call_id}.mp3" if recording is not None else None,
            recording_file_id=call_id if recording is not None else None,
        )
        self.calls[deal_id].append(call)
        if recording is not None:
            self.recordings[call_id] = ("audio/mpeg", recording)
        return call

    def add_reason_option(self, name: str) -> str:
        """An admin adds an item to the refusal-reason field in the CRM; returns the code a deal carrying it
        decodes to (`crm_<item id>`, as the adapters decode an item the app has no reason for)."""
        option = FieldOption(id=self._new_id(), name=name, sort=1000 + len(self.reason_options))
        self.reason_options.append(option)
        return reason_code_for_item(option.id)

    def fail_next(self, method: str, error: Exception | None = None) -> None:
        """Make the next call of a port method (`update_deal`, `notify`, `create_task`, ...) raise."""
        self._failures[method].append(error or CrmError("injected failure", code="FAKE", http_status=503))

    def refuse_writes_to(self, deal_id: str) -> None:
        """Every write to this deal fails from now on (a deal the CRM locked, a field it refuses)."""
        self._refused.add(str(deal_id))

    # ================================================================== observing (tests, not the port)
    def inbox(self, user_id: str) -> list[str]:
        """The notices a user sees, oldest first; a keyed notice resent shows once."""
        return [notice.message for notice in self._inboxes[user_id]]

    def writes_to(self, deal_id: str) -> list[Write]:
        """The app's writes that touched a deal (changes and tasks/to-dos on it)."""
        return [write for write in self.writes if write.target == deal_id]

    def deal_changes(self, deal_id: str) -> list[DealChange]:
        return [w.payload for w in self.writes if w.target == deal_id and w.method == "update_deal"]

    # ================================================================== internals
    def _maybe_fail(self, method: str) -> None:
        if self._failures.get(method):
            raise self._failures[method].pop(0)

    def _deal(self, deal_id: str) -> Deal:
        deal = self.deals.get(str(deal_id))
        if deal is None:
            raise FakeNotFound(f"deal {deal_id} not found", http_status=404)
        return deal

    def _apply(self, deal_id: str, change: DealChange, by: str | None) -> Deal:
        deal = self._deal(deal_id)
        moment = self.now()
        values: dict[str, Any] = {"modified_by_id": by, "modified_at": moment}
        if change.stage_id is not None and change.stage_id != deal.stage_id:
            stage = self.stage(change.stage_id)
            if change.pipeline_id is not None and change.pipeline_id != stage.pipeline_id:
                raise CrmError(f"stage {stage.id} is not in pipeline {change.pipeline_id}", code="BAD_STAGE")
            values |= {
                "stage_id": stage.id,
                "pipeline_id": stage.pipeline_id,
                "stage_semantics": stage.semantics,
                "moved_by_id": by,
                "moved_at": moment,
            }
            self.stage_history[deal.id].append(stage.id)
        elif change.pipeline_id is not None and change.pipeline_id != deal.pipeline_id:
            raise CrmError("a pipeline move needs a stage of that pipeline", code="BAD_STAGE")
        for name in ("responsible_id", "refusal_reason", "qa_verdict"):
            if getattr(change, name) is not None:
                values[name] = getattr(change, name)
        if change.refusal_comment is not None:
            values["refusal_comment"] = change.refusal_comment
        updated = replace(deal, **values)
        self.deals[deal.id] = updated
        self._changes.append(deal.id)
        return updated

    def _deliver(self, notice: Notice) -> None:
        inbox = self._inboxes[notice.user_id]
        if notice.key:
            inbox[:] = [shown for shown in inbox if shown.key != notice.key]
        inbox.append(notice)
        self.notices.append(notice)

    def _read(self, method: str) -> None:
        self.reads[method] += 1
        self._maybe_fail(method)

    def _with_overdue(self, task: Task) -> Task:
        overdue = task.is_open and task.deadline is not None and task.deadline < self.clock
        return replace(task, overdue=overdue)

    # ================================================================== the CrmClient port
    def get_deal(self, deal_id: str) -> Deal:
        """Re-read one deal (never trust a webhook payload)."""
        self._read("get_deal")
        self.read_deal_ids.append(str(deal_id))
        return self._deal(deal_id)

    def get_deals(self, deal_ids: Sequence[str]) -> dict[str, Deal]:
        """Read many deals in as few calls as possible; missing ids are left out."""
        self._read("get_deals")
        self.batch_reads += 1
        self.read_deal_ids.extend(str(i) for i in dict.fromkeys(deal_ids))
        return {str(i): self.deals[str(i)] for i in dict.fromkeys(deal_ids) if str(i) in self.deals}

    def update_deal(self, deal_id: str, change: DealChange) -> None:
        """Write the given fields of a deal."""
        self._maybe_fail("update_deal")
        self._deal(deal_id)
        self.writes.append(Write("update_deal", str(deal_id), change))
        self._apply(deal_id, change, self.app_user_id)

    def stage_before(self, deal_id: str, stage_id: str) -> str | None:
        """The stage a deal was in before it last entered `stage_id` (from the CRM's stage history)."""
        self._read("stage_before")
        history = self.stage_history.get(str(deal_id), [])
        for index in range(len(history) - 1, -1, -1):
            if history[index] == stage_id:
                for earlier in reversed(history[:index]):
                    if earlier != stage_id:
                        return earlier
                return None
        return None

    def iter_deals(self, *, modified_since: datetime | None = None, open_only: bool = False) -> Iterator[Deal]:
        """Stream deals (oldest id first) without loading them all."""
        self._read("iter_deals")
        if modified_since is not None and modified_since.tzinfo is None:
            raise ValueError("modified_since must be aware")
        for deal_id in sorted(self.deals, key=_by_id):
            deal = self.deals[deal_id]
            if open_only and deal.stage_semantics != "process":
                continue
            if modified_since is not None and (deal.modified_at is None or deal.modified_at < modified_since):
                continue
            yield deal

    def drain_deal_changes(self, handle: Callable[[list[str]], None]) -> int | None:
        """Feed ids of deals changed since the last drain to `handle`, acknowledging a batch only after
        `handle` returns. None when the CRM keeps no such queue for this account (then sweep instead)."""
        self._read("drain_deal_changes")
        if not self.keeps_change_queue:
            return None
        drained = 0
        while self._changes:
            batch = self._changes[:DRAIN_BATCH]
            handle(sorted(set(batch), key=_by_id))  # raises: nothing acknowledged, the batch stays queued
            del self._changes[: len(batch)]
            drained += len(batch)
        return drained

    def list_pipelines(self) -> list[Pipeline]:
        """Every deal pipeline with its stages."""
        self._read("list_pipelines")
        return list(self.pipelines.values())

    def ensure_stage(self, pipeline_id: str, spec: StageSpec) -> str:
        """The `spec` stage of a pipeline (found by its code or a name), else a new in-progress stage right
        before the final ones, with the id `{pipeline}:{code}`."""
        self._read("ensure_stage")
        pipeline = self.pipelines[pipeline_id]
        for stage in pipeline.stages:
            if stage.id.split(":")[-1] == spec.code or stage.name in spec.names:
                return stage.id
        stage_id = f"{pipeline_id}:{spec.code}"
        ordered = list(pipeline.stages)
        at = next((index for index, stage in enumerate(ordered) if stage.semantics != "process"), len(ordered))
        ordered.insert(at, Stage(stage_id, pipeline_id, spec.name, 0, "process"))
        stages = tuple(replace(stage, sort=(index + 1) * 10) for index, stage in enumerate(ordered))
        self.pipelines[pipeline_id] = replace(pipeline, stages=stages)
        self.writes.append(Write("ensure_stage", pipeline_id, spec))
        return stage_id

    def order_stages(self, pipeline_id: str, stage_ids: Sequence[str]) -> None:
        """The named in-progress stages, in this order, after the others; the final ones last; sorts renumbered."""
        self._maybe_fail("order_stages")
        pipeline = self.pipelines[pipeline_id]
        named = [stage for wanted in stage_ids for stage in pipeline.stages if stage.id == wanted]
        others = [stage for stage in pipeline.stages if stage not in named and stage.semantics == "process"]
        final = [stage for stage in pipeline.stages if stage.semantics != "process"]
        ordered = [*others, *named, *final]
        stages = tuple(replace(stage, sort=(index + 1) * 10) for index, stage in enumerate(ordered))
        self.pipelines[pipeline_id] = replace(pipeline, stages=stages)
        self.writes.append(Write("order_stages", pipeline_id, list(stage_ids)))

    def list_users(self) -> list[User]:
        """Every user of the portal."""
        self._read("list_users")
        return list(self.users.values())

    def list_departments(self) -> list[Department]:
        """Every department."""
        self._read("list_departments")
        return list(self.departments.values())

    def list_sources(self) -> list[Source]:
        """The lead sources a deal can carry, in the CRM's order."""
        self._read("list_sources")
        return list(self.sources)

    def list_deal_fields(self) -> list[DealField]:
        """The deal fields a person can fill in, with their labels."""
        self._read("list_deal_fields")
        return list(self.fields)

    def deal_url(self, deal_id: str) -> str:
        """The address of the deal's card in the CRM, for links in notices."""
        return f"https://{self.domain}/crm/deal/details/{deal_id}/"

    def notify(self, user_id: str, message: str, key: str = "", deal_id: str = "") -> None:
        """Tell a user something in the CRM. A repeated notice with the same non-empty `key` replaces the
        earlier one instead of adding a second."""
        self._maybe_fail("notify")
        notice = Notice(user_id, message, key, deal_id)
        self.writes.append(Write("notify", user_id, notice))
        self._deliver(notice)

    def update_deal_and_notify(
        self, deal_id: str, change: DealChange, notices: Sequence[Notice]
    ) -> list[Exception | None]:
        """Write a change to a deal, then send notices. Returns one entry per write (the change first, then
        each notice): None when it was carried out, else the error. Notices are not sent when the change
        failed (their entries then hold that error)."""
        try:
            self.update_deal(deal_id, change)
        except CrmError as error:
            return [error, *(error for _ in notices)]
        outcomes: list[Exception | None] = [None]
        for notice in notices:
            try:
                self.notify(notice.user_id, notice.message, notice.key)
            except CrmError as error:
                outcomes.append(error)
            else:
                outcomes.append(None)
        return outcomes

    def write_deals(self, writes: Sequence[DealWrite]) -> list[WriteOutcome]:
        """Many deals' changes and their notices; one request per 50 writes (counted in `batch_writes`). A
        change that lands sends one deal event back, stamped with the moment the fake gave it."""
        self._maybe_fail("write_deals")
        self.batch_writes += max(1, -(-len(writes) // 50))
        outcomes = []
        for write in writes:
            errors: list[Exception | None] = []
            echo = None
            if write.change is not None:
                try:
                    self._maybe_fail("update_deal")
                    if write.deal_id in self._refused:
                        raise CrmError(f"deal {write.deal_id} refuses writes", code="FAKE", http_status=400)
                    self._deal(write.deal_id)
                    self.writes.append(Write("update_deal", write.deal_id, write.change))
                    updated = self._apply(write.deal_id, write.change, self.app_user_id)
                except CrmError as error:
                    outcomes.append(WriteOutcome(tuple(error for _ in range(1 + len(write.notices)))))
                    continue
                errors.append(None)
                assert updated.modified_at is not None
                stamp = int(updated.modified_at.timestamp())
                echo = EchoWindow(stamp, stamp)
            for notice in write.notices:
                try:
                    self.notify(notice.user_id, notice.message, notice.key)
                except CrmError as error:
                    errors.append(error)
                else:
                    errors.append(None)
            outcomes.append(WriteOutcome(tuple(errors), echo))
        return outcomes

    def create_task(self, task: NewTask) -> str:
        """Create a task linked to a deal; returns its id."""
        self._maybe_fail("create_task")
        self._deal(task.deal_id)
        created = Task(
            id=self._new_id(),
            title=task.title,
            responsible_id=task.responsible_id,
            deal_id=task.deal_id,
            deadline=task.deadline,
            is_open=True,
            created_by=task.created_by or self.app_user_id,
            auditor_ids=task.auditor_ids,
        )
        self.tasks[created.id] = created
        self.task_descriptions[created.id] = task.description
        self.writes.append(Write("create_task", task.deal_id, task))
        return created.id

    def create_tasks(self, tasks: Sequence[NewTask]) -> list[str | Exception]:
        """Many tasks; one request per 50 (counted in `batch_tasks`); a failed task fails alone."""
        self.batch_tasks += -(-len(tasks) // 50)
        outcomes: list[str | Exception] = []
        for task in tasks:
            try:
                outcomes.append(self.create_task(task))
            except CrmError as error:
                outcomes.append(error)
        return outcomes

    def complete_tasks(self, completions: Sequence[TaskCompletion]) -> list[Exception | None]:
        """Many completions; one request per 50 (counted in `batch_tasks`); a failed one fails alone."""
        self.batch_tasks += -(-len(completions) // 50)
        outcomes: list[Exception | None] = []
        for completion in completions:
            method = "complete_todo" if completion.kind == "todo" else "complete_task"
            try:
                self._complete(method, completion.task_id, completion.result)
            except CrmError as error:
                outcomes.append(error)
            else:
                outcomes.append(None)
        return outcomes

    def list_deal_tasks(self, deal_id: str) -> list[Task]:
        """Tasks linked to a deal."""
        self._read("list_deal_tasks")
        return [
            self._with_overdue(t)
            for t in sorted(self.tasks.values(), key=lambda t: _by_id(t.id))
            if t.deal_id == str(deal_id) and t.kind == "task"
        ]

    def list_deal_calls(self, deal_id: str) -> list[Call]:
        """Calls linked to a deal, with recordings."""
        self._read("list_deal_calls")
        return list(self.calls.get(str(deal_id), []))

    def count_open_deals(self, responsible_id: str, pipeline_id: str) -> int:
        """How many open deals of one pipeline a user is responsible for (one call, no rows)."""
        self._read("count_open_deals")
        return sum(
            1
            for deal in self.deals.values()
            if deal.responsible_id == responsible_id
            and deal.pipeline_id == pipeline_id
            and deal.stage_semantics == "process"
        )

    def create_todo(self, todo: NewTodo) -> str:
        """Create a to-do on the deal for a user; returns its id."""
        self._maybe_fail("create_todo")
        self._deal(todo.deal_id)
        created = Task(
            id=self._new_id(),
            title=todo.title,
            responsible_id=todo.responsible_id,
            deal_id=todo.deal_id,
            deadline=todo.deadline,
            is_open=True,
            created_by=self.app_user_id,
            kind="todo",
        )
        self.tasks[created.id] = created
        self.task_descriptions[created.id] = todo.description
        self.writes.append(Write("create_todo", todo.deal_id, todo))
        return created.id

    def complete_task(self, task_id: str, result: str = "") -> None:
        """Mark a task completed; an already completed or missing one is not an error."""
        self._complete("complete_task", task_id, result)

    def complete_todo(self, todo_id: str, result: str = "") -> None:
        """Mark a to-do completed; an already completed or missing one is not an error."""
        self._complete("complete_todo", todo_id, result)

    def _complete(self, method: str, task_id: str, result: str) -> None:
        self._maybe_fail(method)
        task = self.tasks.get(str(task_id))
        self.writes.append(Write(method, str(task_id), result))
        if task is None or not task.is_open:
            return
        self.tasks[task.id] = replace(task, is_open=False)
        if result:
            self.task_results[task.id] = result

    def open_recording(self, call: Call) -> Recording:
        """Stream a call's recording from the CRM (server-side: no CRM token ever reaches a browser)."""
        self._read("open_recording")
        stored = self.recordings.get(call.id)
        if stored is None:
            raise FakeNotFound(f"call {call.id} has no recording", http_status=404)
        content_type, body = stored

        def close() -> None:
            self.recordings_closed += 1

        return Recording(content_type=content_type, chunks=iter([body]), close=close, length=len(body))

    def open_deal_tasks(self, deal_id: str) -> list[Task]:
        """The deal's open tasks and open to-dos (its next steps), in as few calls as possible."""
        self._read("open_deal_tasks")
        ordered = sorted(self.tasks.values(), key=lambda t: _by_id(t.id))
        mine = [self._with_overdue(t) for t in ordered if t.deal_id == str(deal_id) and t.is_open]
        return [t for t in mine if t.kind == "task"] + [t for t in mine if t.kind == "todo"]

    def iter_open_work(self) -> Iterator[Task | Deal]:
        """Stream every open task and to-do bound to a deal, then every open deal.

        Every Task comes before the first Deal, so a caller can mark deals with a next step first.
        """
        self._read("iter_open_work")
        for task in sorted(self.tasks.values(), key=lambda t: _by_id(t.id)):
            if task.is_open and task.deal_id is not None:
                yield self._with_overdue(task)
        for deal_id in sorted(self.deals, key=_by_id):
            if self.deals[deal_id].stage_semantics == "process":
                yield self.deals[deal_id]

    def notify_many(self, notices: Sequence[Notice]) -> None:
        """Send several notifications in as few calls as possible."""
        self._maybe_fail("notify_many")
        for notice in notices:
            self.writes.append(Write("notify", notice.user_id, notice))
            self._deliver(notice)

    def list_reason_options(self) -> list[FieldOption]:
        """The refusal-reason field's items."""
        self._read("list_reason_options")
        return sorted(self.reason_options, key=lambda option: (option.sort, _by_id(option.id)))

    def save_reason_options(self, options: Sequence[FieldOption]) -> list[FieldOption]:
        """Edit named items, add the ones without an id, keep the rest."""
        self._maybe_fail("save_reason_options")
        self.writes.append(Write("save_reason_options", "refusal_reason", list(options)))
        by_id = {option.id: option for option in self.reason_options}
        for option in options:
            if option.id and option.id in by_id:
                by_id[option.id] = replace(by_id[option.id], name=option.name, sort=option.sort)
            elif not option.id:
                made = FieldOption(id=self._new_id(), name=option.name, sort=option.sort, code=option.code)
                by_id[made.id] = made
        self.reason_options = list(by_id.values())
        return self.list_reason_options()

    def client_history(self, deal_id: str) -> ClientHistory:
        """The deal's contacts and company, the clients sharing a phone or e-mail with them, their open deals."""
        self._read("client_history")
        own_keys = list(self.deal_clients.get(deal_id, []))
        details = {item for key in own_keys for item in self.client_details.get(key, ())}
        duplicate_keys = [
            key for key, items in self.client_details.items() if key not in own_keys and details & set(items)
        ]
        keys = {*own_keys, *duplicate_keys}
        open_deals = tuple(
            deal
            for other_id, linked in sorted(self.deal_clients.items())
            if other_id != deal_id and keys & set(linked)
            for deal in [self.deals.get(other_id)]
            if deal is not None and deal.stage_semantics == "process"
        )
        return ClientHistory(
            own=tuple(self.clients[key] for key in own_keys),
            duplicates=tuple(self.clients[key] for key in duplicate_keys),
            open_deals=open_deals,
        )

    def time_zone(self) -> CrmTimeZone:
        """The zone the CRM reports (`zone`, set by a test)."""
        self._read("time_zone")
        return self.zone


_: CrmClient = InMemoryCrm()  # mypy: the fake is a CrmClient
