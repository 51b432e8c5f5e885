"""The amoCRM API v4 endpoints of a sandbox account: HAL bodies, validation errors, 204 for empty pages."""

from __future__ import annotations

import heapq
import operator
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from itertools import islice
from typing import Any
from zoneinfo import ZoneInfo

from sandbox.amocrm.account import (
    FIELD_TYPES,
    LOST,
    STATUS_COLORS,
    WEBHOOK_SETTINGS,
    WON,
    Account,
    AmoSandbox,
    ApiError,
    Webhook,
    problem,
    validation_error,
)

Answer = tuple[int, Any]  # (status, body or None for 204)
MAX_LIMIT = 250
EVENTS_MAX_LIMIT = 100


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _ids(value: Any) -> list[int]:
    if value is None or value == "":
        return []
    if isinstance(value, dict):
        value = list(value.values())
    if not isinstance(value, list):
        value = str(value).split(",")
    return [number for item in value if (number := _int(item)) is not None]


def _strings(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, dict):
        value = list(value.values())
    if not isinstance(value, list):
        value = str(value).split(",")
    return [str(item) for item in value]


class Request:
    """One API call as the handlers see it."""

    def __init__(
        self, sandbox: AmoSandbox, account: Account, user_id: int, method: str, path: str, query: dict, body: Any
    ) -> None:
        self.sandbox = sandbox
        self.account = account
        self.user_id = user_id
        self.method = method
        self.path = path
        self.query = query
        self.body = body

    def href(self, path: str) -> dict[str, str]:
        return {"href": f"https://{self.account.domain}{path}"}

    def require_admin(self) -> None:
        if not self.account.users[self.user_id]["rights"]["is_admin"]:
            raise problem(403, "Forbidden", "Access denied: an administrator's rights are required")

    def page(
        self,
        key: str,
        items: Sequence[Any] | Callable[[int, int], list[Any]],
        max_limit: int = MAX_LIMIT,
        default: int = 50,
        wire: Callable[[Any], dict[str, Any]] | None = None,
    ) -> Answer:
        """A HAL page: ``_page``, ``_links`` (self, next when the page is full), ``_embedded``; 204 when empty.
        `items` is the whole ordered list or a function of (offset, count) giving that slice of it; `wire`
        renders an item (only the page's own items are rendered)."""
        limit = _int(self.query.get("limit")) or default
        if limit < 1 or limit > max_limit:
            raise validation_error([("InvalidValue", "limit", f"limit must be between 1 and {max_limit}")])
        page = max(1, _int(self.query.get("page")) or 1)
        offset = (page - 1) * limit
        chunk = items(offset, limit) if callable(items) else items[offset : offset + limit]
        if not chunk:
            return 204, None
        if wire is not None:
            chunk = [wire(item) for item in chunk]
        links = {"self": self.href(f"{self.path}?page={page}&limit={limit}")}
        if len(chunk) == limit:  # amoCRM's "next" may be phantom: clients stop on a short page
            links["next"] = self.href(f"{self.path}?page={page + 1}&limit={limit}")
        return 200, {"_page": page, "_links": links, "_embedded": {key: chunk}}


Row = Mapping[str, Any]


def _ascending(rows: Mapping[int, Row]) -> bool:
    """Whether the rows were inserted in ascending id order (true unless a test put one in by hand)."""
    return all(map(operator.lt, rows, islice(rows, 1, None)))


def _window(
    rows: Mapping[int, Row], tests: Sequence[Callable[[Row], bool]], key: str, descending: bool
) -> Callable[[int, int], list[Row]]:
    """The (offset, count) slice of the rows passing every test, ordered by (key, id), for `Request.page`.

    In id order over rows stored in id order (the scans' case) the rows are walked lazily and the walk
    stops after the page, as an indexed database would; another order keeps only offset + count rows
    (heapq), never a sorted copy of every match."""

    def keep(row: Row) -> bool:
        for test in tests:
            if not test(row):
                return False
        return True

    def select(offset: int, count: int) -> list[Row]:
        if key == "id" and _ascending(rows):
            walk: Iterable[Row] = reversed(rows.values()) if descending else rows.values()
            return list(islice(filter(keep, walk), offset, offset + count))
        pick = heapq.nlargest if descending else heapq.nsmallest
        return pick(offset + count, filter(keep, rows.values()), key=lambda row: (row[key], row["id"]))[offset:]

    return select


def _member(name: str, wanted: set[int]) -> Callable[[Row], bool]:
    """A test: the row's `name` is one of `wanted`."""
    return lambda row: row[name] in wanted


def _updated_tests(updated: Any) -> list[Callable[[Row], bool]]:
    """``filter[updated_at]``: a timestamp, or ``[from]`` / ``[to]`` bounds."""
    if isinstance(updated, dict):
        since, until = _int(updated.get("from")), _int(updated.get("to"))
        return [
            lambda row: (since is None or row["updated_at"] >= since) and (until is None or row["updated_at"] <= until)
        ]
    if updated not in (None, ""):
        stamp = _int(updated)
        return [lambda row: row["updated_at"] == stamp]
    return []


# ---------------------------------------------------------------- leads


def lead_wire(request: Request, lead: Mapping[str, Any]) -> dict[str, Any]:
    """A lead as GET /api/v4/leads shows it (custom fields in the v4 ``custom_fields_values`` shape)."""
    values = []
    for field_id, items in (lead.get("cf") or {}).items():
        spec = request.account.custom_fields.get(field_id) or {}
        values.append(
            {
                "field_id": field_id,
                "field_name": spec.get("name", ""),
                "field_code": spec.get("code"),
                "field_type": spec.get("type", "text"),
                "values": [
                    {k: v for k, v in (("value", i.get("value")), ("enum_id", i.get("enum_id"))) if v is not None}
                    for i in items
                ],
            }
        )
    return {
        "id": lead["id"],
        "name": lead["name"],
        "price": lead["price"],
        "responsible_user_id": lead["responsible_user_id"],
        "group_id": lead["group_id"],
        "status_id": lead["status_id"],
        "pipeline_id": lead["pipeline_id"],
        "loss_reason_id": lead["loss_reason_id"],
        "created_by": lead["created_by"],
        "updated_by": lead["updated_by"],
        "created_at": lead["created_at"],
        "updated_at": lead["updated_at"],
        "closed_at": lead["closed_at"],
        "closest_task_at": None,
        "is_deleted": lead["is_deleted"],
        "custom_fields_values": values or None,
        "score": None,
        "account_id": request.account.id,
        "labor_cost": None,
        "_links": {"self": request.href(f"/api/v4/leads/{lead['id']}")},
        "_embedded": {
            "tags": [],
            "companies": [{"id": lead["company_id"], "_links": request.href(f"/api/v4/companies/{lead['company_id']}")}]
            if lead.get("company_id")
            else [],
            **({"contacts": _lead_contacts(request, lead)} if _with(request, "contacts") else {}),
        },
    }


