"""One way to drive either CRM in scenario tests: the steps people take and what they observe, in domain words.

`CrmDriver` is the contract; `B24Driver` and `AmoDriver` wrap the existing harnesses (tests/integration/b24.py
and amo.py) around the in-process sandboxes. Scenario tests in this folder are written once against the
contract and run for both CRMs through the `crm` fixture.

Vocabulary shared by both CRMs:

* pipelines: "main" (the default pipeline) and "other" (a second one); `new_pipeline` is an admin creating
  one more in the CRM (with "new", "working", "late working", won and lost, as the CRM makes them), named in
  the steps by the id it returns;
* stages: "new", "working", "late working" (open stages in that order), "won", "lost", and "refusal"
  (the Conditional refusal stage our installer adds); anything else is passed through as a CRM stage id;
* people (the same ids in both seeded sandboxes): ADMIN, MANAGER, OTHER_MANAGER, QA, QA2, HEAD,
  INACTIVE_QA, COMMERCIAL; `sales_managers` lists who may get a deal back from QA;
* departments (Bitrix24 departments, amoCRM user groups): "sales" (MANAGER and OTHER_MANAGER are in it) and
  "commercial" (COMMERCIAL is in it); `department_heads` says whether a department has a head (Bitrix24
  yes: COMMERCIAL heads "commercial"; amoCRM groups have none);
* deals are identified by their CRM id as a string;
* `by=None` in a step means a robot or other automation did it (no human author).

Task control (test_taskcontrol.py) uses `create_task` (a deadline in the past makes an overdue task),
`complete_task`, `deal_tasks` and our two task robots as the CRM's automation runs them (`check_tasks_robot`,
`callback_robot`). `task_auditors` says whether the CRM's tasks have auditors (Bitrix24 yes, amoCRM no).

Duty-rota routing (test_duty_rota.py) uses `set_clock` (the CRM's clock stands at a moment: deals created
from then on carry it as their creation time) and `new_deal` with an `amount`.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, ClassVar, Protocol
from zoneinfo import ZoneInfo

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from app.core.models import Portal
from app.core.security import Identity, issue_token
from app.crm.amocrm.adapter import NOTICE_MARK as AMO_NOTICE_MARK
from app.domain import postpone
from app.domain.guard import refusal_stage_for
from handlers.amo_verify import issue_ticket
from installers.amo_widget import render_manifest
from installers.amocrm import FIELDS as AMO_FIELDS
from installers.bitrix24 import FIELDS as B24_FIELDS
from sandbox import ManualClock
from sandbox.amocrm import api as amo_api
from sandbox.amocrm.account import LOST as AMO_LOST
from sandbox.amocrm.account import WON as AMO_WON
from tests.integration.amo import APP_URL, Amo
from tests.integration.amo import fill_refusal as amo_fill_refusal
from tests.integration.amo_review_helpers import open_lead_tab
from tests.integration.b24 import B24
from tests.integration.b24 import fill_refusal as b24_fill_refusal
from tests.integration.review_helpers import open_tab, page_config

DP_URL = json.loads(render_manifest(APP_URL))["dp"]["webhook_url"]  # where amoCRM POSTs our widget's DP actions
ADMIN, MANAGER, OTHER_MANAGER, QA, QA2, HEAD, INACTIVE_QA, COMMERCIAL = 1, 2, 3, 7, 8, 9, 10, 11
POOL = 12  # «Биржа лидов», the CRM user that holds the exchange's deals (added by `add_pool_user`)
OPEN_STAGES = ("new", "working", "late working")
QA_TASK_TITLE = "Проверить отказ"  # what our QA review task is called (Russian portals)
CALLBACK_TITLE = "Перезвонить клиенту"  # what our callback to-do is called
_CHECK_TASKS = re.compile(r"открытая задача: (есть|нет), просроченных задач: (\d+)")


@dataclass(frozen=True)
class CrmTask:
    """A task or to-do on a deal as the people in the CRM see it."""

    id: str
    title: str
    responsible: int
    deal_id: str | None
    is_open: bool
    deadline: datetime | None = None


@dataclass(frozen=True)
class Delivery:
    """One webhook/event POST waiting in the CRM's outbox."""

    url: str
    body: str


