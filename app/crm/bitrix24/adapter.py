"""Bitrix24: `Bitrix24Crm`, the CrmClient port on a portal, and the decoding of Bitrix24 values."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from app.core.models import Portal
from app.core.timezones import portal_zone
from app.crm.bitrix24.batch import BATCH_LIMIT, PAGE_SIZE, BatchResult, ListStream, result_rows
from app.crm.bitrix24.client import Bitrix24Rest, audio_type
from app.crm.days import parse_day
from app.crm.errors import (
    Bitrix24AuthError,
    Bitrix24Error,
    Bitrix24Throttled,
    CrmError,
    InternalServerError,
    NotFound,
)
from app.crm.port import (
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

# The event a write sends back leaves the portal's queue within the batch request's own time, or a little
# after it (`ts` has whole seconds); later than this it is read like any other event.
ECHO_SLACK_SECONDS = 2

DEAL_ENTITY_TYPE_ID = 2
CALL_ACTIVITY_TYPE_ID = 2
TASK_COMPLETED = "5"


@dataclass
class _WritePlan:
    """One DealWrite as batch commands: its change's keys first, then its notices' keys."""

    index: int
    write: DealWrite
    commands: dict[str, tuple[str, Mapping[str, Any] | None]]
    notices: list[str] = field(default_factory=list)

    @property
    def update(self) -> list[str]:
        return [key for key in self.commands if key not in self.notices]


def _not_run(plan: _WritePlan) -> WriteOutcome:
    error = CrmError("the batch ran none of the write's commands")
    return WriteOutcome(tuple(error for _ in range((plan.write.change is not None) + len(plan.notices))))


def notice_tag(key: str) -> str:
    """The im.notify TAG for a notice key: short, unique per key, recognisably ours."""
    return "RC|" + hashlib.sha1(key.encode()).hexdigest()[:32]  # noqa: S324 - a tag, not a secret


# ---------------------------------------------------------------- value decoding


_SEMANTICS: dict[str, StageSemantics] = {"P": "process", "S": "success", "F": "failure"}


def _text(value: Any) -> str:
    if value is None or value is False:
        return ""
    if isinstance(value, list):
        return _text(value[0]) if value else ""
    return str(value)


def _mapping(value: Any) -> Mapping[str, Any]:
    """`value` when Bitrix24 sent an object, else an empty one (a missing or malformed part of an answer)."""
    return value if isinstance(value, dict) else {}


def _optional_id(value: Any) -> str | None:
    text = _text(value)
    return text if text and text != "0" else None


def parse_decimal(value: Any) -> Decimal | None:
    """A Bitrix24 number or money value ("1000.00", "100|RUB") as a Decimal; None when empty."""
    text = _text(value).split("|", 1)[0].strip()
    if not text:
        return None
    try:
        return Decimal(text)
    except InvalidOperation as error:
        raise CrmError(f"not a number: {text!r}") from error


def parse_datetime(value: Any, default_tz: ZoneInfo | None = None) -> datetime | None:
    """An ISO 8601 date-time from Bitrix24 as an aware datetime (naive ones get the portal's zone)."""
    text = _text(value)
    if not text:
        return None
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=default_tz or UTC)
    return parsed