def _with(request: Request, name: str) -> bool:
    """Whether ``with=`` (comma-separated) asks for `name`."""
    return name in str(request.query.get("with") or "").split(",")


def _lead_contacts(request: Request, lead: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {"id": contact_id, "is_main": index == 0, "_links": request.href(f"/api/v4/contacts/{contact_id}")}
        for index, contact_id in enumerate(lead.get("contacts") or [])
        if contact_id in request.account.contacts
    ]


# ---------------------------------------------------------------- contacts and companies

CLIENT_PATHS = {"contacts": "contacts", "companies": "companies"}


def _phone_digits(value: str) -> str:
    digits = re.sub(r"\D", "", value)
    return "7" + digits[1:] if len(digits) == 11 and digits.startswith("8") else digits


def _client_matches(client: Mapping[str, Any], query: str) -> bool:
    """``query``: amoCRM searches names, phones and e-mails; phones match by their digits."""
    text = query.strip().lower()
    if not text:
        return True
    if text in str(client.get("name") or "").lower():
        return True
    if any(text == email.lower() for email in client.get("emails") or []):
        return True
    digits = _phone_digits(text)
    return len(digits) >= 5 and any(digits in _phone_digits(phone) for phone in client.get("phones") or [])


def _client_wire(request: Request, entity: str, client: Mapping[str, Any]) -> dict[str, Any]:
    values = []
    for code, name, items in (("PHONE", "Телефон", client.get("phones")), ("EMAIL", "Email", client.get("emails"))):
        if items:
            values.append(
                {
                    "field_id": 1 if code == "PHONE" else 2,
                    "field_name": name,
                    "field_code": code,
                    "field_type": "multitext",
                    "values": [{"value": item, "enum_id": 1, "enum_code": "WORK"} for item in items],
                }
            )
    embedded: dict[str, Any] = {"tags": []}
    if _with(request, "leads"):
        if entity == "contacts":
            linked = [lead for lead in request.account.leads.values() if client["id"] in (lead.get("contacts") or [])]
        else:
            linked = [lead for lead in request.account.leads.values() if lead.get("company_id") == client["id"]]
        embedded["leads"] = [
            {"id": lead["id"], "_links": request.href(f"/api/v4/leads/{lead['id']}")}
            for lead in linked
            if not lead["is_deleted"]
        ]
    return {
        "id": client["id"],
        "name": client.get("name", ""),
        "responsible_user_id": client["responsible_user_id"],
        "group_id": 0,
        "created_by": client.get("created_by", client["responsible_user_id"]),
        "updated_by": client.get("created_by", client["responsible_user_id"]),
        "created_at": client["created_at"],
        "updated_at": client.get("updated_at", client["created_at"]),
        "closest_task_at": None,
        "is_deleted": False,
        "custom_fields_values": values or None,
        "account_id": request.account.id,
        "_links": {"self": request.href(f"/api/v4/{entity}/{client['id']}")},
        "_embedded": embedded,
    }


def list_clients(request: Request, entity: str) -> Answer:
    """GET /api/v4/contacts and /api/v4/companies: ``filter[id]``, ``query`` (name, phone, e-mail),
    ``with=leads``; 50 a page by default, at most 250; 204 when nothing matches."""
    rows = request.account.contacts if entity == "contacts" else request.account.companies
    flt = request.query.get("filter") or {}
    flt = flt if isinstance(flt, dict) else {}
    ids = set(_ids(flt.get("id")))
    query = str(request.query.get("query") or "")
    tests: list[Callable[[Row], bool]] = []
    if ids:
        tests.append(lambda row: row["id"] in ids)
    if query:
        tests.append(lambda row: _client_matches(row, query))
    select = _window(rows, tests, "id", False)
    return request.page(entity, select, wire=lambda row: _client_wire(request, entity, row))


def get_client(request: Request, entity: str, client_id: int) -> Answer:
    rows = request.account.contacts if entity == "contacts" else request.account.companies
    row = rows.get(client_id)
    if row is None:
        return 204, None
    return 200, _client_wire(request, entity, row)


def list_leads(request: Request) -> Answer:
    """GET /api/v4/leads: ``filter[id]``, ``filter[updated_at]`` (a timestamp or ``[from]``/``[to]``),
    ``filter[responsible_user_id]``, ``filter[statuses][n][pipeline_id|status_id]``,
    ``order[id|created_at|updated_at]``; default 50 a page, at most 250; 204 when nothing is left."""
    flt = request.query.get("filter") or {}
    flt = flt if isinstance(flt, dict) else {}
    tests: list[Callable[[Row], bool]] = []
    ids = set(_ids(flt.get("id")))
    if ids:
        tests.append(lambda lead: lead["id"] in ids)
    tests += _updated_tests(flt.get("updated_at"))
    if flt.get("responsible_user_id") not in (None, ""):
        responsible = set(_ids(flt["responsible_user_id"]))
        tests.append(lambda lead: lead["responsible_user_id"] in responsible)
    statuses = flt.get("statuses")
    if statuses not in (None, ""):
        pairs = []
        for index, item in enumerate(statuses.values() if isinstance(statuses, dict) else statuses):
            if not isinstance(item, dict) or _int(item.get("status_id")) is None:
                raise validation_error([("InvalidValue", f"filter.statuses.{index}", "status_id is required")])
            pairs.append((_int(item.get("pipeline_id")), _int(item["status_id"])))
        wanted = set(pairs)
        tests.append(
            lambda lead: (lead["pipeline_id"], lead["status_id"]) in wanted or (None, lead["status_id"]) in wanted
        )
    order = request.query.get("order") or {}
    key, direction = next(iter(order.items())) if isinstance(order, dict) and order else ("id", "asc")
    if key not in ("id", "created_at", "updated_at"):
        raise validation_error([("InvalidValue", f"order.{key}", "unsupported order field")])
    select = _window(request.account.leads, tests, key, str(direction).lower() == "desc")
    return request.page("leads", select, wire=lambda lead: lead_wire(request, lead))