class CrmDriver(Protocol):
    """What a scenario test may do with a CRM and what it may observe there."""

    name: str
    app: Flask
    client: FlaskClient
    sales_managers: tuple[int, ...]
    recording_magic: bytes
    task_auditors: bool  # a task can have auditors («Наблюдатели») who hear about it being overdue
    department_heads: bool  # a department has a head (Bitrix24 UF_HEAD); amoCRM user groups have none
    amount_field: str  # the code of the deal's amount (Bitrix24 OPPORTUNITY, amoCRM price)
    amount_label: str  # and its label as the CRM lists it (Russian portals)

    # -- the app and the portal
    def install(self) -> Portal: ...
    def portal(self) -> Portal: ...
    def settle(self) -> None: ...
    def deliver(self) -> None: ...
    def work(self) -> None: ...
    def token(self, user_id: int, admin: bool = False) -> dict[str, str]: ...
    def add_pool_user(self) -> int: ...
    def user_name(self, user_id: int) -> str: ...
    def department_id(self, name: str) -> str: ...
    def set_clock(self, moment: datetime) -> None: ...
    def set_time_zone(self, zone: str) -> None: ...
    def wait(self, seconds: float) -> None: ...

    # -- pipelines, stages, deals
    def pipeline_id(self, name: str = "main") -> str: ...
    def new_pipeline(self, name: str = "Тендеры 2025") -> str: ...
    def stage_names(self, pipeline: str) -> list[str]: ...
    def stage_id(self, name: str, pipeline: str = "main") -> str: ...
    def new_deal(
        self,
        manager: int = MANAGER,
        stage: str = "working",
        pipeline: str = "main",
        title: str = "Поставка станков",
        source: str = "WEB",
        amount: int = 150000,
        clients: Sequence[str] = (),
    ) -> str: ...
    def add_client(
        self, kind: str, responsible: int, phone: str = "", email: str = "", name: str = "", days_ago: int = 30
    ) -> str: ...
    def move(self, deal_id: str, stage: str, by: int | None, pipeline: str | None = None) -> None: ...
    def reassign(self, deal_id: str, to: int, by: int) -> None: ...
    def delete(self, deal_id: str, by: int | None) -> None: ...
    def fill_refusal(self, deal_id: str, by: int, reason: str | None = "price", comment: str = "") -> None: ...
    def fill_postpone(self, deal_id: str, by: int, reason: str | None, day: date | None) -> None: ...
    def add_deal_field(self, label: str) -> str: ...
    def fill_field(self, deal_id: str, code: str, value: str, by: int) -> None: ...
    def qualify(self, deal_id: str, by: int | None, **answers: str | None) -> None: ...
    def drop_our_fields(self, *keys: str) -> None: ...
    def our_field_exists(self, key: str) -> bool: ...
    def set_amount(self, deal_id: str, amount: int, by: int) -> None: ...
    def stage_of(self, deal_id: str) -> str: ...
    def pipeline_of(self, deal_id: str) -> str: ...
    def responsible(self, deal_id: str) -> int: ...
    def deal_field(self, deal_id: str, name: str) -> Any: ...
    def deal_url(self, deal_id: str) -> str: ...
    def make_call(self, deal_id: str, by: int, duration: int = 42) -> None: ...

    # -- the refusal-reason field (an admin edits it in the CRM)
    def add_reason_item(self, name: str) -> str: ...
    def reason_items(self) -> list[str]: ...
    def pick_reason_item(self, deal_id: str, by: int, name: str, comment: str) -> None: ...

    # -- what people get
    def notices(self, user_id: int) -> list[str]: ...
    def notice_deals(self, user_id: int) -> list[str | None]: ...
    def notices_on(self, deal_id: str) -> list[str]: ...
    def deal_tasks(self, deal_id: str) -> list[CrmTask]: ...
    def callback_todos(self, deal_id: str) -> list[CrmTask]: ...
    def open_review_page(self, user_id: int, deal_id: str) -> TestResponse: ...
    def open_app(self, user_id: int) -> TestResponse: ...

    # -- tasks (task control)
    def create_task(
        self,
        deal_id: str,
        responsible: int,
        deadline: datetime,
        title: str = "Перезвонить",
        by: int = HEAD,
        auditors: tuple[int, ...] = (),
    ) -> str: ...
    def complete_task(self, task_id: str, by: int) -> None: ...
    def check_tasks_robot(self, deal_id: str) -> tuple[bool, int]: ...
    def callback_robot(self, deal_id: str, days: str, hour: str = "", text: str = "") -> str: ...

    # -- the wire: deliveries and the app's calls
    def pending_deliveries(self) -> list[Delivery]: ...
    def post_delivery(self, delivery: Delivery) -> TestResponse: ...
    def drop_next_delivery(self) -> None: ...
    def deal_writes(self, deal_id: str) -> int: ...
    def deal_reads(self, deal_id: str) -> int: ...
    def http_requests(self) -> int: ...


def qa_tasks(crm: CrmDriver, deal_id: str) -> list[CrmTask]:
    """Our QA review tasks on a deal."""
    return [task for task in crm.deal_tasks(deal_id) if task.title.startswith(QA_TASK_TITLE)]


def post_form(client: FlaskClient, url: str, body: str) -> TestResponse:
    """POST a form-encoded body to an absolute URL of the app, as a CRM's webhook sender does."""
    parts = urllib.parse.urlsplit(url)
    return client.post(
        parts.path, query_string=parts.query, data=body, content_type="application/x-www-form-urlencoded"
    )


def _moment(value: Any) -> datetime | None:
    """A sandbox time (Unix seconds or a datetime) as an aware datetime."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromtimestamp(float(value), UTC)


class _Common(ABC):
    """What both drivers do the same way (through our database and tokens)."""

    app: Flask
    harness: B24 | Amo

    @abstractmethod
    def stage_id(self, name: str, pipeline: str = "main") -> str: ...

    @abstractmethod
    def pipeline_of(self, deal_id: str) -> str: ...

    @abstractmethod
    def _crm_stage(self, deal_id: str) -> str:
        """The deal's stage id as the CRM stores it."""

    def portal(self) -> Portal:
        return self.harness.our_portal()

    def settle(self) -> None:
        self.harness.settle()

    def deliver(self) -> None:
        """The CRM sends what waits in its outbox (once, without our jobs running)."""
        self.harness.deliver()

    def work(self) -> None:
        self.harness.work()

    def wait(self, seconds: float) -> None:
        """Time passes in the CRM (its clock must stand still: `set_clock` first)."""
        self.harness.sandbox.clock.advance(seconds)

    def token(self, user_id: int, admin: bool = False) -> dict[str, str]:
        return {"X-RC-Token": issue_token(Identity(self.portal().id, str(user_id), is_admin=admin))}

    def stage_of(self, deal_id: str) -> str:
        """The deal's stage by its shared name ("working", "lost", "refusal", …), else the CRM's own id."""
        stage = self._crm_stage(deal_id)
        pipeline = self.pipeline_of(deal_id)
        for name in (*OPEN_STAGES, "won", "lost", "refusal"):
            if self.stage_id(name, pipeline) == stage:
                return name
        if stage == postpone.known_stage(self.portal(), self.pipeline_id(pipeline)):
            return "postponed"
        return stage

    def _postponed_stage(self, pipeline: str) -> str:
        stage = postpone.known_stage(self.portal(), self.pipeline_id(pipeline))
        assert stage, f"no «Отложено» stage in pipeline {pipeline}"
        return stage


# ---------------------------------------------------------------------------------------------- Bitrix24


