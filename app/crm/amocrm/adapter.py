"""amoCRM (and Kommo): `AmoCrm`, the CrmClient port on an account.

The adapter decides two things worth knowing:

* Who moved a lead: the re-read lead's ``updated_by`` (0, a robot or the system, becomes
  ``AUTOMATION``). That keeps the guard at two calls per decision (read, write); the events API is
  used for the stage history (`stage_before`).
* Missed webhooks (`drain_deal_changes`): the events API, type ``lead_status_changed``, from a
  watermark kept in the portal settings. Status changes are the only thing the guard reacts to, so
  this reads one row per move instead of every lead touched since the last sweep (a lead whose
  fields were edited a thousand times costs nothing), and amoCRM keeps these events even when it
  drops or coalesces the hooks (reference/amocrm.md pitfall 5).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.orm.attributes import flag_modified

from app.core.db import db
from app.core.models import Portal, RefusalReason
from app.crm.amocrm.client import PAGE_LIMIT, AmoRest
from app.crm.days import parse_day
from app.crm.errors import (
    AmoNotFound,
    AmoValidationError,
    CrmError,
)
from app.crm.port import (
    AUTOMATION,
    Call,
    Client,
    ClientHistory,
    CrmTimeZone,
    Deal,
    DealChange,
    DealField,
    DealWrite,
    Department,
    EchoWindow,
    FieldKind,
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
    item_of_reason_code,
    reason_code_for_item,
)
from app.crm.reason_items import stored_reason_items

log = logging.getLogger(__name__)

WON = "142"
LOST = "143"
EVENTS_LIMIT = 100
BATCH_IDS = 250
EVENTS_WATERMARK = "amo_events_since"
ABC_FIELDS = ("abc_need", "abc_budget", "abc_urgency", "abc_class")  # their changes are drained with status changes
TASK_TYPE_CALL = 1
NOTICE_TASK_HOURS = 4
UTM_SOURCE = "UTM_SOURCE"  # the code of amoCRM's built-in tracking_data field "utm_source"
CLIENT_SEARCHES = 3  # phones and e-mails looked up per new lead (each one request per entity type)
SOURCE_MAX_LENGTH = 64  # what our tables keep of a source id
SOURCE_SCAN_DAYS = 180
SOURCE_SCAN_PAGES = 8
LEAD_PATCH_BATCH = 50  # leads per PATCH /api/v4/leads: amoCRM takes up to 250, its SDK advises at most 50
NOTICE_BATCH = 50  # tasks per POST: amoCRM takes up to 250, its SDK advises at most 50
# The last line of a notice's task linked to a lead: tells the app's notices from the lead's real next steps.
NOTICE_MARK = "— Контроль отказов / Refusal Control"
STATUS_INCOMING = 1  # status type of "Incoming leads" (Неразобранное)
STATUS_FILTER_CHUNK = 40  # (pipeline, status) pairs per lead list request: keeps the URL near 4.5 KB
TASK_TITLE_LENGTH = 250
STATUS_COLOR = "#ffce5a"  # the status colour of stages we add: amoCRM allows a fixed palette, this is its orange


def _offset(value: Any) -> timedelta | None:
    """An offset written ``+07:00`` / ``-04:00``."""
    text = str(value or "").strip()
    if len(text) != 6 or text[0] not in "+-" or text[3] != ":" or not (text[1:3] + text[4:]).isdigit():
        return None
    delta = timedelta(hours=int(text[1:3]), minutes=int(text[4:]))
    return -delta if text[0] == "-" else delta


# ---------------------------------------------------------------- value decoding


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _mapping(value: Any) -> Mapping[str, Any]:
    """`value` when the API sent an object, else an empty one (a missing or malformed part of an answer)."""
    return value if isinstance(value, dict) else {}


def _ts(value: Any) -> datetime | None:
    number = _int(value)
    return datetime.fromtimestamp(number, UTC) if number else None


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def is_notice_task(row: Mapping[str, Any]) -> bool:
    """Whether a task of ``GET /api/v4/tasks`` is one of the app's notices (not a step in the lead's work)."""
    return _text(row.get("text")).rstrip().endswith(NOTICE_MARK)


def semantics_of(status_id: str) -> StageSemantics:
    """142 is won, 143 lost, everything else in progress."""
    if status_id == WON:
        return "success"
    if status_id == LOST:
        return "failure"
    return "process"


def lead_values(raw: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """A lead's fields by code as their non-empty values in text: "name", "price" and each custom field by
    its id (a list item by its enum id, a checkbox as "1"/"0")."""
    values: dict[str, tuple[str, ...]] = {}
    for code in ("name", "price"):
        text = _text(raw.get(code)).strip()
        if text:
            values[code] = (text,)
    for entry in raw.get("custom_fields_values") or []:
        if not isinstance(entry, dict) or _int(entry.get("field_id")) is None:
            continue
        texts = []
        for item in entry.get("values") or []:
            if not isinstance(item, dict):
                continue
            value = item.get("enum_id") if item.get("enum_id") is not None else item.get("value")
            if isinstance(value, bool):
                texts.append("1" if value else "0")
            elif value is not None and str(value).strip():
                texts.append(str(value).strip())
        if texts:
            values[str(_int(entry.get("field_id")))] = tuple(texts)
    return values


_STANDARD_LABELS = {"ru": ("Название сделки", "Бюджет"), "en": ("Lead name", "Budget")}
# Custom field types by how a requirement checks them; any other type: not blank.
_FIELD_KINDS: dict[str, FieldKind] = {
    "numeric": "number",
    "price": "money",
    "monetary": "money",
    "date": "date",
    "date_time": "date",
    "birthday": "date",
    "select": "enum",
    "multiselect": "enum",
    "radiobutton": "enum",
    "category": "enum",
    "chained_list": "enum",
    "checkbox": "boolean",
}


# ---------------------------------------------------------------- the adapter


class AmoCrm:
    """The CrmClient port for an amoCRM / Kommo account."""

    def __init__(self, portal: Portal, rest: AmoRest | None = None) -> None:
        self.portal_id = portal.id
        self.rest = rest or AmoRest(portal.id)
        self.domain = portal.domain
        fields = (portal.settings or {}).get("amo_fields") or {}
        self._field: dict[str, int] = {
            name: int(spec["field"]) for name, spec in fields.items() if _int(spec.get("field")) is not None
        }
        self._enum: dict[str, dict[str, int]] = {
            name: {str(code): int(enum_id) for code, enum_id in (spec.get("enum") or {}).items()}
            for name, spec in fields.items()
        }
        self._enum_codes: dict[str, dict[int, str]] = {
            name: {enum_id: code for code, enum_id in mapping.items()} for name, mapping in self._enum.items()
        }
        self._raw_pipelines: dict[str, list[tuple[int, int]]] | None = None
        self.language = portal.language
        try:
            self.zone = ZoneInfo(portal.timezone or "UTC")
        except (ZoneInfoNotFoundError, ValueError):
            self.zone = ZoneInfo("UTC")
        self._reasons_loaded = False
        self._loss_reasons: dict[int, str] | None = None

    # ---- custom fields

    def _values(self, raw: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
        field_id = self._field.get(name)
        if field_id is None:
            return []
        for entry in raw.get("custom_fields_values") or []:
            if isinstance(entry, dict) and _int(entry.get("field_id")) == field_id:
                return [v for v in entry.get("values") or [] if isinstance(v, dict)]
        return []

    def _load_reason_items(self) -> None:
        """The portal's refusal reasons and their select options (the app's table), read once per client."""
        if self._reasons_loaded:
            return
        self._reasons_loaded = True
        rows = stored_reason_items(self.portal_id)
        mapping = self._enum.setdefault("refusal_reason", {})
        codes = self._enum_codes.setdefault("refusal_reason", {})
        for code, item in rows:
            enum_id = _int(item)
            if enum_id is not None:
                mapping[str(code)] = enum_id
                codes[enum_id] = str(code)

    def _decode_enum(self, raw: Mapping[str, Any], name: str) -> str | None:
        values = self._values(raw, name)
        if not values:
            return None
        enum_id = _int(values[0].get("enum_id"))
        if name == "refusal_reason":
            self._load_reason_items()
        code = self._enum_codes.get(name, {}).get(enum_id) if enum_id is not None else None
        if code is None and name == "refusal_reason" and enum_id is not None:
            return reason_code_for_item(str(enum_id))  # an option an admin added in amoCRM: the domain adopts it
        if code is None:
            log.warning("unknown enum value", extra={"portal_id": self.portal_id, "field": name, "enum_id": enum_id})
        return code

    def _loss_reason(self, raw: Mapping[str, Any]) -> str | None:
        """A lead closed as lost with one of the account's loss reasons (the dialog amoCRM shows when the account
        has them) and our field left empty: the company's reason of the same name, in either language. The loss
        reasons are read once per client (``GET /api/v4/leads/loss_reasons``; the API cannot write them)."""
        loss_reason_id = _int(raw.get("loss_reason_id"))
        if loss_reason_id is None:
            return None
        if self._loss_reasons is None:
            self._loss_reasons = {
                int(item["id"]): _text(item.get("name"))
                for item in self.rest.iter_pages("/api/v4/leads/loss_reasons", "loss_reasons")
                if _int(item.get("id")) is not None
            }
        name = self._loss_reasons.get(loss_reason_id, "").strip().casefold()
        if not name:
            return None
        rows = db.session.execute(
            sa.select(RefusalReason.code, RefusalReason.name_ru, RefusalReason.name_en)
            .where(RefusalReason.portal_id == self.portal_id)
            .order_by(RefusalReason.retired, RefusalReason.sort)
        ).all()
        return next((str(code) for code, ru, en in rows if name in (ru.casefold(), en.casefold())), None)

    def _decode_text(self, raw: Mapping[str, Any], name: str) -> str:
        values = self._values(raw, name)
        return _text(values[0].get("value")) if values else ""

    def _require_field(self, name: str) -> int:
        field_id = self._field.get(name)
        if field_id is None:
            raise CrmError(f"custom field {name} is not installed on portal {self.portal_id}")
        return field_id

    def _encode_enum(self, name: str, code: str) -> dict[str, Any]:
        field_id = self._require_field(name)
        if code == "":
            return {"field_id": field_id, "values": None}
        if name == "refusal_reason":
            self._load_reason_items()
        try:
            return {"field_id": field_id, "values": [{"enum_id": self._enum[name][code]}]}
        except KeyError as error:
            item = item_of_reason_code(code) if name == "refusal_reason" else None
            if item is not None:
                return {"field_id": field_id, "values": [{"enum_id": int(item)}]}
            raise CrmError(f"{name} code {code!r} is not installed on portal {self.portal_id}") from error

    def _reason_field(self) -> Mapping[str, Any]:
        field_id = self._require_field("refusal_reason")
        for field in self.rest.iter_pages(
            "/api/v4/leads/custom_fields", "custom_fields", {"filter": {"type": ["select"]}}
        ):
            if _int(field.get("id")) == field_id:
                return field
        raise AmoNotFound(f"the reason field {field_id} is gone from account {self.portal_id}")

    @staticmethod
    def _options(field: Mapping[str, Any]) -> list[FieldOption]:
        options = [
            FieldOption(id=str(_int(enum.get("id"))), name=_text(enum.get("value")), sort=_int(enum.get("sort")) or 0)
            for enum in field.get("enums") or []
            if isinstance(enum, dict) and _int(enum.get("id")) is not None
        ]
        options.sort(key=lambda option: (option.sort, int(option.id)))
        return options

    def list_reason_options(self) -> list[FieldOption]:
        """The select options of the reason field (GET /api/v4/leads/custom_fields)."""
        return self._options(self._reason_field())

    def save_reason_options(self, options: Sequence[FieldOption]) -> list[FieldOption]:
        """PATCH /api/v4/leads/custom_fields/{id} with `enums`: the body is the whole option set (an option
        with an id is kept and edited, one without is added), so options not named are sent unchanged."""
        field = self._reason_field()
        current = {option.id: option for option in self._options(field)}
        named = {option.id for option in options if option.id}
        enums: list[dict[str, Any]] = []
        for option in options:
            if option.id and option.id in current:
                enums.append({"id": int(option.id), "value": option.name, "sort": option.sort})
            elif not option.id:
                enums.append({"value": option.name, "sort": option.sort})
        enums.extend(
            {"id": int(kept.id), "value": kept.name, "sort": kept.sort}
            for item, kept in sorted(current.items())
            if item not in named
        )
        answer = self.rest.request(
            "PATCH", f"/api/v4/leads/custom_fields/{int(str(field['id']))}", body={"enums": enums}
        )
        self._reasons_loaded = False
        if isinstance(answer, dict) and isinstance(answer.get("enums"), list):
            return self._options(answer)
        return self.list_reason_options()

    def _encode_text(self, name: str, text: str) -> dict[str, Any]:
        field_id = self._require_field(name)
        return {"field_id": field_id, "values": [{"value": text}] if text else None}

    # ---- leads

    def deal_from_raw(self, raw: Mapping[str, Any]) -> Deal:
        """Decode one lead of GET /api/v4/leads."""
        status_id = _text(raw.get("status_id"))
        updated_by = _int(raw.get("updated_by"))
        modified_by = AUTOMATION if updated_by == 0 else (str(updated_by) if updated_by else None)
        cpl_values = self._values(raw, "cpl")
        return Deal(
            id=_text(raw.get("id")),
            title=_text(raw.get("name")),
            pipeline_id=_text(raw.get("pipeline_id")),
            stage_id=status_id,
            stage_semantics=semantics_of(status_id),
            responsible_id=_text(raw.get("responsible_user_id")),
            modified_by_id=modified_by,
            modified_at=_ts(raw.get("updated_at")),
            created_at=_ts(raw.get("created_at")),
            amount=_decimal(raw.get("price")) or Decimal("0"),
            source_id=self.source_of(raw),
            refusal_reason=self._decode_enum(raw, "refusal_reason") or self._loss_reason(raw),
            refusal_comment=self._decode_text(raw, "refusal_comment"),
            qa_verdict=self._decode_enum(raw, "qa_verdict"),
            cpl=_decimal(cpl_values[0].get("value")) if cpl_values else None,
            # amoCRM keeps no "last activity" time on a lead; `updated_at` moves with every change to it
            # (a move, a field, a new responsible), which is the closest documented equivalent.
            last_activity_at=_ts(raw.get("updated_at")),
            abc_need=self._decode_enum(raw, "abc_need"),
            abc_budget=self._decode_enum(raw, "abc_budget"),
            abc_urgency=self._decode_enum(raw, "abc_urgency"),
            abc_class=self._decode_enum(raw, "abc_class"),
            values=lead_values(raw),
            postpone_reason=self._decode_enum(raw, "postpone_reason"),
            postpone_date=self._decode_day(raw, "postpone_date"),
        )

    def _decode_day(self, raw: Mapping[str, Any], name: str) -> date | None:
        values = self._values(raw, name)
        return parse_day(values[0].get("value"), self.zone) if values else None

    @staticmethod
    def source_of(raw: Mapping[str, Any]) -> str:
        """The lead's source: its ``utm_source`` tracking value (field code UTM_SOURCE), "" without one."""
        for entry in raw.get("custom_fields_values") or []:
            if isinstance(entry, dict) and str(entry.get("field_code") or "").upper() == UTM_SOURCE:
                for value in entry.get("values") or []:
                    text = _text(value.get("value") if isinstance(value, dict) else "").strip()
                    if text:
                        return text[:SOURCE_MAX_LENGTH]
        return ""

    def get_deal(self, deal_id: str) -> Deal:
        """Re-read one lead (GET /api/v4/leads/{id}; 204/404 mean it is gone)."""
        raw = self.rest.get(f"/api/v4/leads/{int(deal_id)}")
        if not isinstance(raw, dict) or not raw.get("id"):
            raise AmoNotFound(f"lead {deal_id} not found")
        return self.deal_from_raw(raw)

    def get_deals(self, deal_ids: Sequence[str]) -> dict[str, Deal]:
        """Many leads, 250 ids per request (``filter[id][]``)."""
        ids = list(dict.fromkeys(int(deal_id) for deal_id in deal_ids))
        deals: dict[str, Deal] = {}
        for start in range(0, len(ids), BATCH_IDS):
            chunk = ids[start : start + BATCH_IDS]
            for raw in self.rest.iter_pages("/api/v4/leads", "leads", {"filter": {"id": chunk}}):
                deal = self.deal_from_raw(raw)
                deals[deal.id] = deal
        return deals

    def lead_patch(self, change: DealChange) -> dict[str, Any]:
        """The PATCH body for a change (custom fields in the v4 ``custom_fields_values`` shape)."""
        body: dict[str, Any] = {}
        if change.stage_id is not None:
            body["status_id"] = int(change.stage_id)
        if change.pipeline_id is not None:
            body["pipeline_id"] = int(change.pipeline_id)
        if change.responsible_id is not None:
            body["responsible_user_id"] = int(change.responsible_id)
        values = []
        if change.refusal_reason is not None:
            values.append(self._encode_enum("refusal_reason", change.refusal_reason))
        if change.refusal_comment is not None:
            values.append(self._encode_text("refusal_comment", change.refusal_comment))
        if change.qa_verdict is not None:
            values.append(self._encode_enum("qa_verdict", change.qa_verdict))
        if change.abc_class is not None:
            values.append(self._encode_enum("abc_class", change.abc_class))
        if values:
            body["custom_fields_values"] = values
        return body

    def update_deal(self, deal_id: str, change: DealChange) -> None:
        """PATCH /api/v4/leads/{id}. 142/143 are shared by every pipeline, so they always carry pipeline_id
        (read from the lead when the change does not name it); we never send loss_reason_id."""
        body = self.lead_patch(change)
        if not body:
            return
        if change.stage_id in (WON, LOST) and "pipeline_id" not in body:
            body["pipeline_id"] = int(self.get_deal(deal_id).pipeline_id)
        self.rest.request("PATCH", f"/api/v4/leads/{int(deal_id)}", body=body)

    def iter_deals(self, *, modified_since: datetime | None = None, open_only: bool = False) -> Iterator[Deal]:
        """Stream leads oldest id first (``order[id]=asc``, ``filter[updated_at][from]``)."""
        params: dict[str, Any] = {"order": {"id": "asc"}}
        if modified_since is not None:
            if modified_since.tzinfo is None:
                raise ValueError("modified_since must be aware")
            params["filter"] = {"updated_at": {"from": int(modified_since.timestamp())}}
        for raw in self.rest.iter_pages("/api/v4/leads", "leads", params):
            if open_only and _text(raw.get("status_id")) in (WON, LOST):
                continue
            yield self.deal_from_raw(raw)

    def _open_status_types(self) -> dict[str, list[tuple[int, int]]]:
        """(status id, status type) of every status but 142 and 143, per pipeline id; read once per adapter."""
        if self._raw_pipelines is None:
            answer = self.rest.get("/api/v4/leads/pipelines")
            self._raw_pipelines = {
                _text(raw.get("id")): [
                    (int(status["id"]), _int(status.get("type")) or 0)
                    for status in ((raw.get("_embedded") or {}).get("statuses") or [])
                    if _int(status.get("id")) is not None and _text(status.get("id")) not in (WON, LOST)
                ]
                for raw in ((answer or {}).get("_embedded") or {}).get("pipelines") or []
                if _int(raw.get("id")) is not None
            }
        return self._raw_pipelines

    def _open_statuses(self, pipeline_id: str) -> list[int]:
        """Every status of a pipeline but 142 and 143 (Incoming leads included: such a lead is open too)."""
        return [status_id for status_id, _type in self._open_status_types().get(pipeline_id, [])]

    def count_open_deals(self, responsible_id: str, pipeline_id: str) -> int:
        """Open leads of one pipeline a user is responsible for.

        amoCRM answers no totals and selects no columns, so this pages ``GET /api/v4/leads`` at 250 a page
        with ``filter[responsible_user_id][]`` and ``filter[statuses][i][pipeline_id|status_id]`` for each
        open status of the pipeline (the filter shape of the official SDK's LeadsFilter), and counts;
        a manager's open leads are few, so that is one request in practice.
        """
        statuses = self._open_statuses(pipeline_id)
        if not statuses:
            return 0
        params = {
            "filter": {
                "responsible_user_id": [int(responsible_id)],
                "statuses": [{"pipeline_id": int(pipeline_id), "status_id": status} for status in statuses],
            },
            "order": {"id": "asc"},
        }
        return sum(1 for _lead in self.rest.iter_pages("/api/v4/leads", "leads", params))

    def list_deal_fields(self) -> list[DealField]:
        """The lead's name and budget, then its custom fields (GET /api/v4/leads/custom_fields, every page)."""
        name, price = _STANDARD_LABELS["ru" if self.language == "ru" else "en"]
        found = [DealField("name", name, "string"), DealField("price", price, "money")]
        for spec in self.rest.iter_pages("/api/v4/leads/custom_fields", "custom_fields"):
            field_id = _int(spec.get("id"))
            if field_id is None:
                continue
            kind = _FIELD_KINDS.get(_text(spec.get("type")), "string")
            label = _text(spec.get("name")).strip() or str(field_id)
            found.append(DealField(str(field_id), label, kind, multiple=_text(spec.get("type")) == "multiselect"))
        return found

    def list_sources(self) -> list[Source]:
        """The lead sources in use: the distinct ``utm_source`` values of recently updated leads.

        amoCRM has no account-wide list of lead sources (its ``/api/v4/sources`` holds only the chat
        sources an integration creates itself). What a lead carries that says where it came from is the
        built-in tracking field ``utm_source`` (type tracking_data, code UTM_SOURCE), which site forms,
        ads and chat integrations fill in. Its values are free text, so the list is collected from the
        leads updated in the last SOURCE_SCAN_DAYS days, newest first, at most SOURCE_SCAN_PAGES pages
        of 250; the id and the name of a source are the value itself, sorted by name.
        """
        since = int((datetime.now(UTC) - timedelta(days=SOURCE_SCAN_DAYS)).timestamp())
        found: dict[str, str] = {}
        for page in range(1, SOURCE_SCAN_PAGES + 1):
            answer = self.rest.get(
                "/api/v4/leads",
                {
                    "filter": {"updated_at": {"from": since}},
                    "order": {"updated_at": "desc"},
                    "page": page,
                    "limit": PAGE_LIMIT,
                },
            )
            leads = ((answer or {}).get("_embedded") or {}).get("leads") or [] if isinstance(answer, dict) else []
            for raw in leads:
                source = self.source_of(raw) if isinstance(raw, dict) else ""
                if source:
                    found.setdefault(source.casefold(), source)
            if len(leads) < PAGE_LIMIT:
                break
        return [Source(id=name, name=name) for name in sorted(found.values(), key=str.casefold)]

    # ---- events

    def _status_events(self, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        base = {"filter": {"type": "lead_status_changed", "entity": "lead", **(params.get("filter") or {})}}
        yield from self.rest.iter_pages("/api/v4/events", "events", base, limit=EVENTS_LIMIT)

    @staticmethod
    def _event_status(values: Any) -> tuple[str, str] | None:
        for value in values or []:
            status = value.get("lead_status") if isinstance(value, dict) else None
            if isinstance(status, dict) and status.get("id") is not None:
                return _text(status.get("id")), _text(status.get("pipeline_id"))
        return None

    def stage_before(self, deal_id: str, stage_id: str) -> str | None:
        """From the newest ``lead_status_changed`` event into `stage_id`: its ``value_before``."""
        for event in self._status_events({"filter": {"entity_id": [int(deal_id)]}}):
            after = self._event_status(event.get("value_after"))
            if after is not None and after[0] == stage_id:
                before = self._event_status(event.get("value_before"))
                return before[0] if before else None
        return None

    def _drained_event_types(self) -> str:
        """Status changes, and changes of the ABC answers and class where those fields are installed
        (`custom_field_{FIELD_ID}_value_changed`, developers.kommo.com/reference/events-filtration)."""
        types = ["lead_status_changed"]
        for name in ABC_FIELDS:
            if name in self._field:
                types.append(f"custom_field_{self._field[name]}_value_changed")
        return ",".join(types)

    def drain_deal_changes(self, handle: Callable[[list[str]], None]) -> int | None:
        """Status changes (and changes of the ABC answers) since the stored watermark (events API), 100 per
        page; the watermark moves on only after `handle` returned for a page."""
        since = self._watermark()
        types = self._drained_event_types()
        drained = 0
        newest = since
        page = 1
        while True:
            answer = self.rest.get(
                "/api/v4/events",
                {
                    "filter": {"type": types, "entity": "lead", "created_at": {"from": since}},
                    "page": page,
                    "limit": EVENTS_LIMIT,
                },
            )
            events = ((answer or {}).get("_embedded") or {}).get("events") or [] if isinstance(answer, dict) else []
            lead_ids = sorted({_text(e.get("entity_id")) for e in events if e.get("entity_id")}, key=int)
            if lead_ids:
                handle(lead_ids)
            newest = max([newest, *(_int(e.get("created_at")) or 0 for e in events)])
            drained += len(events)
            if newest > since:
                self._set_watermark(newest)
            if len(events) < EVENTS_LIMIT:
                return drained
            page += 1

    def _watermark(self) -> int:
        with self.rest._session() as session:
            portal = session.get(Portal, self.portal_id)
            if portal is None:
                raise CrmError(f"portal {self.portal_id} does not exist")
            stored = _int((portal.settings or {}).get(EVENTS_WATERMARK))
            if stored:
                return stored
            start = portal.installed_at or datetime.now(UTC)
            return int(start.timestamp())

    def _set_watermark(self, value: int) -> None:
        with self.rest._session() as session, session.begin():
            portal = session.scalars(sa.select(Portal).where(Portal.id == self.portal_id).with_for_update()).one()
            settings = dict(portal.settings or {})
            settings[EVENTS_WATERMARK] = value
            portal.settings = settings
            flag_modified(portal, "settings")

    # ---- pipelines

    def list_pipelines(self) -> list[Pipeline]:
        """GET /api/v4/leads/pipelines with the statuses embedded."""
        answer = self.rest.get("/api/v4/leads/pipelines")
        pipelines = []
        for raw in ((answer or {}).get("_embedded") or {}).get("pipelines") or []:
            pipeline_id = _text(raw.get("id"))
            stages = [
                Stage(
                    id=_text(status.get("id")),
                    pipeline_id=pipeline_id,
                    name=_text(status.get("name")),
                    sort=_int(status.get("sort")) or 0,
                    semantics=semantics_of(_text(status.get("id"))),
                )
                for status in ((raw.get("_embedded") or {}).get("statuses") or [])
                # "Incoming leads" (type 1) is not a stage anyone works in.
                if _int(status.get("type")) != 1
            ]
            stages.sort(key=lambda stage: stage.sort)
            pipelines.append(
                Pipeline(
                    id=pipeline_id,
                    name=_text(raw.get("name")),
                    stages=tuple(stages),
                    is_default=bool(raw.get("is_main")),
                )
            )
        pipelines.sort(key=lambda p: (not p.is_default, int(p.id)))
        return pipelines

    def ensure_stage(self, pipeline_id: str, spec: StageSpec) -> str:
        """GET /api/v4/leads/pipelines/{id} (statuses embedded); a status named like `spec` is ours, else one is
        POSTed to .../statuses, sorted after the last working status (142 and 143 always come last)."""
        pipeline = self.rest.get(f"/api/v4/leads/pipelines/{int(pipeline_id)}")
        statuses = [s for s in (_mapping(_mapping(pipeline).get("_embedded")).get("statuses") or []) if s]
        found = next((s for s in statuses if _text(s.get("name")) in spec.names), None)
        if found is not None:
            return _text(found.get("id"))
        working = [_int(s.get("sort")) or 0 for s in statuses if _text(s.get("id")) not in (WON, LOST)]
        answer = self.rest.request(
            "POST",
            f"/api/v4/leads/pipelines/{int(pipeline_id)}/statuses",
            body=[{"name": spec.name, "sort": max(working, default=0) + 10, "color": STATUS_COLOR}],
        )
        made = _mapping(_mapping(answer).get("_embedded")).get("statuses") or []
        if not made:
            raise CrmError(f"pipeline {pipeline_id}: the status was not created")
        return _text(made[0].get("id"))

    def order_stages(self, pipeline_id: str, stage_ids: Sequence[str]) -> None:
        """GET the pipeline; PATCH .../statuses/{id} with the new `sort` of each named status that is not where
        it should be (142 and 143 always come last by themselves)."""
        pipeline = self.rest.get(f"/api/v4/leads/pipelines/{int(pipeline_id)}")
        statuses = [s for s in (_mapping(_mapping(pipeline).get("_embedded")).get("statuses") or []) if s]
        by_id = {_text(s.get("id")): s for s in statuses}
        named = [by_id[stage_id] for stage_id in stage_ids if stage_id in by_id and stage_id not in (WON, LOST)]
        named_ids = {_text(s.get("id")) for s in named}
        others = [s for s in statuses if _text(s.get("id")) not in (WON, LOST) and _text(s.get("id")) not in named_ids]
        sort = max((_int(s.get("sort")) or 0 for s in others), default=0)
        for row in named:
            sort += 10
            if (_int(row.get("sort")) or 0) != sort:
                self.rest.request(
                    "PATCH",
                    f"/api/v4/leads/pipelines/{int(pipeline_id)}/statuses/{int(_text(row.get('id')))}",
                    body={"sort": sort},
                )

    # ---- people

    def list_users(self) -> list[User]:
        """GET /api/v4/users (admin grant), 250 per page; a user's group is his department."""
        users = []
        for row in self.rest.iter_pages("/api/v4/users", "users", {"with": "group"}):
            rights = _mapping(row.get("rights"))
            group_id = rights.get("group_id")
            users.append(
                User(
                    id=_text(row.get("id")),
                    name=_text(row.get("name")) or _text(row.get("email")) or _text(row.get("id")),
                    active=bool(rights.get("is_active", True)),
                    department_ids=(_text(group_id),) if group_id not in (None, "") else (),
                    is_admin=bool(rights.get("is_admin")),
                )
            )
        return users

    def list_departments(self) -> list[Department]:
        """The account's user groups (GET /api/v4/account?with=users_groups)."""
        answer = self.rest.get("/api/v4/account", {"with": "users_groups"})
        groups = ((answer or {}).get("_embedded") or {}).get("users_groups") or []
        return [Department(id=_text(g.get("id")), name=_text(g.get("name"))) for g in groups if isinstance(g, dict)]

    def deal_url(self, deal_id: str) -> str:
        """The lead card."""
        return f"https://{self.domain}/leads/detail/{deal_id}"

    def notify(self, user_id: str, message: str, key: str = "", deal_id: str = "") -> None:
        """amoCRM has no notification API (reference/amocrm.md section 10): a notice about a lead is a common
        note on that lead plus a task for the user linked to it; any other notice is a task bound to nothing.
        Tasks have no tag, so `key` cannot make a resent notice replace the first one here."""
        [error] = self._send_notices([Notice(user_id, message, key, deal_id=deal_id)])
        if error is not None:
            raise error

    def notify_many(self, notices: Sequence[Notice]) -> None:
        """Several notices: their notes in lists of NOTICE_BATCH, then their tasks likewise (a digest goes out
        as its parts, each attached to its lead); raises the first error."""
        for error in self._send_notices(notices):
            if error is not None:
                raise error

    def _send_notices(self, notices: Sequence[Notice]) -> list[Exception | None]:
        """Every notice as notes on its lead (``POST /api/v4/leads/notes``, a list of ``note_type: common``) and
        tasks (``POST /api/v4/tasks``, a list; linked to the lead by ``entity_type: leads`` and ``entity_id``),
        NOTICE_BATCH to a request. A notice whose lead amoCRM refuses (deleted since) still reaches the user as
        a task bound to nothing. One entry per notice: None when it was sent, else the error."""
        items: list[tuple[int, Notice]] = []
        for index, notice in enumerate(notices):
            items += [(index, part) for part in notice.parts] if notice.parts else [(index, notice)]
        errors: dict[int, Exception] = {}
        attached: dict[int, bool] = {}
        noted = [number for number, (_, item) in enumerate(items) if item.deal_id.isdigit()]
        for start in range(0, len(noted), NOTICE_BATCH):
            chunk = noted[start : start + NOTICE_BATCH]
            try:
                self.rest.request("POST", "/api/v4/leads/notes", body=[self._notice_note(items[n][1]) for n in chunk])
            except (AmoValidationError, AmoNotFound):
                for number in chunk:  # one lead gone refuses the list: each note alone, so only it falls back
                    try:
                        self.rest.request("POST", "/api/v4/leads/notes", body=[self._notice_note(items[number][1])])
                    except (AmoValidationError, AmoNotFound):
                        attached[number] = False
                    except CrmError as error:
                        errors.setdefault(items[number][0], error)
                    else:
                        attached[number] = True
            except CrmError as error:
                for number in chunk:
                    errors.setdefault(items[number][0], error)
            else:
                attached.update(dict.fromkeys(chunk, True))
        tasks = [
            (index, self._notice_task(item.user_id, item.message, item.deal_id if attached.get(number) else ""))
            for number, (index, item) in enumerate(items)
            if index not in errors
        ]
        for start in range(0, len(tasks), NOTICE_BATCH):
            chunk_tasks = tasks[start : start + NOTICE_BATCH]
            try:
                self.rest.request("POST", "/api/v4/tasks", body=[task for _, task in chunk_tasks])
            except CrmError as error:
                for index, _ in chunk_tasks:
                    errors.setdefault(index, error)
        return [errors.get(index) for index in range(len(notices))]

    def update_deal_and_notify(
        self, deal_id: str, change: DealChange, notices: Sequence[Notice]
    ) -> list[Exception | None]:
        """The change, then every notice (its notes in one POST, its tasks in another); notices are not sent when
        the change failed."""
        try:
            self.update_deal(deal_id, change)
        except CrmError as error:
            return [error] * (1 + len(notices))
        if not notices:
            return [None]
        return [None, *self._send_notices(notices)]

    def write_deals(self, writes: Sequence[DealWrite]) -> list[WriteOutcome]:
        """The changes as PATCH /api/v4/leads of up to 50 leads each (should amoCRM refuse a list, its leads
        are sent one by one so that one bad lead fails alone), then the notices of every write whose change
        landed: their notes on the leads as POSTs of up to 50 notes, then their tasks as POSTs of up to 50 tasks
        (`_send_notices`). A PATCH that changed a lead fires one webhook back, stamped with the
        lead's new `updated_at`."""
        change_errors: dict[int, Exception | None] = {}
        stamps: dict[int, int] = {}
        patches: list[tuple[int, dict[str, Any]]] = []
        for index, write in enumerate(writes):
            if write.change is None:
                continue
            body = self.lead_patch(write.change)
            if not body:
                change_errors[index] = None
            elif write.change.stage_id in (WON, LOST) and "pipeline_id" not in body:
                try:  # the pipeline of a closing stage is read first (update_deal)
                    self.update_deal(write.deal_id, write.change)
                    change_errors[index] = None
                except CrmError as error:
                    change_errors[index] = error
            else:
                patches.append((index, {"id": int(write.deal_id), **body}))
        for start in range(0, len(patches), LEAD_PATCH_BATCH):
            chunk = patches[start : start + LEAD_PATCH_BATCH]
            if len(chunk) > 1:
                try:
                    answer = self.rest.request("PATCH", "/api/v4/leads", body=[body for _, body in chunk])
                except (AmoValidationError, AmoNotFound):
                    pass  # one bad lead refuses the list: each lead alone below, so only it fails
                except CrmError as error:
                    for index, _ in chunk:
                        change_errors[index] = error
                    continue
                else:
                    rows = ((answer or {}).get("_embedded") or {}).get("leads") if isinstance(answer, dict) else None
                    updated = {
                        _int(row.get("id")): _int(row.get("updated_at")) for row in rows or [] if isinstance(row, dict)
                    }
                    for index, body in chunk:
                        change_errors[index] = None
                        if stamp := updated.get(body["id"]):
                            stamps[index] = stamp
                    continue
            for index, body in chunk:  # one lead: its own address (amoCRM answers with the lead itself)
                fields = {key: value for key, value in body.items() if key != "id"}
                try:
                    single = self.rest.request("PATCH", f"/api/v4/leads/{body['id']}", body=fields)
                except CrmError as error:
                    change_errors[index] = error
                    continue
                change_errors[index] = None
                if isinstance(single, dict) and (stamp := _int(single.get("updated_at"))):
                    stamps[index] = stamp
        notices = [
            (index, number, notice)
            for index, write in enumerate(writes)
            if change_errors.get(index) is None
            for number, notice in enumerate(write.notices)
        ]
        sent = self._send_notices([notice for _, _, notice in notices])
        notice_errors = {(index, number): error for (index, number, _), error in zip(notices, sent, strict=True)}
        outcomes = []
        for index, write in enumerate(writes):
            change_error = change_errors.get(index)
            errors: list[Exception | None] = [change_error] if write.change is not None else []
            errors += [
                change_error if change_error is not None else notice_errors.get((index, number))
                for number in range(len(write.notices))
            ]
            echo = EchoWindow(stamps[index], stamps[index]) if index in stamps else None
            outcomes.append(WriteOutcome(tuple(errors), echo))
        return outcomes

    def _notice_task(self, user_id: str, message: str, deal_id: str = "") -> dict[str, Any]:
        """A notice's task: bound to nothing, or linked to its lead and marked as the app's notice (so it never
        counts as the lead's next step nor as its overdue task)."""
        deadline = datetime.now(UTC) + timedelta(hours=NOTICE_TASK_HOURS)
        task: dict[str, Any] = {
            "text": message,
            "complete_till": int(deadline.timestamp()),
            "responsible_user_id": int(user_id),
            "task_type_id": TASK_TYPE_CALL,
        }
        if deal_id:
            task.update(text=f"{message}\n{NOTICE_MARK}", entity_type="leads", entity_id=int(deal_id))
        return task

    @staticmethod
    def _notice_note(notice: Notice) -> dict[str, Any]:
        return {"entity_id": int(notice.deal_id), "note_type": "common", "params": {"text": notice.message}}

    # ---- tasks

    def create_task(self, task: NewTask) -> str:
        """POST /api/v4/tasks linked to the lead; returns the task id."""
        answer = self.rest.request("POST", "/api/v4/tasks", body=[self._task_item(task)])
        created = ((answer or {}).get("_embedded") or {}).get("tasks") or [] if isinstance(answer, dict) else []
        if not created or not created[0].get("id"):
            raise CrmError("POST /api/v4/tasks answered without a task id")
        return _text(created[0]["id"])

    def create_tasks(self, tasks: Sequence[NewTask]) -> list[str | Exception]:
        """POST /api/v4/tasks of up to 50 tasks each; the answer names each created task by its `request_id`.
        Should amoCRM refuse a list (one task it will not take refuses them all), its tasks are posted one by
        one, so that only that task fails."""
        outcomes: list[str | Exception] = []
        for start in range(0, len(tasks), NOTICE_BATCH):
            chunk = tasks[start : start + NOTICE_BATCH]
            body = [{**self._task_item(task), "request_id": str(number)} for number, task in enumerate(chunk)]
            try:
                answer = self.rest.request("POST", "/api/v4/tasks", body=body) if len(chunk) > 1 else None
            except (AmoValidationError, AmoNotFound):
                answer = None
            except CrmError as error:
                outcomes += [error] * len(chunk)
                continue
            rows = ((answer or {}).get("_embedded") or {}).get("tasks") if isinstance(answer, dict) else None
            ids = {_text(row.get("request_id")): _text(row.get("id")) for row in rows or [] if isinstance(row, dict)}
            for number, task in enumerate(chunk):
                if ids.get(str(number)):
                    outcomes.append(ids[str(number)])
                    continue
                try:
                    outcomes.append(self.create_task(task))
                except CrmError as error:
                    outcomes.append(error)
        return outcomes

    def complete_tasks(self, completions: Sequence[TaskCompletion]) -> list[Exception | None]:
        """PATCH /api/v4/tasks of up to 50 tasks each with ``{id, is_completed, result}`` (a to-do is a task here).
        amoCRM takes such a list all or nothing: when it refuses one (a task deleted meanwhile), each task of
        the list is completed alone, as `complete_task` does."""
        outcomes: list[Exception | None] = []
        for start in range(0, len(completions), NOTICE_BATCH):
            chunk = completions[start : start + NOTICE_BATCH]
            body = []
            for completion in chunk:
                item: dict[str, Any] = {"id": int(completion.task_id), "is_completed": True}
                if completion.result:
                    item["result"] = {"text": completion.result}
                body.append(item)
            if len(chunk) > 1:
                try:
                    self.rest.request("PATCH", "/api/v4/tasks", body=body)
                except (AmoValidationError, AmoNotFound):
                    pass  # one by one below
                except CrmError as error:
                    outcomes += [error] * len(chunk)
                    continue
                else:
                    outcomes += [None] * len(chunk)
                    continue
            for completion in chunk:
                try:
                    self.complete_task(completion.task_id, completion.result)
                    outcomes.append(None)
                except CrmError as error:
                    outcomes.append(error)
        return outcomes

    def _task_item(self, task: NewTask) -> dict[str, Any]:
        text = task.title if not task.description else f"{task.title}\n{task.description}"
        item: dict[str, Any] = {
            "text": text,
            "complete_till": int(task.deadline.timestamp()),
            "entity_type": "leads",
            "entity_id": int(task.deal_id),
            "responsible_user_id": int(task.responsible_id),
            "task_type_id": TASK_TYPE_CALL,
        }
        if task.created_by:
            item["created_by"] = int(task.created_by)
        return item

    def create_todo(self, todo: NewTodo) -> str:
        """A to-do is a task of type 1 ("call") for the user on the lead, due at the deadline
        (``POST /api/v4/tasks``); returns the task id."""
        text = todo.title if not todo.description else f"{todo.title}\n{todo.description}"
        item = {
            "text": text,
            "complete_till": int(todo.deadline.timestamp()),
            "entity_type": "leads",
            "entity_id": int(todo.deal_id),
            "responsible_user_id": int(todo.responsible_id),
            "task_type_id": TASK_TYPE_CALL,
        }
        answer = self.rest.request("POST", "/api/v4/tasks", body=[item])
        created = ((answer or {}).get("_embedded") or {}).get("tasks") or [] if isinstance(answer, dict) else []
        if not created or not created[0].get("id"):
            raise CrmError("POST /api/v4/tasks answered without a task id")
        return _text(created[0]["id"])

    def complete_task(self, task_id: str, result: str = "") -> None:
        """PATCH /api/v4/tasks/{id} with ``{is_completed: true, result: {text}}`` (reference/amocrm.md, tasks).
        A task that no longer exists (404) is left alone; when amoCRM refuses the change, the task is read
        back and an already completed one is fine."""
        body: dict[str, Any] = {"is_completed": True}
        if result:
            body["result"] = {"text": result}
        try:
            self.rest.request("PATCH", f"/api/v4/tasks/{int(task_id)}", body=body)
        except AmoNotFound:
            return
        except AmoValidationError:
            if self._task_still_open(task_id):
                raise

    def complete_todo(self, todo_id: str, result: str = "") -> None:
        """A to-do is a task here (see `create_todo`): completed as one."""
        self.complete_task(todo_id, result)

    def _task_still_open(self, task_id: str) -> bool:
        answer = self.rest.get("/api/v4/tasks", {"filter": {"id": [int(task_id)]}})
        rows = ((answer or {}).get("_embedded") or {}).get("tasks") or [] if isinstance(answer, dict) else []
        return any(isinstance(row, dict) and not row.get("is_completed") for row in rows)

    def list_deal_tasks(self, deal_id: str) -> list[Task]:
        """Tasks of the lead (``filter[entity_type]=leads&filter[entity_id][]``), not the app's notices."""
        params = {"filter": {"entity_type": "leads", "entity_id": [int(deal_id)]}}
        return [
            Task(
                id=_text(row.get("id")),
                title=_text(row.get("text")),
                responsible_id=_text(row.get("responsible_user_id")),
                deal_id=deal_id,
                deadline=_ts(row.get("complete_till")),
                is_open=not bool(row.get("is_completed")),
                created_by=_text(row.get("created_by")) or None,
            )
            for row in self.rest.iter_pages("/api/v4/tasks", "tasks", params)
            if not is_notice_task(row)
        ]

    # ---- task control

    OPEN_LEAD_TASKS: Mapping[str, Any] = {"entity_type": "leads", "is_completed": 0}

    @staticmethod
    def _open_task(row: Mapping[str, Any], now: datetime) -> Task | None:
        """An open task of ``GET /api/v4/tasks`` bound to a lead; None for any other (a notice bound to
        nothing, a contact's task, a completed one).

        amoCRM tasks have one text and no title: the first line of the text is the title. There are no
        auditors and no "overdue" flag: a task is overdue once ``complete_till`` (unix seconds, the exact
        end of an all-day task too) has passed.
        """
        lead_id = _int(row.get("entity_id"))
        if row.get("entity_type") != "leads" or not lead_id or row.get("is_completed") or is_notice_task(row):
            return None
        deadline = _ts(row.get("complete_till"))
        lines = _text(row.get("text")).strip().splitlines()
        created_by = _int(row.get("created_by"))
        return Task(
            id=_text(row.get("id")),
            title=(lines[0] if lines else "")[:TASK_TITLE_LENGTH],
            responsible_id=_text(row.get("responsible_user_id")),
            deal_id=str(lead_id),
            deadline=deadline,
            is_open=True,
            created_by=str(created_by) if created_by else None,
            overdue=deadline is not None and deadline < now,
        )

    def open_deal_tasks(self, deal_id: str) -> list[Task]:
        """Open tasks of one lead: ``filter[entity_type]=leads&filter[entity_id][]=ID&filter[is_completed]=0``
        (the filter names of the official SDK's TasksFilter), one request unless it has over 250."""
        params = {"filter": {**self.OPEN_LEAD_TASKS, "entity_id": [int(deal_id)]}, "order": {"id": "asc"}}
        now = datetime.now(UTC)
        return [
            task
            for row in self.rest.iter_pages("/api/v4/tasks", "tasks", params)
            if (task := self._open_task(row, now)) is not None and task.deal_id == str(int(deal_id))
        ]

    def _working_status_chunks(self) -> list[list[dict[str, int]]]:
        """``filter[statuses]`` pairs of every working status (not 142/143, not Incoming leads), in chunks."""
        pairs = [
            {"pipeline_id": int(pipeline_id), "status_id": status_id}
            for pipeline_id, statuses in sorted(self._open_status_types().items(), key=lambda item: int(item[0]))
            for status_id, status_type in statuses
            if status_type != STATUS_INCOMING
        ]
        return [pairs[start : start + STATUS_FILTER_CHUNK] for start in range(0, len(pairs), STATUS_FILTER_CHUNK)]

    def iter_open_work(self) -> Iterator[Task | Deal]:
        """Every open task bound to a lead, then every open lead, 250 a page, one page in memory at a time.

        Tasks: ``GET /api/v4/tasks?filter[entity_type]=leads&filter[is_completed]=0&order[id]=asc``. Leads:
        ``GET /api/v4/leads`` with ``filter[statuses]`` naming each working status of each pipeline (read
        once from the pipelines), so closed leads are never read; leads in Incoming leads are requests waiting
        to be accepted or declined, not deals in work, and are left out. Paging stops at a 204 or a short page;
        every request takes a slot from the account's shared limiter. amoCRM pages by offset only (no id
        range filter), so a task completed while the scan reads can shift one row past a page boundary.
        """
        now = datetime.now(UTC)
        params = {"filter": dict(self.OPEN_LEAD_TASKS), "order": {"id": "asc"}}
        for row in self.rest.iter_pages("/api/v4/tasks", "tasks", params):
            task = self._open_task(row, now)
            if task is not None:
                yield task
        for chunk in self._working_status_chunks():
            for raw in self.rest.iter_pages(
                "/api/v4/leads", "leads", {"filter": {"statuses": chunk}, "order": {"id": "asc"}}
            ):
                if _text(raw.get("status_id")) not in (WON, LOST):
                    yield self.deal_from_raw(raw)

    # ---- calls

    # ---- clients (the repeat-client rule)

    @staticmethod
    def _client(entity: str, raw: Mapping[str, Any]) -> Client:
        return Client(
            kind="company" if entity == "companies" else "contact",
            id=_text(raw.get("id")),
            responsible_id=_text(raw.get("responsible_user_id")),
            created_at=_ts(raw.get("created_at")),
        )

    @staticmethod
    def _communications(rows: Sequence[Mapping[str, Any]]) -> list[str]:
        values: list[str] = []
        for row in rows:
            for field in row.get("custom_fields_values") or []:
                if not isinstance(field, Mapping) or field.get("field_code") not in ("PHONE", "EMAIL"):
                    continue
                for item in field.get("values") or []:
                    value = _text(item.get("value")) if isinstance(item, Mapping) else ""
                    if value and value not in values:
                        values.append(value)
        return values

    @staticmethod
    def _linked_leads(rows: Sequence[Mapping[str, Any]]) -> list[int]:
        ids: list[int] = []
        for row in rows:
            for lead in _mapping(row.get("_embedded")).get("leads") or []:
                lead_id = _int(_mapping(lead).get("id"))
                if lead_id is not None and lead_id not in ids:
                    ids.append(lead_id)
        return ids

    def client_history(self, deal_id: str) -> ClientHistory:
        """The lead's contacts and company (``GET /api/v4/leads/{id}?with=contacts``), read with their leads
        (``GET /api/v4/contacts|companies?filter[id][]=…&with=leads``); others found by the first phones and
        e-mails (``query=…``, which searches every filled field); then the open ones of all their leads
        (``GET /api/v4/leads?filter[id][]=…``)."""
        lead = self.rest.get(f"/api/v4/leads/{int(deal_id)}", {"with": "contacts"})
        embedded = _mapping(_mapping(lead).get("_embedded"))
        wanted = {
            "contacts": [i for c in embedded.get("contacts") or [] if (i := _int(_mapping(c).get("id"))) is not None],
            "companies": [i for c in embedded.get("companies") or [] if (i := _int(_mapping(c).get("id"))) is not None],
        }
        own: dict[str, list[dict[str, Any]]] = {"contacts": [], "companies": []}
        for entity, ids in wanted.items():
            if ids:
                params = {"filter": {"id": ids[:BATCH_IDS]}, "with": "leads"}
                own[entity] = list(self.rest.iter_pages(f"/api/v4/{entity}", entity, params))
        seen = {(entity, _text(row.get("id"))) for entity, rows in own.items() for row in rows}
        duplicates: dict[str, list[dict[str, Any]]] = {"contacts": [], "companies": []}
        for value in self._communications([*own["contacts"], *own["companies"]])[:CLIENT_SEARCHES]:
            for entity in ("contacts", "companies"):
                for row in self.rest.iter_pages(f"/api/v4/{entity}", entity, {"query": value, "with": "leads"}):
                    key = (entity, _text(row.get("id")))
                    if key not in seen:
                        seen.add(key)
                        duplicates[entity].append(row)
        every = [*own["contacts"], *own["companies"], *duplicates["contacts"], *duplicates["companies"]]
        lead_ids = [lead_id for lead_id in self._linked_leads(every) if str(lead_id) != str(deal_id)]
        open_deals = [
            deal for deal in self.get_deals([str(i) for i in lead_ids]).values() if deal.stage_semantics == "process"
        ]
        return ClientHistory(
            own=tuple(self._client(entity, row) for entity in ("contacts", "companies") for row in own[entity]),
            duplicates=tuple(
                self._client(entity, row) for entity in ("contacts", "companies") for row in duplicates[entity]
            ),
            open_deals=tuple(open_deals),
        )

    def list_deal_calls(self, deal_id: str) -> list[Call]:
        """Call notes of the lead (call_in / call_out); ``params.link`` is the recording."""
        params = {"filter": {"note_type": ["call_in", "call_out"]}}
        calls = []
        for note in self.rest.iter_pages(f"/api/v4/leads/{int(deal_id)}/notes", "notes", params):
            info = _mapping(note.get("params"))
            responsible = _int(info.get("call_responsible")) or _int(note.get("responsible_user_id"))
            calls.append(
                Call(
                    id=_text(note.get("id")),
                    deal_id=deal_id,
                    user_id=str(responsible) if responsible else None,
                    direction="in" if note.get("note_type") == "call_in" else "out",
                    started_at=_ts(note.get("created_at")),
                    duration_seconds=_int(info.get("duration")) or 0,
                    recording_url=_text(info.get("link")) or None,
                    phone=_text(info.get("phone")),
                )
            )
        return calls

    def open_recording(self, call: Call) -> Recording:
        """Stream the recording the call note links to (``params.link``); see `AmoRest.download` for which
        hosts are fetched and how."""
        if not call.recording_url:
            raise AmoNotFound("the call has no recording", http_status=404)
        response = self.rest.download(call.recording_url)
        length = response.headers.get("Content-Length")
        return Recording(
            content_type=(response.headers.get("Content-Type") or "application/octet-stream").split(";", 1)[0],
            chunks=response.iter_content(chunk_size=64 * 1024),
            close=response.close,
            length=int(length) if length and length.isdigit() else None,
        )

    # ---- notes

    def add_note(self, deal_id: str, text: str) -> str:
        """A common note on the lead (``POST /api/v4/leads/notes``, note_type "common"); returns its id."""
        item = {"entity_id": int(deal_id), "note_type": "common", "params": {"text": text}}
        answer = self.rest.request("POST", "/api/v4/leads/notes", body=[item])
        created = ((answer or {}).get("_embedded") or {}).get("notes") or [] if isinstance(answer, dict) else []
        if not created or not created[0].get("id"):
            raise CrmError("POST /api/v4/leads/notes answered without a note id")
        return _text(created[0]["id"])

    def find_note(self, deal_id: str, text: str) -> str | None:
        """The id of a common note on the lead with exactly this text, if there is one."""
        params = {"filter": {"note_type": ["common"]}}
        for note in self.rest.iter_pages(f"/api/v4/leads/{int(deal_id)}/notes", "notes", params):
            info = _mapping(note.get("params"))
            if _text(info.get("text")) == text:
                return _text(note.get("id"))
        return None

    def time_zone(self) -> CrmTimeZone:
        """``GET /api/v4/account?with=datetime_settings``: ``timezone`` (an IANA name) and ``timezone_offset``
        (``+07:00``)."""
        answer = _mapping(self.rest.get("/api/v4/account", {"with": "datetime_settings"}))
        settings = _mapping(answer.get("datetime_settings"))
        name = str(settings.get("timezone") or "") or None
        return CrmTimeZone(name, _offset(settings.get("timezone_offset")))