def get_lead(request: Request, lead_id: int) -> Answer:
    lead = request.account.leads.get(lead_id)
    if lead is None or lead["is_deleted"]:
        return 204, None
    return 200, lead_wire(request, lead)


def _custom_values(request: Request, raw: Any, prefix: str) -> dict[int, list[dict[str, Any]]]:
    """Validate ``custom_fields_values``; {field_id: values} with [] meaning cleared."""
    if not isinstance(raw, list):
        raise validation_error([("InvalidType", prefix, "This value should be of type array.")])
    out: dict[int, list[dict[str, Any]]] = {}
    for index, entry in enumerate(raw):
        path = f"{prefix}.{index}"
        field_id = _int(entry.get("field_id")) if isinstance(entry, dict) else None
        spec = request.account.custom_fields.get(field_id or 0)
        if spec is None:
            raise validation_error([("NotSupportedChoice", f"{path}.field_id", "The value you selected is not valid.")])
        values = entry.get("values")
        if values is None:
            out[spec["id"]] = []
            continue
        if not isinstance(values, list):
            raise validation_error([("InvalidType", f"{path}.values", "This value should be of type array.")])
        parsed = []
        for vindex, value in enumerate(values):
            vpath = f"{path}.values.{vindex}"
            if not isinstance(value, dict):
                raise validation_error([("InvalidType", vpath, "This value should be of type object.")])
            if spec["type"] in ("select", "multiselect", "radiobutton"):
                enum = None
                if value.get("enum_id") is not None:
                    enum = next((e for e in spec["enums"] if e["id"] == _int(value["enum_id"])), None)
                elif value.get("value") is not None:
                    enum = next((e for e in spec["enums"] if e["value"] == str(value["value"])), None)
                if enum is None:
                    raise validation_error(
                        [("NotSupportedChoice", f"{vpath}.enum_id", "The value you selected is not valid.")]
                    )
                parsed.append({"value": enum["value"], "enum_id": enum["id"]})
                continue
            text = value.get("value")
            if spec["type"] == "numeric":
                try:
                    Decimal(str(text))
                except InvalidOperation:
                    raise validation_error(
                        [("InvalidValue", f"{vpath}.value", "This value should be a number.")]
                    ) from None
            parsed.append({"value": str(text)})
        if spec["type"] not in ("multiselect",) and len(parsed) > 1:
            raise validation_error([("InvalidCount", f"{path}.values", "Only one value is allowed.")])
        out[spec["id"]] = parsed
    return out