class B24Driver(_Common):
    """A Bitrix24 portal in the sandbox."""

    name = "bitrix24"
    sales_managers = (2, 3, 4, 5, 6)
    recording_magic = b"RIFF"
    task_auditors = True
    department_heads = True
    amount_field = "OPPORTUNITY"
    amount_label = "Сумма"
    _CODES: ClassVar[dict[str, str]] = {
        "new": "NEW",
        "working": "PREPARATION",
        "late working": "EXECUTING",
        "won": "WON",
        "lost": "LOSE",
    }
    _PIPELINES: ClassVar[dict[str, str]] = {"main": "0", "other": "1"}
    _DEPARTMENTS: ClassVar[dict[str, str]] = {"sales": "2", "commercial": "4"}  # seeded; COMMERCIAL heads "4"

    def __init__(self, harness: B24) -> None:
        self.harness = harness
        self.app = harness.app
        self.client = harness.client
        self.sandbox = harness.sandbox
        self.crm_portal = harness.portal

    def install(self) -> Portal:
        return self.harness.install()

    def add_pool_user(self) -> int:
        template = dict(self.crm_portal.users[MANAGER])
        template.update(ID=POOL, NAME="Биржа", LAST_NAME="лидов", UF_DEPARTMENT=[1], EMAIL="pool@example.test")
        self.crm_portal.users[POOL] = template
        return POOL

    def user_name(self, user_id: int) -> str:
        user = self.crm_portal.users[user_id]
        return f"{user['NAME']} {user['LAST_NAME']}"

    def department_id(self, name: str) -> str:
        return self._DEPARTMENTS[name]

    def set_clock(self, moment: datetime) -> None:
        """The portal's clock stands at `moment` (its rate limit is off: the token bucket refills by this clock)."""
        self.sandbox.clock = ManualClock(moment.timestamp())
        self.sandbox.set_rate_limit(self.crm_portal, enabled=False)

    def set_time_zone(self, zone: str) -> None:
        """The portal lives in `zone` (its settings) and its admin names it as his own (``profile``)."""
        self.crm_portal.time_zone = zone
        self.crm_portal.users[ADMIN]["TIME_ZONE"] = zone

    def pipeline_id(self, name: str = "main") -> str:
        return self._PIPELINES.get(name, name)

    def new_pipeline(self, name: str = "Тендеры 2025") -> str:
        """The admin adds a funnel with crm.category.add; Bitrix24 gives it its default stages."""
        status, body = self.sandbox.call(
            self.crm_portal, "crm.category.add", {"entityTypeId": 2, "fields": {"name": name, "sort": 900}}, ADMIN
        )
        assert status == 200, body
        return str(body["result"]["category"]["id"])

    def stage_names(self, pipeline: str) -> list[str]:
        with self.sandbox.lock:
            return [str(row["NAME"]) for row in self.crm_portal.stages(int(self.pipeline_id(pipeline)))]

    def stage_id(self, name: str, pipeline: str = "main") -> str:
        category = self.pipeline_id(pipeline)
        if name == "refusal":
            stage = refusal_stage_for(self.portal(), category)
            assert stage, f"no Conditional refusal stage in pipeline {category}"
            return stage
        if name == "postponed":
            return self._postponed_stage(pipeline)
        code = self._CODES.get(name, name)
        return code if category == "0" else f"C{category}:{code}"

    def new_deal(
        self,
        manager: int = MANAGER,
        stage: str = "working",
        pipeline: str = "main",
        title: str = "Поставка станков",
        source: str = "WEB",
        amount: int = 150000,
        clients: Sequence[str] = (),
    ) -> str:
        linked: dict[str, Any] = {}
        for handle in clients:  # the deal's contact and company, bound as the deal card's client fields bind them
            kind, _, client_id = handle.partition(":")
            linked["COMPANY_ID" if kind == "company" else "CONTACT_ID"] = int(client_id)
        deal_id = self.sandbox.act(self.crm_portal, manager).create_deal(
            TITLE=title,
            CATEGORY_ID=self.pipeline_id(pipeline),
            STAGE_ID=self.stage_id(stage, pipeline),
            ASSIGNED_BY_ID=manager,
            OPPORTUNITY=f"{amount}.00",
            SOURCE_ID=source,
            **linked,
        )
        self.settle()
        return str(deal_id)

    def add_client(
        self, kind: str, responsible: int, phone: str = "", email: str = "", name: str = "", days_ago: int = 30
    ) -> str:
        """A contact or company the portal has known for `days_ago` days (a handle like "contact:5")."""
        with self.sandbox.lock:
            table = self.crm_portal.companies if kind == "company" else self.crm_portal.contacts
            client_id = self.crm_portal.next_id(kind)
            while client_id in table:
                client_id = self.crm_portal.next_id(kind)
            row: dict[str, Any] = {
                "ID": client_id,
                "ASSIGNED_BY_ID": responsible,
                "DATE_CREATE": self.sandbox.clock.now() - days_ago * 86400,
                "PHONE": [phone] if phone else [],
                "EMAIL": [email] if email else [],
            }
            row["TITLE" if kind == "company" else "NAME"] = name or f"Клиент {client_id}"
            table[client_id] = row
        return f"{'company' if kind == 'company' else 'contact'}:{client_id}"

    def _actor(self, by: int | None) -> Any:
        if by is None:
            return self.sandbox.act_as_automation(self.crm_portal)
        return self.sandbox.act(self.crm_portal, by)

    def move(self, deal_id: str, stage: str, by: int | None, pipeline: str | None = None) -> None:
        pipeline = pipeline or self.pipeline_of(deal_id)
        self._actor(by).move_deal(int(deal_id), self.stage_id(stage, pipeline))

    def reassign(self, deal_id: str, to: int, by: int) -> None:
        self._actor(by).update_deal(int(deal_id), {"ASSIGNED_BY_ID": to})

    def delete(self, deal_id: str, by: int | None) -> None:
        """Delete the deal in the CRM (ONCRMDEALDELETE)."""
        self._actor(by).delete_deal(int(deal_id))

    def fill_refusal(self, deal_id: str, by: int, reason: str | None = "price", comment: str = "") -> None:
        b24_fill_refusal(self.harness, int(deal_id), by, reason, comment)

    def fill_postpone(self, deal_id: str, by: int, reason: str | None, day: date | None) -> None:
        """The manager picks the postpone reason and the return date in the deal card (the date as REST gives it)."""
        fields = self.portal().settings["b24_fields"]
        item = fields["postpone_reason"]["enum"][reason] if reason else ""
        stamp = datetime.combine(day, time(), ZoneInfo(self.portal().timezone)).isoformat() if day else ""
        self._actor(by).update_deal(
            int(deal_id), {fields["postpone_reason"]["field"]: item, fields["postpone_date"]["field"]: stamp}
        )

    def add_deal_field(self, label: str) -> str:
        """The admin adds a text user field to deals (crm.deal.userfield.add); its code is UF_CRM_…."""
        name = "RC_TEST_" + str(len(self.crm_portal.userfields) + 1)
        fields = {"FIELD_NAME": name, "USER_TYPE_ID": "string", "EDIT_FORM_LABEL": label, "LIST_COLUMN_LABEL": label}
        status, body = self.sandbox.call(self.crm_portal, "crm.deal.userfield.add", {"fields": fields}, ADMIN)
        assert status == 200, body
        return f"UF_CRM_{name}"

    def fill_field(self, deal_id: str, code: str, value: str, by: int) -> None:
        self._actor(by).update_deal(int(deal_id), {code: value})

    def set_amount(self, deal_id: str, amount: int, by: int) -> None:
        self._actor(by).update_deal(int(deal_id), {"OPPORTUNITY": f"{amount}.00"})

    def qualify(self, deal_id: str, by: int | None, **answers: str | None) -> None:
        """The manager picks the ABC answers in the deal card: need=, budget=, urgency= "yes"/"no" (None clears),
        class_= a class ("A", "B", "C") typed into the class field by hand."""
        fields = self.portal().settings["b24_fields"]
        values: dict[str, Any] = {}
        for name, answer in answers.items():
            spec = fields[f"abc_{name.rstrip('_')}"]
            values[spec["field"]] = spec["enum"][answer] if answer else ""
        self._actor(by).update_deal(int(deal_id), values)

    def drop_our_fields(self, *keys: str) -> None:
        """An admin deletes our deal fields (installers.bitrix24.FIELDS keys) in the portal's settings."""
        names = {f"UF_CRM_{B24_FIELDS[key]['name']}" for key in keys}
        with self.sandbox.lock:
            for field_id in [i for i, uf in self.crm_portal.userfields.items() if uf.field_name in names]:
                del self.crm_portal.userfields[field_id]

    def our_field_exists(self, key: str) -> bool:
        name = f"UF_CRM_{B24_FIELDS[key]['name']}"
        return any(uf.field_name == name for uf in self.crm_portal.userfields.values())

    def _deal(self, deal_id: str) -> dict[str, Any]:
        return self.sandbox.deal(self.crm_portal, int(deal_id))

    def pipeline_of(self, deal_id: str) -> str:
        category = str(self._deal(deal_id)["CATEGORY_ID"])
        return next((name for name, cid in self._PIPELINES.items() if cid == category), category)

    def _crm_stage(self, deal_id: str) -> str:
        return str(self._deal(deal_id)["STAGE_ID"])

    def responsible(self, deal_id: str) -> int:
        return int(self._deal(deal_id)["ASSIGNED_BY_ID"])

    def deal_field(self, deal_id: str, name: str) -> Any:
        spec = self.portal().settings["b24_fields"][name]
        raw = self._deal(deal_id).get(spec["field"])
        enum = {str(item): code for code, item in (spec.get("enum") or {}).items()}
        return enum.get(str(raw), raw) if enum else raw

    def deal_url(self, deal_id: str) -> str:
        return f"https://{self.crm_portal.domain}/crm/deal/details/{deal_id}/"

    def make_call(self, deal_id: str, by: int, duration: int = 42) -> None:
        self.sandbox.act(self.crm_portal, by).make_call(int(deal_id), duration=duration)

    def _reason_field(self) -> dict[str, Any]:
        name = self.portal().settings["b24_fields"]["refusal_reason"]["field"]
        status, body = self.sandbox.call(
            self.crm_portal, "crm.deal.userfield.list", {"filter": {"FIELD_NAME": name}}, ADMIN
        )
        assert status == 200, body
        return dict(body["result"][0])

    def add_reason_item(self, name: str) -> str:
        """The admin adds an item to the reason field in the CRM (crm.deal.userfield.update, LIST)."""
        field = self._reason_field()
        status, body = self.sandbox.call(
            self.crm_portal,
            "crm.deal.userfield.update",
            {"id": field["ID"], "fields": {"LIST": [{"VALUE": name, "SORT": 900}]}},
            ADMIN,
        )
        assert status == 200, body
        return next(str(item["ID"]) for item in self._reason_field()["LIST"] if item["VALUE"] == name)

    def reason_items(self) -> list[str]:
        """The reason field's items as the CRM lists them."""
        return [str(item["VALUE"]) for item in self._reason_field()["LIST"]]

    def pick_reason_item(self, deal_id: str, by: int, name: str, comment: str) -> None:
        """The manager picks the item named `name` in the deal card and writes a comment."""
        fields = self.portal().settings["b24_fields"]
        item = next(str(i["ID"]) for i in self._reason_field()["LIST"] if i["VALUE"] == name)
        self.sandbox.act(self.crm_portal, by).update_deal(
            int(deal_id), {fields["refusal_reason"]["field"]: item, fields["refusal_comment"]["field"]: comment}
        )

    def notices(self, user_id: int) -> list[str]:
        return [
            n.message.replace("\xa0", " ").replace("\u202f", " ")
            for n in self.sandbox.notifications(self.crm_portal, user_id)
        ]

    def notice_deals(self, user_id: int) -> list[str | None]:
        """The deal each of the user's notices opens (the deal card it links), None for one about no deal."""
        return [
            match.group(1) if (match := re.search(r"/crm/deal/details/(\d+)/", n.message)) else None
            for n in self.sandbox.notifications(self.crm_portal, user_id)
        ]

    def notices_on(self, deal_id: str) -> list[str]:
        """Bitrix24 keeps no notice on the deal itself: the notices that link the deal's card."""
        return [
            n.message.replace("\xa0", " ").replace("\u202f", " ")
            for n in self.sandbox.notifications(self.crm_portal)
            if f"/crm/deal/details/{deal_id}/" in n.message
        ]

    def deal_tasks(self, deal_id: str) -> list[CrmTask]:
        with self.sandbox.lock:
            rows = [dict(t) for t in self.crm_portal.tasks.values() if f"D_{deal_id}" in (t.get("UF_CRM_TASK") or [])]
        return [
            CrmTask(
                id=str(row["ID"]),
                title=str(row["TITLE"]),
                responsible=int(row["RESPONSIBLE_ID"]),
                deal_id=deal_id,
                is_open=int(row["STATUS"]) != 5,
                deadline=_moment(row["DEADLINE"]),
            )
            for row in sorted(rows, key=lambda r: int(r["ID"]))
        ]

    def callback_todos(self, deal_id: str) -> list[CrmTask]:
        with self.sandbox.lock:
            rows = [
                dict(a)
                for a in self.crm_portal.activities.values()
                if a["PROVIDER_ID"] == "CRM_TODO" and str(a["OWNER_ID"]) == deal_id and a["OWNER_TYPE_ID"] == 2
            ]
        return [
            CrmTask(
                id=str(row["ID"]),
                title=str(row["SUBJECT"]),
                responsible=int(row["RESPONSIBLE_ID"]),
                deal_id=deal_id,
                is_open=str(row.get("COMPLETED", "N")) != "Y",
                deadline=_moment(row.get("DEADLINE")),
            )
            for row in rows
        ]

    def open_review_page(self, user_id: int, deal_id: str) -> TestResponse:
        return open_tab(self.harness, user_id, deal_id)

    def open_app(self, user_id: int) -> TestResponse:
        """The app's main page as Bitrix24 opens it (a signed frame POST; the portal says whether he is an admin)."""
        return self.client.post(f"/b24/app?DOMAIN={self.crm_portal.domain}&LANG=ru", data=self.harness.frame(user_id))

    def create_task(
        self,
        deal_id: str,
        responsible: int,
        deadline: datetime,
        title: str = "Перезвонить",
        by: int = HEAD,
        auditors: tuple[int, ...] = (),
    ) -> str:
        task_id = self.sandbox.act(self.crm_portal, by).create_task(
            TITLE=title,
            RESPONSIBLE_ID=responsible,
            UF_CRM_TASK=[f"D_{deal_id}"],
            DEADLINE=deadline.timestamp(),
            AUDITORS=list(auditors),
        )
        return str(task_id)

    def complete_task(self, task_id: str, by: int) -> None:
        self.sandbox.act(self.crm_portal, by).complete_task(int(task_id))

    def _run_robot(self, code: str, deal_id: str, properties: dict[str, str]) -> dict[str, Any]:
        """The deal's automation reaches our robot; what the app sent back with bizproc.event.send."""
        token = self.sandbox.run_robot(self.crm_portal, code, int(deal_id), properties)
        self.settle()
        result = self.sandbox.robot_result(self.crm_portal, token)
        assert result is not None, f"robot {code} sent nothing back"
        return result

    def check_tasks_robot(self, deal_id: str) -> tuple[bool, int]:
        """The robot «Проверить задачи» on the deal: (has an open task, overdue tasks) as the workflow gets them."""
        result = self._run_robot("rc_check_tasks", deal_id, {})
        return result["has_open_task"] == "Y", int(result["overdue_count"])

    def callback_robot(self, deal_id: str, days: str, hour: str = "", text: str = "") -> str:
        """The robot «Перезвонить через N дней» on the deal: the error it returns ("" when the task was set)."""
        properties = {name: value for name, value in (("days", days), ("hour", hour), ("text", text)) if value}
        return str(self._run_robot("rc_callback", deal_id, properties)["error"])

    def pending_deliveries(self) -> list[Delivery]:
        return [Delivery(event.url, event.body) for event in self.sandbox.pending_events()]

    def post_delivery(self, delivery: Delivery) -> TestResponse:
        return post_form(self.client, delivery.url, delivery.body)

    def drop_next_delivery(self) -> None:
        self.sandbox.drop_next(1)

    def _calls(self, method: str, deal_id: str) -> int:
        return sum(
            1
            for call in self.sandbox.calls(self.crm_portal, method)
            if str(call.params.get("id")) == deal_id and call.status == 200
        )

    def deal_writes(self, deal_id: str) -> int:
        return self._calls("crm.deal.update", deal_id)

    def deal_reads(self, deal_id: str) -> int:
        return self._calls("crm.deal.get", deal_id)

    def http_requests(self) -> int:
        """HTTP requests the portal served (a batch is one), as its rate limit counts them."""
        return self.sandbox.rest_calls(self.crm_portal)