def field_values(raw: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Every field of a crm.deal.get / crm.deal.list row as its non-empty values in text (a multiple field's
    list item by item; a file or other object as "1": it is there)."""
    values: dict[str, tuple[str, ...]] = {}
    for code, value in raw.items():
        items = value if isinstance(value, list) else [value]
        texts = tuple(
            "1" if isinstance(item, dict) else str(item).strip()
            for item in items
            if item is not None and item is not False and (isinstance(item, dict) or str(item).strip())
        )
        if texts:
            values[str(code)] = texts
    return values


# crm.deal.fields types (and user field types) by how a requirement checks them; any other type: not blank.
_FIELD_KINDS: dict[str, FieldKind] = {
    "integer": "number",
    "double": "number",
    "money": "money",
    "date": "date",
    "datetime": "date",
    "enumeration": "enum",
    "crm_status": "enum",
    "crm_currency": "enum",
    "iblock_element": "enum",
    "iblock_section": "enum",
    "boolean": "boolean",
    "char": "boolean",
    "user": "link",
    "employee": "link",
    "crm": "link",
    "crm_company": "link",
    "crm_contact": "link",
    "crm_lead": "link",
    "crm_quote": "link",
    "crm_deal": "link",
}
# Fields a person never fills in on the card (the stage itself, the pipeline, the contacts list that
# crm.deal.get does not return, the "amount typed by hand" flag the card sets itself and crm.deal.fields titles
# only by its code), besides those crm.deal.fields marks read-only.
_NOT_REQUIRABLE = frozenset(
    {"STAGE_ID", "CATEGORY_ID", "CONTACT_IDS", "CONTACT_ID", "IS_RECURRING", "IS_MANUAL_OPPORTUNITY"}
)


def deal_fields_from(answer: Any) -> list[DealField]:
    """crm.deal.fields' answer as fields: a user field's label is its form label (its `title` is its
    FIELD_NAME), a standard field's its `title`."""
    found: list[DealField] = []
    for code, spec in _mapping(answer).items():
        spec = _mapping(spec)
        if not spec or spec.get("isReadOnly") is True or code in _NOT_REQUIRABLE:
            continue
        label = next(
            (_text(spec.get(key)).strip() for key in ("formLabel", "listLabel", "filterLabel", "title")
             if _text(spec.get(key)).strip()),
            code,
        )  # fmt: skip
        kind = _FIELD_KINDS.get(_text(spec.get("type")), "string")
        found.append(DealField(code=str(code), label=label, kind=kind, multiple=spec.get("isMultiple") is True))
    return found


def _refused(error: Bitrix24Error) -> bool:
    """The portal answered and refused this one call (not found, not allowed): not a failure to retry."""
    return not isinstance(error, Bitrix24AuthError | Bitrix24Throttled | InternalServerError)


def _server_offset(value: Any) -> timedelta | None:
    """The UTC offset of ``server.time``'s answer (``YYYY-MM-DDThh:mm:ss±hh:mm``)."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment.utcoffset()


def stage_entity(pipeline_id: str) -> str:
    """crm.status ENTITY_ID of a funnel's deal stages."""
    return "DEAL_STAGE" if pipeline_id == "0" else f"DEAL_STAGE_{pipeline_id}"


def _min_sort(statuses: Sequence[Mapping[str, Any]]) -> int:
    return min(int(_text(s.get("SORT")) or 0) for s in statuses)


def _sort_before_final(statuses: Sequence[Mapping[str, Any]]) -> int:
    """A SORT value after the last in-progress stage and before the first final one."""
    final = [int(_text(s.get("SORT")) or 0) for s in statuses if s.get("SEMANTICS") in ("S", "F")]
    progress = [int(_text(s.get("SORT")) or 0) for s in statuses if s.get("SEMANTICS") not in ("S", "F")]
    if final:
        before = min(final)
        after = max([p for p in progress if p < before], default=before - 10)
        return (after + before) // 2 if before - after > 1 else before - 1
    return max(progress, default=0) + 10


# ---------------------------------------------------------------- the adapter


class Bitrix24Crm:
    """The CrmClient port for a Bitrix24 portal."""

    DEAL_SELECT = ("*", "UF_*")

    def __init__(self, portal: Portal, rest: Bitrix24Rest | None = None) -> None:
        self.portal_id = portal.id
        self.rest = rest or Bitrix24Rest(portal.id)
        self.tz = portal_zone(portal)
        self.domain = portal.domain
        self.offline_events = bool((portal.settings or {}).get("offline_events"))
        fields = (portal.settings or {}).get("b24_fields") or {}
        self._field: dict[str, str] = {name: str(spec.get("field") or "") for name, spec in fields.items()}
        self._enum: dict[str, dict[str, str]] = {
            name: {str(code): str(item) for code, item in (spec.get("enum") or {}).items()}
            for name, spec in fields.items()
        }
        self._enum_codes: dict[str, dict[str, str]] = {
            name: {item: code for code, item in mapping.items()} for name, mapping in self._enum.items()
        }
        self._reasons_loaded = False

    # ---- custom fields

    def _load_reason_items(self) -> None:
        """The portal's refusal reasons and their field items (the app's table), read once per client."""
        if self._reasons_loaded:
            return
        self._reasons_loaded = True
        rows = stored_reason_items(self.portal_id)
        mapping = self._enum.setdefault("refusal_reason", {})
        codes = self._enum_codes.setdefault("refusal_reason", {})
        for code, item in rows:
            mapping[str(code)] = str(item)
            codes[str(item)] = str(code)

    def _decode_enum(self, name: str, raw: Mapping[str, Any]) -> str | None:
        field_name = self._field.get(name)
        if not field_name:
            return None
        item = _text(raw.get(field_name))
        if not item:
            return None
        if name == "refusal_reason":
            self._load_reason_items()
        code = self._enum_codes.get(name, {}).get(item)
        if code is None and name == "refusal_reason":
            return reason_code_for_item(item)  # an item an admin added in the CRM: the domain adopts it
        if code is None:
            log.warning("unknown enum item", extra={"portal_id": self.portal_id, "field": field_name, "item": item})
        return code

    def _encode_enum(self, name: str, code: str) -> str:
        if code == "":
            return ""
        if name == "refusal_reason":
            self._load_reason_items()
        try:
            return self._enum[name][code]
        except KeyError as error:
            item = item_of_reason_code(code) if name == "refusal_reason" else None
            if item is not None:
                return item
            raise CrmError(f"{name} code {code!r} is not installed on portal {self.portal_id}") from error

    def _reason_field_row(self) -> Mapping[str, Any]:
        field_name = self._require_field("refusal_reason")
        found = self.rest.call("crm.deal.userfield.list", {"filter": {"FIELD_NAME": field_name}})
        rows = found if isinstance(found, list) else list(found.values()) if isinstance(found, dict) else []
        if not rows or not isinstance(rows[0], dict):
            raise NotFound(f"the field {field_name} is gone from portal {self.portal_id}", code="")
        return rows[0]

    @staticmethod
    def _options(field: Mapping[str, Any]) -> list[FieldOption]:
        items = field.get("LIST")
        rows = items if isinstance(items, list) else list(items.values()) if isinstance(items, dict) else []
        options = [
            FieldOption(
                id=_text(item.get("ID")),
                name=_text(item.get("VALUE")),
                sort=int(_text(item.get("SORT")) or 0),
                code=_text(item.get("XML_ID")),
            )
            for item in rows
            if isinstance(item, dict) and _text(item.get("ID"))
        ]
        options.sort(key=lambda option: (option.sort, int(option.id) if option.id.isdigit() else 0))
        return options

    def list_reason_options(self) -> list[FieldOption]:
        """The enumeration items of the reason field (crm.deal.userfield.list, LIST)."""
        return self._options(self._reason_field_row())

    def save_reason_options(self, options: Sequence[FieldOption]) -> list[FieldOption]:
        """crm.deal.userfield.update with LIST: `{ID, VALUE, SORT}` edits an item, an entry without ID adds
        one (XML_ID = our code); items not named are listed by ID alone so they stay as they are."""
        field = self._reason_field_row()
        current = {option.id for option in self._options(field)}
        named = {option.id for option in options if option.id}
        entries: list[dict[str, Any]] = []
        for option in options:
            if option.id and option.id in current:
                entries.append({"ID": option.id, "VALUE": option.name, "SORT": option.sort})
            elif not option.id:
                entries.append({"VALUE": option.name, "SORT": option.sort, "XML_ID": option.code, "DEF": "N"})
        entries.extend({"ID": item} for item in sorted(current - named))
        self.rest.call("crm.deal.userfield.update", {"id": _text(field.get("ID")), "fields": {"LIST": entries}})
        self._reasons_loaded = False
        return self.list_reason_options()

    def _require_field(self, name: str) -> str:
        field_name = self._field.get(name)
        if not field_name:
            raise CrmError(f"custom field {name} is not installed on portal {self.portal_id}")
        return field_name

    # ---- deals

    def deal_from_raw(self, raw: Mapping[str, Any]) -> Deal:
        """Decode a crm.deal.get / crm.deal.list row."""
        comment_field = self._field.get("refusal_comment")
        cpl_field = self._field.get("cpl")
        return Deal(
            id=_text(raw.get("ID")),
            title=_text(raw.get("TITLE")),
            pipeline_id=_text(raw.get("CATEGORY_ID")) or "0",
            stage_id=_text(raw.get("STAGE_ID")),
            stage_semantics=_SEMANTICS.get(_text(raw.get("STAGE_SEMANTIC_ID")), "process"),
            responsible_id=_text(raw.get("ASSIGNED_BY_ID")),
            modified_by_id=_optional_id(raw.get("MODIFY_BY_ID")),
            modified_at=parse_datetime(raw.get("DATE_MODIFY"), self.tz),
            created_at=parse_datetime(raw.get("DATE_CREATE"), self.tz),
            amount=parse_decimal(raw.get("OPPORTUNITY")) or Decimal("0"),
            currency=_text(raw.get("CURRENCY_ID")),
            source_id=_text(raw.get("SOURCE_ID")),
            refusal_reason=self._decode_enum("refusal_reason", raw),
            refusal_comment=_text(raw.get(comment_field)) if comment_field else "",
            qa_verdict=self._decode_enum("qa_verdict", raw),
            cpl=parse_decimal(raw.get(cpl_field)) if cpl_field else None,
            moved_by_id=_optional_id(raw.get("MOVED_BY_ID")),
            moved_at=parse_datetime(raw.get("MOVED_TIME"), self.tz),
            last_activity_at=parse_datetime(raw.get("LAST_ACTIVITY_TIME"), self.tz),
            abc_need=self._decode_enum("abc_need", raw),
            abc_budget=self._decode_enum("abc_budget", raw),
            abc_urgency=self._decode_enum("abc_urgency", raw),
            abc_class=self._decode_enum("abc_class", raw),
            values=field_values(raw),
            postpone_reason=self._decode_enum("postpone_reason", raw),
            postpone_date=self._decode_day("postpone_date", raw),
        )

    def _decode_day(self, name: str, raw: Mapping[str, Any]) -> date | None:
        field_name = self._field.get(name)
        return parse_day(raw.get(field_name), self.tz) if field_name else None

    def get_deal(self, deal_id: str) -> Deal:
        """Re-read one deal."""
        raw = self.rest.call("crm.deal.get", {"id": deal_id})
        if not isinstance(raw, dict) or not raw:
            raise NotFound(f"deal {deal_id} not found", code="")
        return self.deal_from_raw(raw)

    def get_deals(self, deal_ids: Sequence[str]) -> dict[str, Deal]:
        """Many deals: one crm.deal.list per 50 ids, up to 50 lists per batch request."""
        ids = list(dict.fromkeys(str(deal_id) for deal_id in deal_ids))
        commands: dict[str, tuple[str, Mapping[str, Any] | None]] = {
            f"d{n}": (
                "crm.deal.list",
                {"filter": {"@ID": ids[i : i + PAGE_SIZE]}, "select": list(self.DEAL_SELECT), "start": -1},
            )
            for n, i in enumerate(range(0, len(ids), PAGE_SIZE))
        }
        if not commands:
            return {}
        result = self.rest.batch(commands)
        deals: dict[str, Deal] = {}
        for key in commands:
            for raw in result_rows(result.get(key), None):
                deal = self.deal_from_raw(raw)
                deals[deal.id] = deal
        return deals

    def deal_update_fields(self, change: DealChange) -> dict[str, Any]:
        """The crm.deal.update ``fields`` for a change (stage within a pipeline included)."""
        fields: dict[str, Any] = {}
        if change.stage_id is not None and change.pipeline_id is None:
            fields["STAGE_ID"] = change.stage_id
        if change.responsible_id is not None:
            fields["ASSIGNED_BY_ID"] = change.responsible_id
        if change.refusal_reason is not None:
            fields[self._require_field("refusal_reason")] = self._encode_enum("refusal_reason", change.refusal_reason)
        if change.refusal_comment is not None:
            fields[self._require_field("refusal_comment")] = change.refusal_comment
        if change.qa_verdict is not None:
            fields[self._require_field("qa_verdict")] = self._encode_enum("qa_verdict", change.qa_verdict)
        if change.abc_class is not None:
            fields[self._require_field("abc_class")] = self._encode_enum("abc_class", change.abc_class)
        return fields

    def _update_commands(self, deal_id: str, change: DealChange) -> dict[str, tuple[str, Mapping[str, Any] | None]]:
        fields = self.deal_update_fields(change)
        commands: dict[str, tuple[str, Mapping[str, Any] | None]] = {}
        if change.pipeline_id is not None:
            item_fields: dict[str, Any] = {"categoryId": change.pipeline_id}
            if change.stage_id is not None:
                item_fields["stageId"] = change.stage_id
            commands["move"] = (
                "crm.item.update",
                {"entityTypeId": DEAL_ENTITY_TYPE_ID, "id": deal_id, "fields": item_fields},
            )
        if fields:
            commands["update"] = ("crm.deal.update", {"id": deal_id, "fields": fields})
        return commands

    def update_deal(self, deal_id: str, change: DealChange) -> None:
        """Write a change: crm.deal.update, plus crm.item.update for a pipeline move (one batch if both)."""
        commands = self._update_commands(deal_id, change)
        if not commands:
            return
        if len(commands) == 1:
            method, params = next(iter(commands.values()))
            self.rest.call(method, params)
            return
        result = self.rest.batch(commands, halt=True)
        for key in commands:
            result.get(key)

    def iter_deals(self, *, modified_since: datetime | None = None, open_only: bool = False) -> Iterator[Deal]:
        """Stream deals oldest id first, 50 pages per request."""
        flt: dict[str, Any] = {}
        if modified_since is not None:
            if modified_since.tzinfo is None:
                raise ValueError("modified_since must be aware")
            flt[">=DATE_MODIFY"] = modified_since.isoformat(timespec="seconds")
        if open_only:
            flt["CLOSED"] = "N"
        params = {"filter": flt, "select": list(self.DEAL_SELECT)}
        for raw in self.rest.iter_list_batched("crm.deal.list", params):
            yield self.deal_from_raw(raw)

    def count_open_deals(self, responsible_id: str, pipeline_id: str) -> int:
        """crm.deal.list with a filter and one selected field: the answer's `total` is the count."""
        answer = self.rest.call_full(
            "crm.deal.list",
            {
                "filter": {"ASSIGNED_BY_ID": responsible_id, "CATEGORY_ID": pipeline_id, "CLOSED": "N"},
                "select": ["ID"],
                "start": 0,
            },
        )
        total = answer.get("total")
        if total is None:
            return len(result_rows(answer.get("result"), None))
        return int(total)

    # ---- pipelines

    def list_pipelines(self) -> list[Pipeline]:
        """Funnels (crm.category.list) with their stages (crm.status.list per funnel, one batch)."""
        answer = self.rest.call("crm.category.list", {"entityTypeId": DEAL_ENTITY_TYPE_ID})
        categories = result_rows(answer, "categories")
        if not categories:
            categories = [{"id": 0, "name": "", "isDefault": "Y"}]
        commands: dict[str, tuple[str, Mapping[str, Any] | None]] = {}
        for category in categories:
            category_id = _text(category.get("id")) or "0"
            entity_id = stage_entity(category_id)
            commands[f"c{category_id}"] = (
                "crm.status.list",
                {"order": {"SORT": "ASC"}, "filter": {"ENTITY_ID": entity_id}},
            )
        result = self.rest.batch(commands)
        pipelines = []
        for category in sorted(
            categories, key=lambda c: (int(_text(c.get("sort")) or 0), int(_text(c.get("id")) or 0))
        ):
            category_id = _text(category.get("id")) or "0"
            stages = [self._stage(row, category_id) for row in result_rows(result.get(f"c{category_id}"), None)]
            stages.sort(key=lambda stage: stage.sort)
            pipelines.append(
                Pipeline(
                    id=category_id,
                    name=_text(category.get("name")),
                    stages=tuple(stages),
                    is_default=category_id == "0" or _text(category.get("isDefault")) in ("Y", "True", "true", "1"),
                )
            )
        return pipelines

    def ensure_stage(self, pipeline_id: str, spec: StageSpec) -> str:
        """crm.status.list of the funnel's stages; crm.status.add of `spec.code` when it is not there (the
        portal prefixes it with ``C{funnel}:`` outside the general funnel)."""
        entity = stage_entity(pipeline_id)
        wanted = spec.code if pipeline_id == "0" else f"C{pipeline_id}:{spec.code}"
        statuses = result_rows(
            self.rest.call("crm.status.list", {"filter": {"ENTITY_ID": entity}, "order": {"SORT": "ASC"}}), None
        )
        if not any(_text(s.get("STATUS_ID")) == wanted for s in statuses):
            self.rest.call(
                "crm.status.add",
                {
                    "fields": {
                        "ENTITY_ID": entity,
                        "STATUS_ID": spec.code,
                        "NAME": spec.name,
                        "SORT": _sort_before_final(statuses),
                        "COLOR": spec.color,
                        "SEMANTICS": "",
                    }
                },
            )
        return wanted

    def order_stages(self, pipeline_id: str, stage_ids: Sequence[str]) -> None:
        """crm.status.list of the funnel; crm.status.update of the SORT of each named stage (then of the final
        stages, when the named ones would reach them) that is not where it should be."""
        entity = stage_entity(pipeline_id)
        statuses = result_rows(
            self.rest.call("crm.status.list", {"filter": {"ENTITY_ID": entity}, "order": {"SORT": "ASC"}}), None
        )
        by_id = {_text(s.get("STATUS_ID")): s for s in statuses}
        named = [by_id[stage_id] for stage_id in stage_ids if stage_id in by_id]
        final = [s for s in statuses if s.get("SEMANTICS") in ("S", "F")]
        others = [s for s in statuses if s not in named and s not in final]
        sort = max((int(_text(s.get("SORT")) or 0) for s in others), default=0)
        wanted: list[tuple[Mapping[str, Any], int]] = []
        for status in [*named, *(final if final and _min_sort(final) <= sort + 10 * len(named) else [])]:
            sort += 10
            wanted.append((status, sort))
        for target, value in wanted:
            if int(_text(target.get("SORT")) or 0) != value:
                self.rest.call("crm.status.update", {"id": _text(target.get("ID")), "fields": {"SORT": value}})

    @staticmethod
    def _stage(row: Mapping[str, Any], pipeline_id: str) -> Stage:
        semantics = _text(row.get("SEMANTICS"))
        extra = _mapping(row.get("EXTRA"))
        extra_semantics = _text(extra.get("SEMANTICS"))
        if semantics == "S" or extra_semantics == "success":
            kind: StageSemantics = "success"
        elif semantics == "F" or extra_semantics in ("failure", "apology"):
            kind = "failure"
        else:
            kind = "process"
        return Stage(
            id=_text(row.get("STATUS_ID")),
            pipeline_id=pipeline_id,
            name=_text(row.get("NAME")),
            sort=int(_text(row.get("SORT")) or 0),
            semantics=kind,
        )

    # ---- people

    def list_users(self) -> list[User]:
        """Every employee (user.get pages by 50)."""
        users = []
        for row in self.rest.iter_pages("user.get", {"FILTER": {"USER_TYPE": "employee"}}):
            name = " ".join(part for part in (_text(row.get("NAME")), _text(row.get("LAST_NAME"))) if part)
            departments = row.get("UF_DEPARTMENT") or []
            users.append(
                User(
                    id=_text(row.get("ID")),
                    name=name or _text(row.get("EMAIL")) or _text(row.get("ID")),
                    active=row.get("ACTIVE") in (True, "Y", "true", "1", 1),
                    department_ids=tuple(
                        _text(d) for d in (departments if isinstance(departments, list) else [departments])
                    ),
                )
            )
        return users

    def list_departments(self) -> list[Department]:
        """Every department (department.get)."""
        return [
            Department(
                id=_text(row.get("ID")),
                name=_text(row.get("NAME")),
                head_id=_optional_id(row.get("UF_HEAD")),
                parent_id=_optional_id(row.get("PARENT")),
            )
            for row in self.rest.iter_pages("department.get", {"sort": "ID", "order": "ASC"})
        ]

    OFFLINE_EVENTS = ("ONCRMDEALUPDATE", "ONCRMDEALADD", "ONCRMDEALMOVETOCATEGORY")

    def drain_deal_changes(self, handle: Callable[[list[str]], None]) -> int | None:
        """Drain the offline event queue (where the plan has it): reserve 50, handle, then clear them."""
        if not self.offline_events:
            return None
        drained = 0
        while True:
            answer = self.rest.call(
                "event.offline.get",
                {"filter": {"EVENT_NAME": list(self.OFFLINE_EVENTS)}, "clear": 0, "limit": PAGE_SIZE},
            )
            events = result_rows((answer or {}).get("events"), None)
            if not events:
                return drained
            deal_ids = []
            for event in events:
                data = event.get("EVENT_DATA")
                fields = data.get("FIELDS") if isinstance(data, dict) else None
                if isinstance(fields, dict) and fields.get("ID"):
                    deal_ids.append(_text(fields["ID"]))
            handle(sorted(set(deal_ids), key=lambda value: (len(value), value)))
            self.rest.call(
                "event.offline.clear",
                {"process_id": answer["process_id"], "id": [_text(event.get("ID")) for event in events]},
            )
            drained += len(events)
            if len(events) < PAGE_SIZE:
                return drained

    def list_sources(self) -> list[Source]:
        """Lead sources: crm.status.list with ENTITY_ID SOURCE, in SORT order."""
        answer = self.rest.call("crm.status.list", {"order": {"SORT": "ASC"}, "filter": {"ENTITY_ID": "SOURCE"}})
        return [
            Source(id=_text(row.get("STATUS_ID")), name=_text(row.get("NAME")) or _text(row.get("STATUS_ID")))
            for row in result_rows(answer, None)
            if _text(row.get("STATUS_ID"))
        ]

    def list_deal_fields(self) -> list[DealField]:
        """crm.deal.fields: the standard fields and the user fields (UF_CRM_…) with their labels, one call."""
        return deal_fields_from(self.rest.call("crm.deal.fields", {}))

    def stage_before(self, deal_id: str, stage_id: str) -> str | None:
        """The stage before the deal last entered `stage_id`, from crm.stagehistory.list (newest first)."""
        answer = self.rest.call(
            "crm.stagehistory.list",
            {
                "entityTypeId": DEAL_ENTITY_TYPE_ID,
                "filter": {"OWNER_ID": deal_id},
                "order": {"ID": "DESC"},
                "select": ["ID", "STAGE_ID", "CREATED_TIME"],
            },
        )
        items = result_rows(answer, "items")
        for index, item in enumerate(items):
            if _text(item.get("STAGE_ID")) == stage_id:
                for earlier in items[index + 1 :]:
                    if _text(earlier.get("STAGE_ID")) != stage_id:
                        return _text(earlier.get("STAGE_ID"))
                return None
        return None

    def deal_url(self, deal_id: str) -> str:
        """The deal card on the portal."""
        return f"https://{self.domain}/crm/deal/details/{deal_id}/"

    @staticmethod
    def _notify_params(user_id: str, message: str, key: str) -> dict[str, Any]:
        params: dict[str, Any] = {"USER_ID": user_id, "MESSAGE": message}
        if key:
            # TAG is unique within the app: a notice resent after a lost answer replaces the first one.
            params["TAG"] = notice_tag(key)
        return params

    def notify(self, user_id: str, message: str, key: str = "", deal_id: str = "") -> None:
        """A system notification to a user (im.notify.system.add); its text links the deal it is about."""
        self.rest.call("im.notify.system.add", self._notify_params(user_id, message, key))

    def update_deal_and_notify(
        self, deal_id: str, change: DealChange, notices: Sequence[Notice]
    ) -> list[Exception | None]:
        """The deal write and the notices in one batch request (halted at the first failed command)."""
        update = self._update_commands(deal_id, change)
        commands = dict(update)
        for index, notice in enumerate(notices):
            commands[f"n{index}"] = (
                "im.notify.system.add",
                self._notify_params(notice.user_id, notice.message, notice.key),
            )
        if not commands:
            return []
        result = self.rest.batch(commands, halt=True)
        change_error: Exception | None = None
        for key in update:
            if change_error is None:
                change_error = result.error(key) or (
                    None if key in result.result else CrmError(f"batch command {key!r} has no result")
                )
        outcomes: list[Exception | None] = [change_error]
        for index in range(len(notices)):
            key = f"n{index}"
            if change_error is not None:
                outcomes.append(change_error)
            elif key in result.result:
                outcomes.append(None)
            else:
                outcomes.append(result.error(key) or CrmError(f"batch command {key!r} was not run"))
        return outcomes

    def write_deals(self, writes: Sequence[DealWrite]) -> list[WriteOutcome]:
        """Every write's commands (crm.deal.update / crm.item.update, then its notices) packed in order into
        batch requests of at most 50 commands, each halted at its first failed command: the write that failed
        gets the error (its notices are not sent), the writes after it go into the next request."""
        outcomes: list[WriteOutcome | None] = [None] * len(writes)
        plans: list[_WritePlan] = []
        for index, write in enumerate(writes):
            update = self._update_commands(write.deal_id, write.change) if write.change is not None else {}
            plan = _WritePlan(index, write, {f"w{index}{key}": command for key, command in update.items()})
            for number, notice in enumerate(write.notices):
                plan.notices.append(f"w{index}n{number}")
                plan.commands[f"w{index}n{number}"] = (
                    "im.notify.system.add",
                    self._notify_params(notice.user_id, notice.message, notice.key),
                )
            if plan.commands:
                plans.append(plan)
            else:
                outcomes[index] = WriteOutcome((None,) if write.change is not None else ())
        while plans:
            chunk: list[_WritePlan] = []
            size = 0
            while plans and (not chunk or size + len(plans[0].commands) <= BATCH_LIMIT):
                size += len(plans[0].commands)
                chunk.append(plans.pop(0))
            commands = {key: command for plan in chunk for key, command in plan.commands.items()}
            result = self.rest.batch(commands, halt=True)
            not_run = [
                plan for plan in chunk if not any(k in result.result or k in result.result_error for k in plan.commands)
            ]
            if len(not_run) == len(chunk):
                for plan in chunk:
                    outcomes[plan.index] = _not_run(plan)
                continue
            for plan in chunk:
                if plan not in not_run:
                    outcomes[plan.index] = self._outcome(plan, result)
            plans[:0] = not_run
        return [outcome if outcome is not None else WriteOutcome(()) for outcome in outcomes]

    @staticmethod
    def _outcome(plan: _WritePlan, result: BatchResult) -> WriteOutcome:
        change_error: Exception | None = None
        for key in plan.update:
            if change_error is None:
                change_error = result.error(key) or (
                    None if key in result.result else CrmError(f"batch command {key!r} was not run")
                )
        errors: list[Exception | None] = [change_error] if plan.write.change is not None else []
        for key in plan.notices:
            if change_error is not None:
                errors.append(change_error)
            elif key in result.result:
                errors.append(None)
            else:
                errors.append(result.error(key) or CrmError(f"batch command {key!r} was not run"))
        echo = None
        # crm.deal.update alone fires exactly one ONCRMDEALUPDATE, stamped while the batch ran (or just after).
        if change_error is None and [command for command, _ in (plan.commands[k] for k in plan.update)] == [
            "crm.deal.update"
        ]:
            if result.started is not None and result.finished is not None:
                echo = EchoWindow(int(result.started), int(result.finished) + 1 + ECHO_SLACK_SECONDS)
        return WriteOutcome(tuple(errors), echo)

    # ---- tasks

    TASK_SELECT = ("ID", "TITLE", "RESPONSIBLE_ID", "CREATED_BY", "DEADLINE", "STATUS", "AUDITORS", "UF_CRM_TASK")

    def create_task(self, task: NewTask) -> str:
        """tasks.task.add linked to the deal; returns the task id."""
        return self._created_task_id(self.rest.call("tasks.task.add", {"fields": self._task_fields(task)}))

    @staticmethod
    def _created_task_id(answer: Any) -> str:
        created = (answer or {}).get("task") if isinstance(answer, dict) else None
        task_id = _text((created or {}).get("id") or (created or {}).get("ID"))
        if not task_id:
            raise CrmError("tasks.task.add answered without a task id")
        return task_id

    def create_tasks(self, tasks: Sequence[NewTask]) -> list[str | Exception]:
        """tasks.task.add for every task, 50 to a `batch` (not halted: one refused task fails alone)."""
        if not tasks:
            return []
        commands = {
            f"t{index}": ("tasks.task.add", {"fields": self._task_fields(task)}) for index, task in enumerate(tasks)
        }
        result = self.rest.batch(commands, halt=False)
        outcomes: list[str | Exception] = []
        for key in commands:
            try:
                outcomes.append(self._created_task_id(result.get(key)))
            except CrmError as error:
                outcomes.append(error)
        return outcomes

    def complete_tasks(self, completions: Sequence[TaskCompletion]) -> list[Exception | None]:
        """tasks.task.complete / crm.activity.update for every one, 50 to a `batch` (not halted). A refused one is
        read back as `complete_task` / `complete_todo` do (an already completed or deleted one is fine)."""
        if not completions:
            return []
        commands: dict[str, tuple[str, Mapping[str, Any] | None]] = {}
        for index, completion in enumerate(completions):
            if completion.kind == "todo":
                commands[f"c{index}"] = (
                    "crm.activity.update",
                    {"id": completion.task_id, "fields": {"COMPLETED": "Y"}},
                )
            else:
                commands[f"c{index}"] = ("tasks.task.complete", {"taskId": completion.task_id})
        result = self.rest.batch(commands, halt=False)
        outcomes: list[Exception | None] = []
        for key, completion in zip(commands, completions, strict=True):
            error = result.error(key)
            if error is None:
                outcomes.append(None if key in result.result else CrmError(f"batch command {key!r} was not run"))
                continue
            try:
                still_open = not (isinstance(error, Bitrix24Error) and _refused(error)) or (
                    self._todo_still_open(completion.task_id)
                    if completion.kind == "todo"
                    else self._task_still_open(completion.task_id)
                )
            except CrmError as read_error:
                outcomes.append(read_error)
                continue
            outcomes.append(error if still_open else None)
        return outcomes

    def _task_fields(self, task: NewTask) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "TITLE": task.title,
            "RESPONSIBLE_ID": task.responsible_id,
            "DEADLINE": task.deadline.isoformat(timespec="seconds"),
            "UF_CRM_TASK": [f"D_{task.deal_id}"],
        }
        if task.description:
            fields["DESCRIPTION"] = task.description
        if task.created_by:
            fields["CREATED_BY"] = task.created_by
        if task.auditor_ids:
            fields["AUDITORS"] = list(task.auditor_ids)
        return fields

    def create_todo(self, todo: NewTodo) -> str:
        """crm.activity.todo.add on the deal; returns the activity id."""
        params: dict[str, Any] = {
            "ownerTypeId": DEAL_ENTITY_TYPE_ID,
            "ownerId": todo.deal_id,
            "deadline": todo.deadline.astimezone(self.tz).isoformat(timespec="seconds"),
            "title": todo.title,
            "responsibleId": todo.responsible_id,
        }
        if todo.description:
            params["description"] = todo.description
        answer = self.rest.call("crm.activity.todo.add", params)
        todo_id = _text(answer.get("id")) if isinstance(answer, dict) else ""
        if not todo_id:
            raise CrmError("crm.activity.todo.add answered without an id")
        return todo_id

    def complete_task(self, task_id: str, result: str = "") -> None:
        """tasks.task.complete {taskId}. Bitrix24 keeps no result text with it, so `result` is not sent.
        When the portal refuses, tasks.task.get tells whether the task is already completed or gone (both
        fine); otherwise the refusal stands."""
        try:
            self.rest.call("tasks.task.complete", {"taskId": task_id})
        except Bitrix24Error as error:
            if not _refused(error) or self._task_still_open(task_id):
                raise

    def _task_still_open(self, task_id: str) -> bool:
        try:
            answer = self.rest.call("tasks.task.get", {"taskId": task_id, "select": ["ID", "STATUS"]})
        except Bitrix24Error as error:
            if _refused(error):
                return False  # "Task not found or not accessible": deleted
            raise
        task = (answer or {}).get("task") if isinstance(answer, dict) else None
        if not isinstance(task, Mapping) or not task:
            return False
        return _text(task.get("status", task.get("STATUS"))) != TASK_COMPLETED

    def complete_todo(self, todo_id: str, result: str = "") -> None:
        """crm.activity.update {id, fields: {COMPLETED: "Y"}}: the documented way to complete an activity
        (crm.activity.todo.update has no completion field and refuses completed to-dos). The activity keeps
        no result text, so `result` is not sent. When the portal refuses, crm.activity.get tells whether the
        to-do is already completed or gone (deleted, or deleted with its deal)."""
        try:
            self.rest.call("crm.activity.update", {"id": todo_id, "fields": {"COMPLETED": "Y"}})
        except Bitrix24Error as error:
            if not _refused(error) or self._todo_still_open(todo_id):
                raise

    def _todo_still_open(self, todo_id: str) -> bool:
        try:
            answer = self.rest.call("crm.activity.get", {"id": todo_id})
        except Bitrix24Error as error:
            if _refused(error):
                return False  # "Not found"
            raise
        if not isinstance(answer, Mapping) or not answer:
            return False
        return _text(answer.get("COMPLETED")) != "Y"

    def _task(self, row: Mapping[str, Any], deal_id: str | None) -> Task:
        def pick(camel: str, upper: str) -> Any:
            return row.get(camel, row.get(upper))

        auditors = pick("auditors", "AUDITORS") or []
        return Task(
            id=_text(pick("id", "ID")),
            title=_text(pick("title", "TITLE")),
            responsible_id=_text(pick("responsibleId", "RESPONSIBLE_ID")),
            deal_id=deal_id,
            deadline=parse_datetime(pick("deadline", "DEADLINE"), self.tz),
            is_open=_text(pick("status", "STATUS")) != TASK_COMPLETED,
            created_by=_optional_id(pick("createdBy", "CREATED_BY")),
            auditor_ids=tuple(_text(a) for a in (auditors if isinstance(auditors, list) else [auditors])),
        )

    OPEN_TASK_FILTER: Mapping[str, Any] = {"!REAL_STATUS": int(TASK_COMPLETED)}
    SCAN_TASK_SELECT = (*TASK_SELECT, "SUB_STATUS")
    TO_DO_SELECT = ("ID", "OWNER_ID", "OWNER_TYPE_ID", "TYPE_ID", "SUBJECT", "RESPONSIBLE_ID", "DEADLINE", "AUTHOR_ID")
    SCAN_DEAL_SELECT = (
        "ID", "TITLE", "CATEGORY_ID", "STAGE_ID", "STAGE_SEMANTIC_ID", "ASSIGNED_BY_ID", "MODIFY_BY_ID",
        "DATE_CREATE", "DATE_MODIFY", "MOVED_BY_ID", "MOVED_TIME",
    )  # fmt: skip

    def _open_task(self, row: Mapping[str, Any]) -> Task | None:
        """An open task row of a scan, bound to its first deal (None for tasks bound to no deal)."""
        bindings = row.get("ufCrmTask", row.get("UF_CRM_TASK")) or []
        deal_ids = [b[2:] for b in (bindings if isinstance(bindings, list) else [bindings]) if str(b).startswith("D_")]
        if not deal_ids:
            return None
        task = self._task(row, deal_ids[0])
        sub_status = _text(row.get("subStatus", row.get("SUB_STATUS")))
        overdue = sub_status == "-1" or (task.deadline is not None and task.deadline < datetime.now(UTC))
        return replace(task, overdue=overdue)

    def _todo(self, row: Mapping[str, Any]) -> Task:
        deadline = parse_datetime(row.get("DEADLINE"), self.tz)
        return Task(
            id=_text(row.get("ID")),
            title=_text(row.get("SUBJECT")),
            responsible_id=_text(row.get("RESPONSIBLE_ID")),
            deal_id=_text(row.get("OWNER_ID")),
            deadline=deadline,
            is_open=True,
            created_by=_optional_id(row.get("AUTHOR_ID")),
            kind="todo",
        )

    def open_deal_tasks(self, deal_id: str) -> list[Task]:
        """Open tasks and open to-dos of one deal: one batch request (two list commands)."""
        result = self.rest.batch(
            {
                "t": (
                    "tasks.task.list",
                    {
                        "filter": {"UF_CRM_TASK": f"D_{deal_id}", **self.OPEN_TASK_FILTER},
                        "select": list(self.SCAN_TASK_SELECT),
                        "order": {"ID": "ASC"},
                    },
                ),
                "a": (
                    "crm.activity.list",
                    {
                        "filter": {"OWNER_TYPE_ID": DEAL_ENTITY_TYPE_ID, "OWNER_ID": deal_id, "COMPLETED": "N"},
                        "select": list(self.TO_DO_SELECT),
                        "order": {"ID": "ASC"},
                    },
                ),
            }
        )
        tasks = [task for row in result_rows(result.get("t"), "tasks") if (task := self._open_task(row)) is not None]
        return [*tasks, *(replace(self._todo(row), deal_id=deal_id) for row in result_rows(result.get("a"), None))]

    def iter_open_work(self) -> Iterator[Task | Deal]:
        """Open tasks bound to deals and open deal to-dos (phase 0), then open deals (phase 1), all
        read together in shared batches of 50 fast list pages."""
        streams = [
            ListStream(
                "t",
                "tasks.task.list",
                {"filter": dict(self.OPEN_TASK_FILTER), "select": list(self.SCAN_TASK_SELECT)},
                row_key="id",
                result_key="tasks",
            ),
            ListStream(
                "a",
                "crm.activity.list",
                {
                    "filter": {"OWNER_TYPE_ID": DEAL_ENTITY_TYPE_ID, "COMPLETED": "N"},
                    "select": list(self.TO_DO_SELECT),
                },
            ),
            ListStream(
                "d",
                "crm.deal.list",
                {"filter": {"CLOSED": "N"}, "select": list(self.SCAN_DEAL_SELECT)},
                phase=1,
            ),
        ]
        for name, row in self.rest.iter_streams_batched(streams):
            if name == "d":
                yield self.deal_from_raw(row)
            elif name == "a":
                if _text(row.get("OWNER_TYPE_ID")) == str(DEAL_ENTITY_TYPE_ID):
                    yield self._todo(row)
            elif (task := self._open_task(row)) is not None:
                yield task

    def notify_many(self, notices: Sequence[Notice]) -> None:
        """im.notify.system.add for each notice (a digest as one message), 50 to a batch request; fails on the
        first error."""
        commands: dict[str, tuple[str, Mapping[str, Any] | None]] = {
            f"n{index}": ("im.notify.system.add", {"USER_ID": notice.user_id, "MESSAGE": notice.message})
            for index, notice in enumerate(notices)
        }
        if not commands:
            return
        result = self.rest.batch(commands)
        for key in commands:
            result.get(key)

    # ---- clients (the repeat-client rule)

    CLIENT_SELECT = ("ID", "ASSIGNED_BY_ID", "DATE_CREATE", "PHONE", "EMAIL")
    DUPLICATE_VALUES = 20  # crm.duplicate.findbycomm takes at most 20 values

    def _batch_or_raise(self, commands: dict[str, tuple[str, Mapping[str, Any] | None]]) -> Any:
        if not commands:
            return None
        result = self.rest.batch(commands)
        errors = result.errors()
        if errors:
            raise next(iter(errors.values()))
        return result

    def _client(self, kind: str, row: Mapping[str, Any]) -> Client:
        return Client(
            kind="company" if kind == "company" else "contact",
            id=_text(row.get("ID")),
            responsible_id=_text(row.get("ASSIGNED_BY_ID")),
            created_at=parse_datetime(row.get("DATE_CREATE"), self.tz),
        )

    def _client_commands(
        self, contact_ids: Sequence[str], company_ids: Sequence[str]
    ) -> dict[str, tuple[str, Mapping[str, Any] | None]]:
        commands: dict[str, tuple[str, Mapping[str, Any] | None]] = {}
        lists = (("contact", "crm.contact.list", contact_ids), ("company", "crm.company.list", company_ids))
        for kind, method, ids in lists:
            for n, i in enumerate(range(0, len(ids), PAGE_SIZE)):
                flt = {"@ID": list(ids[i : i + PAGE_SIZE])}
                commands[f"{kind}{n}"] = (method, {"filter": flt, "select": list(self.CLIENT_SELECT), "start": -1})
        return commands

    @staticmethod
    def _client_rows(result: Any, commands: Mapping[str, Any]) -> dict[str, list[Mapping[str, Any]]]:
        rows: dict[str, list[Mapping[str, Any]]] = {"contact": [], "company": []}
        for key in commands:
            if key.startswith(("contact", "company")):
                rows["company" if key.startswith("company") else "contact"].extend(result_rows(result.get(key), None))
        return rows

    @staticmethod
    def _communications(rows: Sequence[Mapping[str, Any]], name: str) -> list[str]:
        values = []
        for row in rows:
            items = row.get(name)
            for item in items if isinstance(items, list) else []:
                value = _text(item.get("VALUE")) if isinstance(item, Mapping) else ""
                if value and value not in values:
                    values.append(value)
        return values

    def client_history(self, deal_id: str) -> ClientHistory:
        """The deal's contacts (crm.deal.contact.items.get) and company (the deal's COMPANY_ID), their duplicates
        by phone and e-mail (crm.duplicate.findbycomm), and their open deals (crm.deal.list by CONTACT_ID and
        COMPANY_ID): four batch requests at most."""
        first = self._batch_or_raise(
            {"deal": ("crm.deal.get", {"id": deal_id}), "contacts": ("crm.deal.contact.items.get", {"id": deal_id})}
        )
        deal = _mapping(first.get("deal"))
        company = _text(deal.get("COMPANY_ID"))
        own_contacts = [_text(row.get("CONTACT_ID")) for row in result_rows(first.get("contacts"), None)]
        own_contacts = [cid for cid in dict.fromkeys(own_contacts) if cid and cid != "0"]
        own_companies = [company] if company and company != "0" else []
        own_commands = self._client_commands(own_contacts, own_companies)
        own_rows = self._client_rows(self._batch_or_raise(own_commands), own_commands)
        rows = [*own_rows["contact"], *own_rows["company"]]
        searches: dict[str, tuple[str, Mapping[str, Any] | None]] = {}
        for kind in ("PHONE", "EMAIL"):
            values = self._communications(rows, kind)[: self.DUPLICATE_VALUES]
            if values:
                searches[kind] = ("crm.duplicate.findbycomm", {"type": kind, "values": values})
        found = self._batch_or_raise(searches)
        duplicate_contacts: list[str] = []
        duplicate_companies: list[str] = []
        for key in searches:
            answer = found.get(key)
            if not isinstance(answer, Mapping):  # an empty result is an empty array
                continue
            for raw in answer.get("CONTACT") or []:
                if str(raw) not in own_contacts and str(raw) not in duplicate_contacts:
                    duplicate_contacts.append(str(raw))
            for raw in answer.get("COMPANY") or []:
                if str(raw) not in own_companies and str(raw) not in duplicate_companies:
                    duplicate_companies.append(str(raw))
        contacts = [*own_contacts, *duplicate_contacts]
        companies = [*own_companies, *duplicate_companies]
        lists = self._client_commands(duplicate_contacts, duplicate_companies)  # one batch: the others and all deals
        for key, link, ids in (("by_contact", "@CONTACT_ID", contacts), ("by_company", "@COMPANY_ID", companies)):
            if ids:
                flt = {link: ids[:PAGE_SIZE], "CLOSED": "N", "!ID": deal_id}
                lists[key] = ("crm.deal.list", {"filter": flt, "select": list(self.DEAL_SELECT), "start": -1})
        deals = self._batch_or_raise(lists)
        duplicate_rows = self._client_rows(deals, lists)
        open_deals: dict[str, Deal] = {}
        for key in ("by_contact", "by_company"):
            for raw in result_rows(deals.get(key), None) if key in lists else []:
                other = self.deal_from_raw(raw)
                if other.id != str(deal_id) and other.stage_semantics == "process":
                    open_deals.setdefault(other.id, other)
        return ClientHistory(
            own=tuple(
                [self._client("contact", row) for row in own_rows["contact"]]
                + [self._client("company", row) for row in own_rows["company"]]
            ),
            duplicates=tuple(
                [self._client("contact", row) for row in duplicate_rows["contact"]]
                + [self._client("company", row) for row in duplicate_rows["company"]]
            ),
            open_deals=tuple(open_deals.values()),
        )

    def list_deal_tasks(self, deal_id: str) -> list[Task]:
        """Tasks bound to the deal (tasks.task.list by UF_CRM_TASK, select always given)."""
        params = {"filter": {"UF_CRM_TASK": f"D_{deal_id}"}, "select": list(self.TASK_SELECT)}
        return [self._task(row, deal_id) for row in self.rest.iter_list("tasks.task.list", params, result_key="tasks")]

    # ---- calls

    CALL_SELECT = (
        "ID",
        "SUBJECT",
        "START_TIME",
        "END_TIME",
        "DIRECTION",
        "RESPONSIBLE_ID",
        "COMMUNICATIONS",
        "FILES",
        "PROVIDER_ID",
        "ORIGIN_ID",
    )

    def list_deal_calls(self, deal_id: str) -> list[Call]:
        """Call activities of the deal with files, joined with telephony statistics for recordings."""
        params = {
            "filter": {"OWNER_TYPE_ID": DEAL_ENTITY_TYPE_ID, "OWNER_ID": deal_id, "TYPE_ID": CALL_ACTIVITY_TYPE_ID},
            "select": list(self.CALL_SELECT),
        }
        activities = list(self.rest.iter_list("crm.activity.list", params))
        if not activities:
            return []
        stats_commands: dict[str, tuple[str, Mapping[str, Any] | None]] = {
            f"a{_text(a.get('ID'))}": ("voximplant.statistic.get", {"FILTER": {"CRM_ACTIVITY_ID": _text(a.get("ID"))}})
            for a in activities
        }
        stats = self.rest.batch(stats_commands)
        calls = []
        for activity in activities:
            activity_id = _text(activity.get("ID"))
            key = f"a{activity_id}"
            stat_rows = [] if stats.error(key) is not None else result_rows(stats.result.get(key), None)
            calls.append(self._call(deal_id, activity, stat_rows[0] if stat_rows else {}))
        return calls

    def _call(self, deal_id: str, activity: Mapping[str, Any], stat: Mapping[str, Any]) -> Call:
        started = parse_datetime(stat.get("CALL_START_DATE") or activity.get("START_TIME"), self.tz)
        ended = parse_datetime(activity.get("END_TIME"), self.tz)
        duration = _text(stat.get("CALL_DURATION"))
        if duration.isdigit():
            seconds = int(duration)
        elif started and ended and ended >= started:
            seconds = int((ended - started).total_seconds())
        else:
            seconds = 0
        files = activity.get("FILES") if isinstance(activity.get("FILES"), list) else []
        first_file: Mapping[str, Any] = files[0] if files else {}
        communications = activity.get("COMMUNICATIONS") if isinstance(activity.get("COMMUNICATIONS"), list) else []
        phone = _text(stat.get("PHONE_NUMBER")) or (_text(communications[0].get("VALUE")) if communications else "")
        stat_type = _text(stat.get("CALL_TYPE"))
        incoming = _text(activity.get("DIRECTION")) == "1" if not stat_type else stat_type in ("2", "3")
        return Call(
            id=_text(activity.get("ID")),
            deal_id=deal_id,
            user_id=_optional_id(stat.get("PORTAL_USER_ID") or activity.get("RESPONSIBLE_ID")),
            direction="in" if incoming else "out",
            started_at=started,
            duration_seconds=seconds,
            recording_url=_text(stat.get("CALL_RECORD_URL")) or _text(first_file.get("url")) or None,
            recording_file_id=_text(stat.get("RECORD_FILE_ID")) or _text(first_file.get("id")) or None,
            phone=phone,
        )

    def open_recording(self, call: Call) -> Recording:
        """Stream the recording from the portal (CALL_RECORD_URL or the activity's file)."""
        if not call.recording_url:
            raise NotFound("the call has no recording", code="NOT_FOUND", http_status=404)
        response = self.rest.download(call.recording_url)
        length = response.headers.get("Content-Length")
        return Recording(
            content_type=audio_type(response) or "audio/mpeg",
            chunks=response.iter_content(chunk_size=64 * 1024),
            close=response.close,
            length=int(length) if length and length.isdigit() else None,
        )

    def time_zone(self) -> CrmTimeZone:
        """One batch of ``profile`` (the token user's own ``TIME_ZONE``, empty when he follows the portal's)
        and ``server.time`` (the portal's time with its UTC offset). Without the portal's own clock nothing is
        known (the user's zone alone may be his own, not the portal's): its error is raised."""
        result = self.rest.batch({"profile": ("profile", None), "time": ("server.time", None)})
        failed = result.error("time")
        if failed is not None:
            raise failed
        profile = result.result.get("profile")
        name = str(profile.get("TIME_ZONE") or "") if isinstance(profile, Mapping) else ""
        return CrmTimeZone(name or None, _server_offset(result.result.get("time")))