def _lead_changes(request: Request, item: Any, lead: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """Validate a lead body (PATCH or POST); the changes to apply."""
    if not isinstance(item, dict):
        raise validation_error([("InvalidType", prefix.rstrip(".") or "body", "This value should be of type object.")])
    account = request.account
    changes: dict[str, Any] = {}
    if "name" in item:
        changes["name"] = str(item["name"])
    if "price" in item:
        price = _int(item["price"])
        if price is None or price < 0:
            raise validation_error([("InvalidValue", f"{prefix}price", "This value should be a positive integer.")])
        changes["price"] = price
    if "responsible_user_id" in item:
        user_id = _int(item["responsible_user_id"])
        if user_id not in account.users:
            raise validation_error(
                [("NotSupportedChoice", f"{prefix}responsible_user_id", "The value you selected is not valid.")]
            )
        changes["responsible_user_id"] = user_id
    pipeline_id = _int(item.get("pipeline_id")) if "pipeline_id" in item else None
    if "pipeline_id" in item and pipeline_id not in account.pipelines:
        raise validation_error([("NotSupportedChoice", f"{prefix}pipeline_id", "The value you selected is not valid.")])
    if "status_id" in item:
        status_id = _int(item["status_id"])
        if status_id in (WON, LOST):
            # Shared by every pipeline: without pipeline_id amoCRM takes the main one.
            pipeline_id = pipeline_id or account.main_pipeline()
        else:
            owner = account.status(status_id or 0)
            if owner is None or (pipeline_id is not None and owner["pipeline_id"] != pipeline_id):
                raise validation_error(
                    [("NotSupportedChoice", f"{prefix}status_id", "The value you selected is not valid.")]
                )
            pipeline_id = owner["pipeline_id"]
        changes["status_id"] = status_id
        changes["pipeline_id"] = pipeline_id
    elif pipeline_id is not None:
        first = min(
            (s for s in account.pipelines[pipeline_id]["statuses"].values() if s["type"] == 0),
            key=lambda s: s["sort"],
        )
        changes["status_id"], changes["pipeline_id"] = first["id"], pipeline_id
    if item.get("loss_reason_id") is not None:
        final = changes.get("status_id", lead["status_id"] if lead else None)
        if final != LOST or _int(item["loss_reason_id"]) not in account.loss_reasons:
            raise validation_error(
                [("NotSupportedChoice", f"{prefix}loss_reason_id", "The value you selected is not valid.")]
            )
        changes["loss_reason_id"] = _int(item["loss_reason_id"])
    if "custom_fields_values" in item:
        changes["cf"] = _custom_values(request, item["custom_fields_values"], f"{prefix}custom_fields_values")
    return changes


def patch_leads(request: Request, lead_id: int | None) -> Answer:
    items = [request.body] if lead_id is not None else request.body
    if not isinstance(items, list) or not items:
        raise validation_error([("InvalidType", "body", "This value should be of type array.")])
    if len(items) > 250:
        raise validation_error([("InvalidCount", "body", "This collection should contain 250 elements or less.")])
    planned = []
    for index, item in enumerate(items):
        target = lead_id if lead_id is not None else _int(item.get("id") if isinstance(item, dict) else None)
        lead = request.account.leads.get(target or 0)
        prefix = "" if lead_id is not None else f"{index}."
        if lead is None or lead["is_deleted"]:
            raise validation_error([("NotFound", f"{prefix}id", "Entity not found")], request_id=str(index))
        planned.append((lead, _lead_changes(request, item, lead, prefix), item))
    changed = []
    answers = []
    for lead, changes, item in planned:
        old, new = request.sandbox.apply_lead(request.account, lead["id"], changes, request.user_id)
        changed.append(("update", new, old))
        request.account.lead_writes[new["id"]] = request.account.lead_writes.get(new["id"], 0) + 1
        answers.append(
            {
                "id": new["id"],
                "updated_at": new["updated_at"],
                "request_id": str(item.get("request_id", len(answers))),
                "_links": {"self": request.href(f"/api/v4/leads/{new['id']}")},
            }
        )
    request.sandbox._fire(request.account, changed)
    if lead_id is not None:
        return 200, {k: v for k, v in answers[0].items() if k != "request_id"}
    return 200, {"_links": {"self": request.href("/api/v4/leads")}, "_embedded": {"leads": answers}}


def add_leads(request: Request) -> Answer:
    items = request.body
    if not isinstance(items, list) or not items:
        raise validation_error([("InvalidType", "body", "This value should be of type array.")])
    created = []
    for index, item in enumerate(items):
        changes = _lead_changes(request, item, None, f"{index}.")
        lead = request.sandbox.create_lead(request.account, changes, request.user_id)
        request.sandbox._fire(request.account, [("add", lead, None)])
        created.append(
            {
                "id": lead["id"],
                "request_id": str(item.get("request_id", index)),
                "_links": {"self": request.href(f"/api/v4/leads/{lead['id']}")},
            }
        )
    return 200, {"_links": {"self": request.href("/api/v4/leads")}, "_embedded": {"leads": created}}


# ---------------------------------------------------------------- pipelines and statuses


def _pipeline_wire(request: Request, pipeline: Mapping[str, Any]) -> dict[str, Any]:
    statuses = sorted(pipeline["statuses"].values(), key=lambda s: s["sort"])
    return {
        **{k: v for k, v in pipeline.items() if k != "statuses"},
        "_links": {"self": request.href(f"/api/v4/leads/pipelines/{pipeline['id']}")},
        "_embedded": {
            "statuses": [
                {
                    **status,
                    "_links": {
                        "self": request.href(f"/api/v4/leads/pipelines/{pipeline['id']}/statuses/{status['id']}")
                    },
                }
                for status in statuses
            ]
        },
    }


def list_pipelines(request: Request) -> Answer:
    pipelines = sorted(request.account.pipelines.values(), key=lambda p: p["sort"])
    return 200, {
        "_total_items": len(pipelines),
        "_links": {"self": request.href("/api/v4/leads/pipelines")},
        "_embedded": {"pipelines": [_pipeline_wire(request, p) for p in pipelines]},
    }


def get_pipeline(request: Request, pipeline_id: int) -> Answer:
    pipeline = request.account.pipelines.get(pipeline_id)
    if pipeline is None:
        raise problem(404, "Not Found", "Pipeline not found")
    return 200, _pipeline_wire(request, pipeline)


def add_pipelines(request: Request) -> Answer:
    """New pipelines with their working statuses; amoCRM adds Incoming leads (when on), 142 and 143 itself.
    No webhook fires: amoCRM has none for a new pipeline."""
    from sandbox.amocrm.seed import status as status_row

    request.require_admin()
    items = request.body
    if not isinstance(items, list) or not items:
        raise validation_error([("InvalidType", "body", "This value should be of type array.")])
    account = request.account
    created = []
    for index, item in enumerate(items):
        name = str((item or {}).get("name") or "").strip()
        if not name:
            raise validation_error([("NotBlank", f"{index}.name", "This value should not be blank.")], str(index))
        wanted = ((item.get("_embedded") or {}).get("statuses")) or []
        if not wanted:
            raise validation_error([("NotBlank", f"{index}._embedded.statuses", "A pipeline needs a status.")])
        pipeline_id = request.sandbox.next_id()
        statuses: dict[int, dict[str, Any]] = {}
        if item.get("is_unsorted_on", True):
            unsorted = request.sandbox.next_id()
            statuses[unsorted] = status_row(unsorted, "Неразобранное", 10, pipeline_id, "#c1c1c1", kind=1)
        for number, spec in enumerate(wanted):
            color = str(spec.get("color") or "#98cbff")
            if color not in STATUS_COLORS:
                invalid = ("NotSupportedChoice", f"{index}.color", "The value you selected is not valid.")
                raise validation_error([invalid])
            status_id = request.sandbox.next_id()
            sort = _int(spec.get("sort")) or 20 + number * 10
            statuses[status_id] = status_row(status_id, str(spec.get("name") or ""), sort, pipeline_id, color)
        statuses[142] = status_row(142, "Успешно реализовано", 10000, pipeline_id, "#CCFF66")
        statuses[143] = status_row(143, "Закрыто и не реализовано", 11000, pipeline_id, "#D5D8DB")
        for row in statuses.values():
            row["account_id"] = account.id
        account.pipelines[pipeline_id] = {
            "id": pipeline_id,
            "name": name,
            "sort": _int(item.get("sort")) or (max((p["sort"] for p in account.pipelines.values()), default=0) + 10),
            "is_main": False,
            "is_unsorted_on": bool(item.get("is_unsorted_on", True)),
            "is_archive": False,
            "account_id": account.id,
            "statuses": statuses,
        }
        created.append({**_pipeline_wire(request, account.pipelines[pipeline_id]), "request_id": str(index)})
    return 200, {"_total_items": len(created), "_embedded": {"pipelines": created}}


def add_statuses(request: Request, pipeline_id: int) -> Answer:
    request.require_admin()
    pipeline = request.account.pipelines.get(pipeline_id)
    if pipeline is None:
        raise problem(404, "Not Found", "Pipeline not found")
    items = request.body
    if not isinstance(items, list) or not items:
        raise validation_error([("InvalidType", "body", "This value should be of type array.")])
    created = []
    for index, item in enumerate(items):
        name = str((item or {}).get("name") or "").strip()
        if not name:
            raise validation_error([("NotBlank", f"{index}.name", "This value should not be blank.")], str(index))
        color = str(item.get("color") or "")
        if color not in STATUS_COLORS:
            raise validation_error([("NotSupportedChoice", f"{index}.color", "The value you selected is not valid.")])
        if len(pipeline["statuses"]) >= 100:
            raise validation_error([("InvalidCount", f"{index}", "A pipeline holds at most 100 statuses.")])
        status_id = request.sandbox.next_id()
        status = {
            "id": status_id,
            "name": name,
            "sort": _int(item.get("sort")) or 1000,
            "is_editable": True,
            "pipeline_id": pipeline_id,
            "color": color,
            "type": 0,
            "account_id": request.account.id,
        }
        pipeline["statuses"][status_id] = status
        created.append({**status, "request_id": str(item.get("request_id", index))})
    return 200, {"_total_items": len(created), "_embedded": {"statuses": created}}


def patch_status(request: Request, pipeline_id: int, status_id: int) -> Answer:
    """Edit one status (`name`, `sort`, `color`); the system statuses (Incoming leads, 142, 143) are not
    editable."""
    request.require_admin()
    pipeline = request.account.pipelines.get(pipeline_id)
    status = (pipeline or {}).get("statuses", {}).get(status_id) if pipeline else None
    if status is None:
        raise problem(404, "Not Found", "Status not found")
    body = request.body
    if not isinstance(body, dict):
        raise validation_error([("InvalidType", "body", "This value should be of type object.")])
    if status_id in (142, 143) or status.get("type") == 1:
        raise validation_error([("NotEditable", "id", "This status cannot be edited.")])
    if "name" in body:
        name = str(body.get("name") or "").strip()
        if not name:
            raise validation_error([("NotBlank", "name", "This value should not be blank.")])
        status["name"] = name
    if "sort" in body:
        sort = _int(body.get("sort"))
        if sort is None:
            raise validation_error([("InvalidType", "sort", "This value should be of type int.")])
        status["sort"] = sort
    if "color" in body:
        color = str(body.get("color") or "")
        if color not in STATUS_COLORS:
            raise validation_error([("NotSupportedChoice", "color", "The value you selected is not valid.")])
        status["color"] = color
    return 200, dict(status)


# ---------------------------------------------------------------- custom fields


def _field_wire(request: Request, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **spec,
        "account_id": request.account.id,
        "entity_type": "leads",
        "is_deletable": not spec.get("is_predefined", False),
        "is_predefined": spec.get("is_predefined", False),
        "group_id": None,
        "required_statuses": [],
        "remind": None,
        "settings": None,
        "_links": {"self": request.href(f"/api/v4/leads/custom_fields/{spec['id']}")},
    }


def list_fields(request: Request) -> Answer:
    flt = request.query.get("filter") or {}
    types = _strings(flt.get("type")) if isinstance(flt, dict) else []
    fields = [f for f in request.account.custom_fields.values() if not types or f["type"] in types]
    fields.sort(key=lambda f: f["id"])
    return request.page("custom_fields", [_field_wire(request, f) for f in fields])


def _enums(request: Request, raw: Any, path: str, existing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise validation_error([("NotBlank", path, "A select field needs options.")])
    by_id = {e["id"]: e for e in existing}
    out = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not str(item.get("value") or "").strip():
            raise validation_error([("NotBlank", f"{path}.{index}.value", "This value should not be blank.")])
        enum_id = _int(item.get("id"))
        if enum_id is not None and enum_id not in by_id:
            raise validation_error(
                [("NotSupportedChoice", f"{path}.{index}.id", "The value you selected is not valid.")]
            )
        out.append(
            {
                "id": enum_id or request.sandbox.next_id(),
                "value": str(item["value"]),
                "sort": _int(item.get("sort")) or 0,
            }
        )
    return out


def add_fields(request: Request) -> Answer:
    request.require_admin()
    items = request.body
    if not isinstance(items, list) or not items:
        raise validation_error([("InvalidType", "body", "This value should be of type array.")])
    created = []
    for index, item in enumerate(items):
        item = item if isinstance(item, dict) else {}
        if not str(item.get("name") or "").strip():
            raise validation_error([("NotBlank", f"{index}.name", "This value should not be blank.")])
        if item.get("type") not in FIELD_TYPES:
            raise validation_error([("NotSupportedChoice", f"{index}.type", "The value you selected is not valid.")])
        code = item.get("code")
        if code and any(f.get("code") == code for f in request.account.custom_fields.values()):
            raise validation_error([("NotUnique", f"{index}.code", "A field with this code exists.")])
        field_id = request.sandbox.next_id()
        spec = {
            "id": field_id,
            "name": str(item["name"]),
            "type": item["type"],
            "code": code,
            "sort": _int(item.get("sort")) or 500,
            "is_api_only": bool(item.get("is_api_only")),
            "enums": _enums(request, item.get("enums"), f"{index}.enums", [])
            if item["type"] in ("select", "multiselect", "radiobutton")
            else None,
        }
        request.account.custom_fields[field_id] = spec
        created.append({**_field_wire(request, spec), "request_id": str(item.get("request_id", index))})
    return 200, {"_total_items": len(created), "_embedded": {"custom_fields": created}}


def patch_field(request: Request, field_id: int) -> Answer:
    """Edit a field; ``enums`` replaces the option set (options with an id are kept, new ones added)."""
    request.require_admin()
    spec = request.account.custom_fields.get(field_id)
    if spec is None:
        raise problem(404, "Not Found", "Custom field not found")
    body = request.body if isinstance(request.body, dict) else {}
    if "name" in body:
        spec["name"] = str(body["name"])
    if "enums" in body:
        if spec["enums"] is None:
            raise validation_error([("NotSupportedChoice", "enums", "This field has no options.")])
        spec["enums"] = _enums(request, body["enums"], "enums", spec["enums"])
    return 200, _field_wire(request, spec)


# ---------------------------------------------------------------- webhooks


def _hook_wire(hook: Webhook) -> dict[str, Any]:
    return {
        "id": hook.id,
        "created_by": hook.created_by,
        "created_at": hook.created_at,
        "updated_at": hook.created_at,
        "sort": hook.sort,
        "disabled": hook.disabled,
        "destination": hook.destination,
        "settings": list(hook.settings),
    }


def list_webhooks(request: Request) -> Answer:
    request.require_admin()
    flt = request.query.get("filter") or {}
    destination = flt.get("destination") if isinstance(flt, dict) else None
    hooks = [h for h in request.account.webhooks.values() if not destination or h.destination == destination]
    if not hooks:
        return 204, None
    return 200, {"_total_items": len(hooks), "_embedded": {"webhooks": [_hook_wire(h) for h in hooks]}}


def add_webhook(request: Request) -> Answer:
    request.require_admin()
    body = request.body if isinstance(request.body, dict) else {}
    destination = str(body.get("destination") or "")
    if not re.match(r"^https://[^\s/]+", destination):
        raise validation_error([("InvalidValue", "destination", "This value is not a valid URL.")])
    settings = body.get("settings")
    if not isinstance(settings, list) or not settings or any(s not in WEBHOOK_SETTINGS for s in settings):
        raise validation_error([("NotSupportedChoice", "settings", "The value you selected is not valid.")])
    hook = request.account.webhooks.get(destination)
    if hook is None:
        if len(request.account.webhooks) >= 100:
            raise validation_error([("InvalidCount", "destination", "At most 100 webhooks per account.")])
        hook = Webhook(request.sandbox.next_id(), destination, [], request.user_id, int(request.sandbox.clock.now()))
        request.account.webhooks[destination] = hook
    hook.settings = list(dict.fromkeys(settings))
    hook.disabled = False
    return 201, _hook_wire(hook)


def delete_webhook(request: Request) -> Answer:
    request.require_admin()
    body = request.body if isinstance(request.body, dict) else {}
    if request.account.webhooks.pop(str(body.get("destination") or ""), None) is None:
        raise problem(404, "Not Found", "Webhook not found")
    return 204, None


# ---------------------------------------------------------------- tasks, notes, events


def _task_wire(request: Request, task: Mapping[str, Any]) -> dict[str, Any]:
    return {**task, "account_id": request.account.id, "_links": {"self": request.href(f"/api/v4/tasks/{task['id']}")}}


TASK_ORDER_FIELDS = ("id", "created_at", "complete_till")


def list_tasks(request: Request) -> Answer:
    """GET /api/v4/tasks: ``filter[responsible_user_id|created_by|id]`` (one or many), ``filter[is_completed]``
    (1/0), ``filter[task_type]`` (the SDK sends ``task_type_id``), ``filter[entity_type]`` with
    ``filter[entity_id]`` (the entity ids count only with a type, as documented), ``filter[updated_at]``
    (a timestamp or ``[from]``/``[to]``), ``order[id|created_at|complete_till]``; default 50 a page, at most
    250; 204 when nothing is left."""
    flt = request.query.get("filter") or {}
    flt = flt if isinstance(flt, dict) else {}
    tests: list[Callable[[Row], bool]] = []
    for name in ("responsible_user_id", "created_by", "id"):
        if flt.get(name) not in (None, ""):
            tests.append(_member(name, set(_ids(flt[name]))))
    if flt.get("is_completed") not in (None, ""):
        done = str(flt["is_completed"]).lower() in ("1", "true")
        tests.append(lambda task: task["is_completed"] == done)
    task_type = flt.get("task_type", flt.get("task_type_id"))
    if task_type not in (None, ""):
        types = set(_ids(task_type))
        tests.append(lambda task: task["task_type_id"] in types)
    if flt.get("entity_type"):
        entity_type = flt["entity_type"]
        tests.append(lambda task: task["entity_type"] == entity_type)
        if flt.get("entity_id") not in (None, ""):
            entities = set(_ids(flt["entity_id"]))
            tests.append(lambda task: task["entity_id"] in entities)
    tests += _updated_tests(flt.get("updated_at"))
    order = request.query.get("order") or {}
    key, direction = next(iter(order.items())) if isinstance(order, dict) and order else ("id", "asc")
    if key not in TASK_ORDER_FIELDS:
        raise validation_error([("InvalidValue", f"order.{key}", "unsupported order field")])
    if str(direction).lower() not in ("asc", "desc"):
        raise validation_error([("InvalidValue", f"order.{key}", "order must be asc or desc")])
    select = _window(request.account.tasks, tests, key, str(direction).lower() == "desc")
    return request.page("tasks", select, wire=lambda task: _task_wire(request, task))


def add_tasks(request: Request) -> Answer:
    """POST /api/v4/tasks with up to 250 tasks; a task may be bound to a lead or to nothing."""
    items = request.body
    if not isinstance(items, list) or not items:
        raise validation_error([("InvalidType", "body", "This value should be of type array.")])
    if len(items) > MAX_LIMIT:
        raise validation_error([("InvalidCount", "body", "This collection should contain 250 elements or less.")])
    checked = []
    for index, item in enumerate(items):  # amoCRM checks the whole list first: a refused list creates nothing
        item = item if isinstance(item, dict) else {}
        if _int(item.get("complete_till")) is None:
            raise validation_error([("NotBlank", f"{index}.complete_till", "This value should not be blank.")])
        responsible = _int(item.get("responsible_user_id")) or request.user_id
        if responsible not in request.account.users:
            raise validation_error(
                [("NotSupportedChoice", f"{index}.responsible_user_id", "The value you selected is not valid.")]
            )
        entity_type, entity_id = item.get("entity_type"), _int(item.get("entity_id"))
        if entity_type is not None and (entity_type != "leads" or entity_id not in request.account.leads):
            raise validation_error([("NotFound", f"{index}.entity_id", "Entity not found")])
        checked.append((index, item, responsible, entity_type, entity_id))
    created = []
    now = int(request.sandbox.clock.now())
    for index, item, responsible, entity_type, entity_id in checked:
        task_id = request.sandbox.next_id()
        request.account.tasks[task_id] = {
            "id": task_id,
            "created_by": _int(item.get("created_by")) or request.user_id,
            "updated_by": request.user_id,
            "created_at": now,
            "updated_at": now,
            "responsible_user_id": responsible,
            "group_id": 0,
            "entity_id": entity_id,
            "entity_type": entity_type,
            "duration": _int(item.get("duration")) or 0,
            "is_completed": bool(item.get("is_completed")),
            "task_type_id": _int(item.get("task_type_id")) or 1,
            "text": str(item.get("text") or ""),
            "result": [],
            "complete_till": _int(item["complete_till"]),
        }
        created.append({"id": task_id, "request_id": str(item.get("request_id", index))})
    return 200, {"_links": {"self": request.href("/api/v4/tasks")}, "_embedded": {"tasks": created}}


def _task_changes(request: Request, item: Any, prefix: str = "") -> dict[str, Any]:
    """Validate a task PATCH body; the changes to apply."""
    if not isinstance(item, dict):
        raise validation_error([("InvalidType", prefix.rstrip(".") or "body", "This value should be of type object.")])
    changes: dict[str, Any] = {}
    if "is_completed" in item:
        changes["is_completed"] = bool(item["is_completed"])
    if isinstance(item.get("result"), dict):
        changes["result"] = {"text": str(item["result"].get("text") or "")}
    if "text" in item:
        changes["text"] = str(item["text"])
    if "complete_till" in item:
        complete_till = _int(item["complete_till"])
        if complete_till is None:
            raise validation_error([("InvalidType", f"{prefix}complete_till", "This value should be an integer.")])
        changes["complete_till"] = complete_till
    if "responsible_user_id" in item:
        responsible = _int(item["responsible_user_id"])
        if responsible not in request.account.users:
            raise validation_error(
                [("NotSupportedChoice", f"{prefix}responsible_user_id", "The value you selected is not valid.")]
            )
        changes["responsible_user_id"] = responsible
    return changes


def _apply_task(request: Request, task: dict[str, Any], changes: Mapping[str, Any]) -> None:
    task.update(changes)
    task["updated_by"] = request.user_id
    task["updated_at"] = int(request.sandbox.clock.now())


def patch_task(request: Request, task_id: int) -> Answer:
    """PATCH /api/v4/tasks/{id}: close (``is_completed``, ``result``), reword, reschedule, reassign."""
    task = request.account.tasks.get(task_id)
    if task is None:
        raise problem(404, "Not Found", "Task not found")
    _apply_task(request, task, _task_changes(request, request.body))
    links = {"self": request.href(f"/api/v4/tasks/{task_id}")}
    return 200, {"id": task_id, "updated_at": task["updated_at"], "_links": links}


def patch_tasks(request: Request) -> Answer:
    """PATCH /api/v4/tasks with ``[{id, ...}]``: all or nothing."""
    items = request.body
    if not isinstance(items, list) or not items:
        raise validation_error([("InvalidType", "body", "This value should be of type array.")])
    if len(items) > MAX_LIMIT:
        raise validation_error([("InvalidCount", "body", "This collection should contain 250 elements or less.")])
    planned = []
    for index, item in enumerate(items):
        task = request.account.tasks.get(_int(item.get("id") if isinstance(item, dict) else None) or 0)
        if task is None:
            raise validation_error([("NotFound", f"{index}.id", "Entity not found")], request_id=str(index))
        planned.append((task, _task_changes(request, item, f"{index}."), item))
    answers = []
    for index, (task, changes, item) in enumerate(planned):
        _apply_task(request, task, changes)
        answers.append(
            {"id": task["id"], "updated_at": task["updated_at"], "request_id": str(item.get("request_id", index))}
        )
    return 200, {"_links": {"self": request.href("/api/v4/tasks")}, "_embedded": {"tasks": answers}}


def list_notes(request: Request, lead_id: int) -> Answer:
    flt = request.query.get("filter") or {}
    types = _strings(flt.get("note_type")) if isinstance(flt, dict) else []
    notes = [
        n
        for n in request.account.notes.values()
        if n["entity_id"] == lead_id and (not types or n["note_type"] in types)
    ]
    notes.sort(key=lambda n: n["id"])
    return request.page("notes", notes)


def add_notes(request: Request) -> Answer:
    items = request.body
    if not isinstance(items, list) or not items:
        raise validation_error([("InvalidType", "body", "This value should be of type array.")])
    created = []
    now = int(request.sandbox.clock.now())
    for index, item in enumerate(items):
        item = item if isinstance(item, dict) else {}
        if _int(item.get("entity_id")) not in request.account.leads:
            raise validation_error([("NotFound", f"{index}.entity_id", "Entity not found")])
        if item.get("note_type") not in ("common", "call_in", "call_out", "service_message"):
            raise validation_error(
                [("NotSupportedChoice", f"{index}.note_type", "The value you selected is not valid.")]
            )
        note_id = request.sandbox.next_id()
        request.account.notes[note_id] = {
            "id": note_id,
            "entity_id": _int(item["entity_id"]),
            "created_by": request.user_id,
            "updated_by": request.user_id,
            "created_at": now,
            "updated_at": now,
            "responsible_user_id": request.user_id,
            "group_id": 0,
            "note_type": item["note_type"],
            "params": dict(item.get("params") or {}),
            "account_id": request.account.id,
        }
        created.append(
            {"id": note_id, "entity_id": _int(item["entity_id"]), "request_id": str(item.get("request_id", index))}
        )
    return 200, {"_embedded": {"notes": created}}


def list_events(request: Request) -> Answer:
    flt = request.query.get("filter") or {}
    flt = flt if isinstance(flt, dict) else {}
    events = list(request.account.events)
    types = _strings(flt.get("type"))
    if types:
        events = [e for e in events if e["type"] in types]
    entities = _strings(flt.get("entity"))
    if entities:
        events = [e for e in events if e["entity_type"] in entities]
    ids = _ids(flt.get("entity_id"))
    if ids:
        events = [e for e in events if e["entity_id"] in ids]
    if flt.get("created_by") not in (None, ""):
        authors = _ids(flt["created_by"])
        events = [e for e in events if e["created_by"] in authors]
    created = flt.get("created_at")
    if isinstance(created, dict):
        since, until = _int(created.get("from")), _int(created.get("to"))
        events = [
            e
            for e in events
            if (since is None or e["created_at"] >= since) and (until is None or e["created_at"] <= until)
        ]
    events.sort(key=lambda e: e["id"], reverse=True)  # newest first
    return request.page("events", events, max_limit=EVENTS_MAX_LIMIT, default=EVENTS_MAX_LIMIT)


# ---------------------------------------------------------------- people and the account


def list_users(request: Request) -> Answer:
    request.require_admin()
    users = []
    for user in sorted(request.account.users.values(), key=lambda u: u["id"]):
        wire = {**user, "_links": {"self": request.href(f"/api/v4/users/{user['id']}")}}
        if "group" in _strings(request.query.get("with")):
            group_id = user["rights"]["group_id"]
            wire["_embedded"] = {"groups": [{"id": group_id, "name": request.account.groups.get(group_id, "")}]}
        users.append(wire)
    return request.page("users", users)


def get_account(request: Request) -> Answer:
    body: dict[str, Any] = {
        "id": request.account.id,
        "name": request.account.subdomain.title(),
        "subdomain": request.account.subdomain,
        "current_user_id": request.user_id,
        "country": "RU",
        "currency": "RUB",
        "currency_symbol": "₽",
        "customers_mode": "disabled",
        "is_unsorted_on": True,
        "is_loss_reason_enabled": True,
        "is_helpbot_enabled": False,
        "is_technical_account": False,
        "contact_name_display_order": 1,
        "_links": {"self": request.href("/api/v4/account")},
    }
    embedded: dict[str, Any] = {}
    if "users_groups" in _strings(request.query.get("with")):
        embedded["users_groups"] = [
            {"id": gid, "name": name, "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{request.account.id}/{gid}"))}
            for gid, name in sorted(request.account.groups.items())
        ]
    if "datetime_settings" in _strings(request.query.get("with")):
        offset = datetime.now(ZoneInfo(request.account.timezone)).strftime("%z")
        body["datetime_settings"] = {
            "timezone": request.account.timezone,
            "timezone_offset": f"{offset[:3]}:{offset[3:]}",
        }
    if embedded:
        body["_embedded"] = embedded
    return 200, body