# ---------------------------------------------------------------------------------------------- amoCRM


class AmoDriver(_Common):
    """An amoCRM account in the sandbox (deals are leads, stages are statuses)."""

    name = "amocrm"
    sales_managers = (2, 3)
    recording_magic = b"ID3"
    task_auditors = False
    department_heads = False
    amount_field = "price"
    amount_label = "Бюджет"
    _GROUPS: ClassVar[dict[str, str]] = {"sales": "Отдел продаж", "commercial": "Коммерческий отдел"}

    def __init__(self, harness: Amo) -> None:
        self.harness = harness
        self.app = harness.app
        self.client = harness.client
        self.sandbox = harness.sandbox
        self.account = harness.account
        self._dp_time = 0  # the event time of the last Digital Pipeline action we fired

    def install(self) -> Portal:
        return self.harness.install()

    def add_pool_user(self) -> int:
        template = self.account.users[MANAGER]
        self.account.users[POOL] = {
            **template,
            "id": POOL,
            "name": "Биржа лидов",
            "email": f"pool@{self.account.subdomain}.example",
            "rights": {**template["rights"]},
        }
        return POOL

    def user_name(self, user_id: int) -> str:
        return str(self.account.users[user_id]["name"])

    def department_id(self, name: str) -> str:
        """The id of the seeded user group with that name."""
        wanted = self._GROUPS[name]
        return str(next(gid for gid, group in self.account.groups.items() if group == wanted))

    def set_clock(self, moment: datetime) -> None:
        """The account's clock stands at `moment` (its 7 req/s limit is off: it counts requests by this clock)."""
        self.sandbox.clock = ManualClock(moment.timestamp())
        self.account.rate_limit = None

    def set_time_zone(self, zone: str) -> None:
        """The account's time zone (its settings, ``datetime_settings.timezone``)."""
        self.account.timezone = zone

    def _pipelines(self) -> list[int]:
        return sorted(self.account.pipelines, key=lambda pid: self.account.pipelines[pid]["sort"])

    def pipeline_id(self, name: str = "main") -> str:
        named = dict(zip(("main", "other"), self._pipelines(), strict=False))
        return str(named[name]) if name in named else name

    def new_pipeline(self, name: str = "Тендеры 2025") -> str:
        """The admin adds a pipeline with POST /api/v4/leads/pipelines and three working statuses."""
        tokens = self.sandbox.issue_tokens(self.account, ADMIN)
        working = [{"name": title, "sort": 20 + 10 * n} for n, title in enumerate(("Заявка", "Расчёт", "Тендер"))]
        status, body = amo_api.handle(
            self.sandbox,
            self.account.domain,
            f"Bearer {tokens['access_token']}",
            "POST",
            "/api/v4/leads/pipelines",
            {},
            [{"name": name, "sort": 900, "is_main": False, "is_unsorted_on": True, "_embedded": {"statuses": working}}],
        )
        assert status == 200, body
        return str(body["_embedded"]["pipelines"][0]["id"])

    def stage_names(self, pipeline: str) -> list[str]:
        statuses = self.account.pipelines[int(self.pipeline_id(pipeline))]["statuses"].values()
        return [str(s["name"]) for s in sorted(statuses, key=lambda s: s["sort"])]

    def stage_id(self, name: str, pipeline: str = "main") -> str:
        pipeline_id = self.pipeline_id(pipeline)
        if name == "won":
            return str(AMO_WON)
        if name == "lost":
            return str(AMO_LOST)
        if name == "refusal":
            stage = refusal_stage_for(self.portal(), pipeline_id)
            assert stage, f"no Conditional refusal status in pipeline {pipeline_id}"
            return stage
        if name == "postponed":
            return self._postponed_stage(pipeline)
        if name in OPEN_STAGES:
            statuses = self.account.pipelines[int(pipeline_id)]["statuses"].values()
            working = sorted(
                (s for s in statuses if s["type"] == 0 and s["id"] not in (AMO_WON, AMO_LOST) and s["is_editable"]),
                key=lambda s: s["sort"],
            )
            return str(working[OPEN_STAGES.index(name)]["id"])
        return name

    def new_deal(
        self,
        manager: int = MANAGER,
        stage: str = "working",
        pipeline: str = "main",
        title: str = "Поставка станков",
        source: str = "WEB",
        amount: int = 150000,
        clients: Sequence[str] = (),
    ) -> str:
        lead_id = self.sandbox.act(self.account, manager).create_lead(
            title,
            status_id=int(self.stage_id(stage, pipeline)),
            pipeline_id=int(self.pipeline_id(pipeline)),
            price=amount,
            utm_source=source,
        )
        with self.sandbox.lock:  # the lead's contact and company, as POST /api/v4/leads/complex links them
            lead = self.account.leads[lead_id]
            for handle in clients:
                kind, _, client_id = handle.partition(":")
                if kind == "company":
                    lead["company_id"] = int(client_id)
                else:
                    lead.setdefault("contacts", []).append(int(client_id))
        self.settle()
        return str(lead_id)

    def add_client(
        self, kind: str, responsible: int, phone: str = "", email: str = "", name: str = "", days_ago: int = 30
    ) -> str:
        """A contact or company the account has known for `days_ago` days (a handle like "contact:1005")."""
        with self.sandbox.lock:
            client_id = self.sandbox.next_id()
            created = int(self.sandbox.clock.now()) - days_ago * 86400
            row = {
                "id": client_id,
                "name": name or f"Клиент {client_id}",
                "responsible_user_id": responsible,
                "created_at": created,
                "updated_at": created,
                "phones": [phone] if phone else [],
                "emails": [email] if email else [],
            }
            (self.account.companies if kind == "company" else self.account.contacts)[client_id] = row
        return f"{'company' if kind == 'company' else 'contact'}:{client_id}"

    def _actor(self, by: int | None) -> Any:
        if by is None:
            return self.sandbox.act_as_automation(self.account)
        return self.sandbox.act(self.account, by)

    def move(self, deal_id: str, stage: str, by: int | None, pipeline: str | None = None) -> None:
        pipeline = pipeline or self.pipeline_of(deal_id)
        self._actor(by).move_lead(
            int(deal_id), int(self.stage_id(stage, pipeline)), pipeline_id=int(self.pipeline_id(pipeline))
        )

    def reassign(self, deal_id: str, to: int, by: int) -> None:
        self._actor(by).reassign(int(deal_id), to)

    def delete(self, deal_id: str, by: int | None) -> None:
        """Delete the lead in the account (`leads[delete]` webhook)."""
        self._actor(by).delete_lead(int(deal_id))

    def fill_refusal(self, deal_id: str, by: int, reason: str | None = "price", comment: str = "") -> None:
        amo_fill_refusal(self.harness, int(deal_id), by, reason, comment)

    def fill_postpone(self, deal_id: str, by: int, reason: str | None, day: date | None) -> None:
        """The manager picks the postpone reason and the return date in the lead card (a date field holds the unix
        time of the day's midnight in the account's time zone)."""
        fields = self.portal().settings["amo_fields"]
        midnight = datetime.combine(day, time(), ZoneInfo(self.portal().timezone)) if day else None
        self.sandbox.act(self.account, by).set_fields(
            int(deal_id),
            {
                fields["postpone_reason"]["field"]: {"enum_id": fields["postpone_reason"]["enum"][reason]}
                if reason
                else None,
                fields["postpone_date"]["field"]: str(int(midnight.timestamp())) if midnight else None,
            },
        )

    def add_deal_field(self, label: str) -> str:
        """The admin adds a text field to leads (POST /api/v4/leads/custom_fields); its code is its id."""
        tokens = self.sandbox.issue_tokens(self.account, ADMIN)
        status, body = amo_api.handle(
            self.sandbox,
            self.account.domain,
            f"Bearer {tokens['access_token']}",
            "POST",
            "/api/v4/leads/custom_fields",
            {},
            [{"name": label, "type": "text"}],
        )
        assert status == 200, body
        return str(body["_embedded"]["custom_fields"][0]["id"])

    def fill_field(self, deal_id: str, code: str, value: str, by: int) -> None:
        self._actor(by).set_fields(int(deal_id), {int(code): value})

    def set_amount(self, deal_id: str, amount: int, by: int) -> None:
        self._actor(by).set_price(int(deal_id), amount)

    def qualify(self, deal_id: str, by: int | None, **answers: str | None) -> None:
        """The manager picks the ABC answers in the lead card (see B24Driver.qualify)."""
        fields = self.portal().settings["amo_fields"]
        values: dict[int, Any] = {}
        for name, answer in answers.items():
            spec = fields[f"abc_{name.rstrip('_')}"]
            values[int(spec["field"])] = {"enum_id": spec["enum"][answer]} if answer else None
        self._actor(by).set_fields(int(deal_id), values)

    def drop_our_fields(self, *keys: str) -> None:
        """An admin deletes our lead fields (installers.amocrm.FIELDS keys) in the account's settings."""
        codes = {AMO_FIELDS[key]["code"] for key in keys}
        with self.sandbox.lock:
            for field_id in [i for i, f in self.account.custom_fields.items() if f.get("code") in codes]:
                del self.account.custom_fields[field_id]

    def our_field_exists(self, key: str) -> bool:
        return self.account.field_by_code(AMO_FIELDS[key]["code"]) is not None

    def _lead(self, deal_id: str) -> dict[str, Any]:
        return self.sandbox.lead(self.account, int(deal_id))

    def pipeline_of(self, deal_id: str) -> str:
        pipeline_id = str(self._lead(deal_id)["pipeline_id"])
        return next((name for name in ("main", "other") if self.pipeline_id(name) == pipeline_id), pipeline_id)

    def _crm_stage(self, deal_id: str) -> str:
        return str(self._lead(deal_id)["status_id"])

    def responsible(self, deal_id: str) -> int:
        return int(self._lead(deal_id)["responsible_user_id"])

    def deal_field(self, deal_id: str, name: str) -> Any:
        spec = self.portal().settings["amo_fields"][name]
        values = self._lead(deal_id)["cf"].get(int(spec["field"])) or []
        if not values:
            return None
        if spec.get("enum"):
            codes = {enum_id: code for code, enum_id in spec["enum"].items()}
            return codes.get(values[0].get("enum_id"))
        return values[0].get("value")

    def deal_url(self, deal_id: str) -> str:
        return f"https://{self.account.domain}/leads/detail/{deal_id}"

    def _admin_api(self, method: str, path: str, body: Any = None) -> Any:
        tokens = self.sandbox.issue_tokens(self.account, ADMIN)
        status, answer = amo_api.handle(
            self.sandbox, self.account.domain, f"Bearer {tokens['access_token']}", method, path, {}, body
        )
        assert status == 200, answer
        return answer

    def _reason_enums(self) -> list[dict[str, Any]]:
        field_id = int(self.portal().settings["amo_fields"]["refusal_reason"]["field"])
        return sorted(self.account.custom_fields[field_id]["enums"], key=lambda e: (e["sort"], e["id"]))

    def add_reason_item(self, name: str) -> str:
        """The admin adds an option to the reason field (PATCH /api/v4/leads/custom_fields/{id}, enums)."""
        field_id = int(self.portal().settings["amo_fields"]["refusal_reason"]["field"])
        enums = [{"id": e["id"], "value": e["value"], "sort": e["sort"]} for e in self._reason_enums()]
        self._admin_api(
            "PATCH", f"/api/v4/leads/custom_fields/{field_id}", {"enums": [*enums, {"value": name, "sort": 900}]}
        )
        return next(str(e["id"]) for e in self._reason_enums() if e["value"] == name)

    def reason_items(self) -> list[str]:
        return [str(e["value"]) for e in self._reason_enums()]

    def pick_reason_item(self, deal_id: str, by: int, name: str, comment: str) -> None:
        fields = self.portal().settings["amo_fields"]
        enum_id = next(e["id"] for e in self._reason_enums() if e["value"] == name)
        self.sandbox.act(self.account, by).set_fields(
            int(deal_id),
            {fields["refusal_reason"]["field"]: {"enum_id": enum_id}, fields["refusal_comment"]["field"]: comment},
        )

    def make_call(self, deal_id: str, by: int, duration: int = 42) -> None:
        self.sandbox.act(self.account, by).make_call(int(deal_id), duration=duration)

    def _notice_tasks(self, user_id: int | None = None) -> list[tuple[str, str | None]]:
        """amoCRM has no notification API: our notices are tasks for the user, (text, lead): a notice about a
        lead is a task linked to it whose text is that of a note on the lead (plus the app's mark), any other a
        task without a lead."""
        found: list[tuple[str, str | None]] = []
        for task in sorted(self.sandbox.tasks_for(self.account, user_id=user_id), key=lambda t: t["id"]):
            text = str(task["text"])
            if task["entity_type"] is None:
                found.append((text, None))
            elif text.endswith(AMO_NOTICE_MARK):
                lead = str(task["entity_id"])
                message = text.removesuffix(AMO_NOTICE_MARK).removesuffix("\n")
                assert message in self._notes(lead), "a notice task on a lead comes with its note on the lead"
                found.append((message, lead))
        return found

    def notices(self, user_id: int) -> list[str]:
        return [text.replace("\xa0", " ").replace("\u202f", " ") for text, _ in self._notice_tasks(user_id)]

    def notice_deals(self, user_id: int) -> list[str | None]:
        """The lead each of the user's notice tasks is linked to (None: a task without a lead)."""
        return [lead for _, lead in self._notice_tasks(user_id)]

    def notices_on(self, deal_id: str) -> list[str]:
        """The notes on the lead (its timeline)."""
        return [text.replace("\xa0", " ").replace("\u202f", " ") for text in self._notes(deal_id)]

    def _task(self, row: dict[str, Any]) -> CrmTask:
        return CrmTask(
            id=str(row["id"]),
            title=str(row["text"]),
            responsible=int(row["responsible_user_id"]),
            deal_id=None if row["entity_id"] is None else str(row["entity_id"]),
            is_open=not row["is_completed"],
            deadline=_moment(row["complete_till"]),
        )

    def deal_tasks(self, deal_id: str) -> list[CrmTask]:
        """The lead's tasks, not our notices (those are `notices`)."""
        rows = [
            row
            for row in self.sandbox.tasks_for(self.account, lead_id=int(deal_id))
            if not str(row["text"]).endswith(AMO_NOTICE_MARK)
        ]
        return [self._task(row) for row in sorted(rows, key=lambda r: r["id"])]

    def callback_todos(self, deal_id: str) -> list[CrmTask]:
        """A to-do on amoCRM is a task of type 1 ("call") on the lead."""
        return [task for task in self.deal_tasks(deal_id) if task.title.startswith(CALLBACK_TITLE)]

    def open_review_page(self, user_id: int, deal_id: str) -> TestResponse:
        return open_lead_tab(self.harness, user_id, deal_id)

    def open_app(self, user_id: int) -> TestResponse:
        """The app's main page as the widget opens it: a ticket for the user (amoCRM says whether he is an admin)."""
        ticket = issue_ticket(self.portal().id, str(user_id), bool(self.account.users[user_id]["rights"]["is_admin"]))
        return self.client.get(f"/amocrm/app?ticket={ticket}")

    def create_task(
        self,
        deal_id: str,
        responsible: int,
        deadline: datetime,
        title: str = "Перезвонить",
        by: int = HEAD,
        auditors: tuple[int, ...] = (),
    ) -> str:
        if auditors:
            raise ValueError("amoCRM tasks have no auditors")
        task_id = self.sandbox.act(self.account, by).add_task(
            int(deal_id), title, int(deadline.timestamp()), responsible=responsible
        )
        return str(task_id)

    def complete_task(self, task_id: str, by: int) -> None:
        self.sandbox.act(self.account, by).complete_task(int(task_id), result="Готово")

    def _notes(self, deal_id: str) -> list[str]:
        """The common notes on a lead, oldest first."""
        with self.sandbox.lock:
            rows = sorted(self.account.notes.values(), key=lambda n: n["id"])
        return [str(n["params"]["text"]) for n in rows if str(n["entity_id"]) == deal_id and n["note_type"] == "common"]

    def _run_robot(self, code: str, deal_id: str, properties: dict[str, str]) -> str:
        """Our Digital Pipeline action with this robot, set on the lead's status, fires for the lead (amoCRM
        POSTs the action's settings); the outcome is the note it leaves on the lead (a DP action has no return
        values). The action is taken off the status again so later moves do not fire it."""
        secret = str(self.portal().settings["amo_dp_secret"])
        settings = {"robot": code, "reason": "", "days": "", "hour": "", "text": "", "secret": secret, **properties}
        action = self.sandbox.add_dp_action(self.account, int(self._lead(deal_id)["status_id"]), settings, url=DP_URL)
        # amoCRM tells two firings apart by their event time (whole seconds): robots run in one test second
        # are made to fire a second apart, as a lead entering a status twice would.
        self._dp_time = max(int(self.sandbox.clock.now()), self._dp_time + 1)
        body = self.sandbox.dp_body(self.account, action, int(deal_id), at=self._dp_time)
        with self.sandbox.lock:
            self.account.dp_actions.remove(action)
        before = len(self._notes(deal_id))
        answer = post_form(self.client, DP_URL, body)
        assert answer.status_code == 200 and answer.get_json() == {"ok": True, "duplicate": False}, answer.get_json()
        self.settle()
        notes = self._notes(deal_id)
        assert len(notes) == before + 1, notes
        prefix = "Контроль отказов: "
        assert notes[-1].startswith(prefix), notes[-1]
        return notes[-1].split(" — ", 1)[1]

    def check_tasks_robot(self, deal_id: str) -> tuple[bool, int]:
        """The robot «Проверить задачи» on the lead: (has an open task, overdue tasks) as its note says."""
        found = _CHECK_TASKS.fullmatch(self._run_robot("rc_check_tasks", deal_id, {}))
        assert found, "the note does not report the check"
        return found.group(1) == "есть", int(found.group(2))

    def callback_robot(self, deal_id: str, days: str, hour: str = "", text: str = "") -> str:
        """The robot «Перезвонить через N дней» on the lead: the error its note reports ("" when the task was set)."""
        outcome = self._run_robot("rc_callback", deal_id, {"days": days, "hour": hour, "text": text})
        if outcome.startswith("не выполнено: "):
            return outcome.removeprefix("не выполнено: ")
        assert outcome.startswith("задача на звонок ответственному на "), outcome
        return ""

    def pending_deliveries(self) -> list[Delivery]:
        return [Delivery(hook.url, hook.body) for hook in self.sandbox.pending_hooks()]

    def post_delivery(self, delivery: Delivery) -> TestResponse:
        return post_form(self.client, delivery.url, delivery.body)

    def drop_next_delivery(self) -> None:
        self.sandbox.drop_next(1)

    def deal_writes(self, deal_id: str) -> int:
        """Successful PATCHes of the lead (one by one, or in a PATCH /api/v4/leads batch)."""
        return self.sandbox.account(self.account).lead_writes.get(int(deal_id), 0)

    def deal_reads(self, deal_id: str) -> int:
        return self.sandbox.api_calls(self.account, "GET", f"/api/v4/leads/{deal_id}")

    def http_requests(self) -> int:
        """API requests the account answered (429s included)."""
        return self.sandbox.api_calls(self.account)


def make_driver(kind: str, harness: B24 | Amo) -> CrmDriver:
    """The driver of a harness."""
    if kind == "bitrix24":
        assert isinstance(harness, B24)
        return B24Driver(harness)
    assert isinstance(harness, Amo)
    return AmoDriver(harness)


__all__ = [
    "ADMIN",
    "APP_URL",
    "COMMERCIAL",
    "HEAD",
    "INACTIVE_QA",
    "MANAGER",
    "OTHER_MANAGER",
    "POOL",
    "QA",
    "QA2",
    "AmoDriver",
    "B24Driver",
    "CrmDriver",
    "CrmTask",
    "Delivery",
    "make_driver",
    "page_config",
    "qa_tasks",
]