def list_loss_reasons(request: Request) -> Answer:
    reasons = [{"id": rid, "name": name, "sort": 0} for rid, name in sorted(request.account.loss_reasons.items())]
    return request.page("loss_reasons", reasons)


# ---------------------------------------------------------------- routing

Route = tuple[str, re.Pattern[str], Callable[..., Answer]]
ROUTES: list[Route] = [
    ("GET", re.compile(r"/api/v4/leads/pipelines"), list_pipelines),
    ("POST", re.compile(r"/api/v4/leads/pipelines"), add_pipelines),
    ("GET", re.compile(r"/api/v4/leads/pipelines/(\d+)"), get_pipeline),
    ("POST", re.compile(r"/api/v4/leads/pipelines/(\d+)/statuses"), add_statuses),
    ("PATCH", re.compile(r"/api/v4/leads/pipelines/(\d+)/statuses/(\d+)"), patch_status),
    ("GET", re.compile(r"/api/v4/leads/custom_fields"), list_fields),
    ("POST", re.compile(r"/api/v4/leads/custom_fields"), add_fields),
    ("PATCH", re.compile(r"/api/v4/leads/custom_fields/(\d+)"), patch_field),
    ("GET", re.compile(r"/api/v4/leads/loss_reasons"), list_loss_reasons),
    ("POST", re.compile(r"/api/v4/leads/notes"), add_notes),
    ("GET", re.compile(r"/api/v4/leads/(\d+)/notes"), list_notes),
    ("GET", re.compile(r"/api/v4/leads/(\d+)"), get_lead),
    ("PATCH", re.compile(r"/api/v4/leads/(\d+)"), patch_leads),
    ("GET", re.compile(r"/api/v4/leads"), list_leads),
    ("PATCH", re.compile(r"/api/v4/leads"), lambda request: patch_leads(request, None)),
    ("POST", re.compile(r"/api/v4/leads"), add_leads),
    ("GET", re.compile(r"/api/v4/contacts/(\d+)"), lambda request, cid: get_client(request, "contacts", cid)),
    ("GET", re.compile(r"/api/v4/contacts"), lambda request: list_clients(request, "contacts")),
    ("GET", re.compile(r"/api/v4/companies/(\d+)"), lambda request, cid: get_client(request, "companies", cid)),
    ("GET", re.compile(r"/api/v4/companies"), lambda request: list_clients(request, "companies")),
    ("GET", re.compile(r"/api/v4/webhooks"), list_webhooks),
    ("POST", re.compile(r"/api/v4/webhooks"), add_webhook),
    ("DELETE", re.compile(r"/api/v4/webhooks"), delete_webhook),
    ("GET", re.compile(r"/api/v4/tasks"), list_tasks),
    ("POST", re.compile(r"/api/v4/tasks"), add_tasks),
    ("PATCH", re.compile(r"/api/v4/tasks/(\d+)"), patch_task),
    ("PATCH", re.compile(r"/api/v4/tasks"), patch_tasks),
    ("GET", re.compile(r"/api/v4/events"), list_events),
    ("GET", re.compile(r"/api/v4/users"), list_users),
    ("GET", re.compile(r"/api/v4/account"), get_account),
]


def dispatch(request: Request) -> Answer:
    """Route one authenticated call; ApiError for 4xx answers."""
    path = request.path.rstrip("/")
    for method, pattern, handler in ROUTES:
        match = pattern.fullmatch(path)
        if match and method == request.method:
            return handler(request, *(int(group) for group in match.groups()))
    if any(pattern.fullmatch(path) for _m, pattern, _h in ROUTES):
        raise problem(405, "Method Not Allowed")
    raise problem(404, "Not Found")


def handle(
    sandbox: AmoSandbox, host: str, authorization: str, method: str, path: str, query: dict, body: Any
) -> Answer:
    """Authenticate, rate-limit, dispatch and log one API call."""
    status = 500
    account = sandbox.account_by_host(host)
    try:
        with sandbox.lock:
            account_, user_id = sandbox.authenticate(host, authorization)
            request = Request(sandbox, account_, user_id, method, path, query, body)
            status, answer = dispatch(request)
            return status, answer
    except ApiError as error:
        status = error.status
        raise
    finally:
        if account is not None:
            with sandbox.lock:
                account.calls.append((method, path.rstrip("/"), status))
