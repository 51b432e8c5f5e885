"""REST methods of the emulated portal, with Bitrix24's parameters, answers and errors."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import qs_codec

from sandbox import ops
from sandbox.clock import iso
from sandbox.errors import RestError, access_denied, bad_argument, not_found
from sandbox.query import (
    PAGE_SIZE,
    Condition,
    as_list,
    compile_filter,
    paginate,
    parse_filter,
    parse_order,
    parse_start,
    select_fields,
    to_camel,
    truthy,
)
from sandbox.state import DEAL_ENTITY_TYPE_ID, DEAL_FIELDS, DEAL_KINDS, EventBinding, Placement, Portal, Robot
from sandbox.state import UserField as UserFieldRow

if TYPE_CHECKING:
    from sandbox.context import CallContext

DECODE_OPTIONS = qs_codec.DecodeOptions(list_limit=10000, depth=12, parameter_limit=100000)


def decode_params(query: str) -> dict[str, Any]:
    """Decode a PHP-bracket query string or form body."""
    if not query:
        return {}
    return dict(qs_codec.decode(query, DECODE_OPTIONS))


@dataclass
class Answer:
    """A method's result plus the paging keys that go next to it."""

    result: Any
    next: int | None = None
    total: int | None = None


Method = Callable[["CallContext", dict[str, Any]], Answer]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method."""

    func: Method
    scope: str
    admin: bool


METHODS: dict[str, MethodSpec] = {}


def method(name: str, scope: str, admin: bool = False) -> Callable[[Method], Method]:
    """Register a REST method."""

    def register(func: Method) -> Method:
        METHODS[name] = MethodSpec(func, scope, admin)
        return func

    return register


def arg(params: Mapping[str, Any], name: str, default: Any = None) -> Any:
    """A parameter, case-insensitively (Bitrix24 accepts both `id` and `ID` in most methods)."""
    if name in params:
        return params[name]
    lowered = name.lower()
    for key, value in params.items():
        if str(key).lower() == lowered:
            return value
    return default


def as_int(value: Any, default: int | None = None) -> int | None:
    """An integer parameter or the default."""
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default


def as_map(value: Any) -> dict[str, Any]:
    """A mapping parameter; anything else is empty."""
    return dict(value) if isinstance(value, Mapping) else {}


def dispatch(ctx: CallContext, params: dict[str, Any]) -> Answer:
    """Run one method (auth and the leaky bucket have already been dealt with)."""
    portal = ctx.portal
    forced = portal.forced_errors.get(ctx.method)
    if forced:
        error = forced[0]
        if error.times > 0:
            error.times -= 1
            if error.times == 0:
                forced.pop(0)
        raise RestError(error.status, error.code, error.description)
    spec = METHODS.get(ctx.method)
    if spec is None:
        raise RestError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
    scopes = {item.strip() for item in portal.scope.split(",")}
    if spec.scope not in scopes:
        raise RestError(403, "insufficient_scope", "The request requires higher privileges than provided.")
    limited = portal.operation_limited.get(ctx.method)
    if limited:
        if limited > 0:
            portal.operation_limited[ctx.method] = limited - 1
            if limited == 1:
                del portal.operation_limited[ctx.method]
        now = ctx.sandbox.clock.now()
        timing = ctx.sandbox._time(now, now)
        timing["operating_reset_at"] = now + portal.operation_reset_in.get(ctx.method, 600.0)
        timing["operating"] = 480
        raise RestError(
            429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.", extra={"time": timing}
        )
    if spec.admin and not portal.user_is_admin(ctx.user_id):
        raise access_denied("Access denied! Administrator access required")
    return spec.func(ctx, params)


# ---- batch -----------------------------------------------------------------------------------------

_REFERENCE = re.compile(r"\$result\[([^\]]+)\]((?:\[[^\]]*\])*)")


def _lookup(results: Mapping[str, Any], match: re.Match[str]) -> Any:
    value: Any = results.get(match.group(1))
    for key in re.findall(r"\[([^\]]*)\]", match.group(2)):
        if isinstance(value, list):
            index = as_int(key)
            value = value[index] if index is not None and index < len(value) else None
        elif isinstance(value, Mapping):
            value = value.get(key)
        else:
            value = None
    return value


def _resolve_references(value: Any, results: Mapping[str, Any]) -> Any:
    """Substitute `$result[key][...]` in the decoded parameter values of a batch command, the way the
    portal does it (after parsing the command's query string, so encoded references work too). A value
    that is just a reference to a list or map gets that structure; inside text it becomes empty."""
    if isinstance(value, Mapping):
        return {k: _resolve_references(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_references(v, results) for v in value]
    if not isinstance(value, str) or "$result[" not in value:
        return value
    whole = _REFERENCE.fullmatch(value)
    if whole is not None:
        found = _lookup(results, whole)
        return "" if found is None else found if isinstance(found, list | dict) else str(found)

    def replace(match: re.Match[str]) -> str:
        found = _lookup(results, match)
        return "" if found is None or isinstance(found, list | dict) else str(found)

    return _REFERENCE.sub(replace, value)


def _empty_as_list(value: dict[str, Any]) -> dict[str, Any] | list[Any]:
    return value if value else []


def batch(ctx: CallContext, params: dict[str, Any], timer: Callable[[float, float], dict[str, Any]]) -> Any:
    """batch: up to 50 commands, each a `method?query` string; one request for the leaky bucket."""
    commands = arg(params, "cmd")
    if isinstance(commands, list):
        commands = {str(index): value for index, value in enumerate(commands)}
    if not isinstance(commands, Mapping):
        commands = {}
    if len(commands) > 50:
        raise RestError(400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded")
    halt = truthy(arg(params, "halt", False))
    results: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    totals: dict[str, Any] = {}
    nexts: dict[str, Any] = {}
    times: dict[str, Any] = {}
    from sandbox.context import CallContext

    for key, command in commands.items():
        key = str(key)
        name, _, query = str(command).partition("?")
        name = name.strip().lower().removesuffix(".json")
        started = ctx.sandbox.clock.now()
        inner = CallContext(ctx.sandbox, ctx.portal, ctx.user_id, name, ctx.auth_connector, in_batch=True)
        inner_params = _resolve_references(decode_params(query), results)
        inner_params.pop("auth", None)
        if inner_params.get("auth_connector"):
            inner.auth_connector = str(inner_params["auth_connector"])
        try:
            if name == "batch":
                raise RestError(405, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage")
            ctx.portal.rest_calls[name] = ctx.portal.rest_calls.get(name, 0) + 1
            answer = dispatch(inner, inner_params)
        except RestError as error:
            ctx.sandbox._log(inner, inner_params, error.status)
            errors[key] = error.body()
            times[key] = timer(started, ctx.sandbox.clock.now())
            if halt:
                break
            continue
        ctx.sandbox._log(inner, inner_params, 200)
        results[key] = answer.result
        if answer.total is not None:
            totals[key] = answer.total
        if answer.next is not None:
            nexts[key] = answer.next
        times[key] = timer(started, ctx.sandbox.clock.now())
    return {
        "result": _empty_as_list(results),
        "result_error": _empty_as_list(errors),
        "result_total": _empty_as_list(totals),
        "result_next": _empty_as_list(nexts),
        "result_time": _empty_as_list(times),
    }


# ---- app, users, departments -----------------------------------------------------------------------


@method("app.info", "app")
def app_info(ctx: CallContext, p: dict[str, Any]) -> Answer:
    portal = ctx.portal
    return Answer(
        {
            "ID": "17",
            "CODE": portal.app_code,
            "VERSION": portal.app_version,
            "STATUS": portal.status,
            "INSTALLED": portal.installed,
            "PAYMENT_EXPIRED": "N",
            "DAYS": None,
            "LANGUAGE_ID": portal.language,
            "LICENSE": portal.license,
            "LICENSE_TYPE": portal.license.partition("_")[2].rstrip("0123456789") or "project",
            "LICENSE_FAMILY": portal.license.partition("_")[2].rstrip("0123456789") or "project",
        }
    )


@method("feature.get", "app")
def feature_get(ctx: CallContext, p: dict[str, Any]) -> Answer:
    code = str(arg(p, "CODE") or "")
    if code == "rest_offline_extended":
        return Answer({"value": "Y" if ctx.portal.offline_extended else "N"})
    if code == "rest_auth_connector":
        return Answer({"value": "Y" if ctx.portal.auth_connector_enabled else "N"})
    raise bad_argument("Feature not found", code="ERROR_FEATURE_NOT_FOUND")


USER_KINDS = {
    "ID": "int",
    "ACTIVE": "bool",
    "NAME": "str",
    "LAST_NAME": "str",
    "SECOND_NAME": "str",
    "EMAIL": "str",
    "WORK_POSITION": "str",
    "UF_DEPARTMENT": "int",
    "USER_TYPE": "str",
    "IS_ONLINE": "str",
}


def user_wire(user: Mapping[str, Any]) -> dict[str, Any]:
    """A user as user.get prints it (ACTIVE is a real boolean, UF_DEPARTMENT a list of ints)."""
    return {
        "ID": str(user["ID"]),
        "XML_ID": user.get("XML_ID", ""),
        "ACTIVE": bool(user["ACTIVE"]),
        "NAME": user["NAME"],
        "LAST_NAME": user["LAST_NAME"],
        "SECOND_NAME": user.get("SECOND_NAME", ""),
        "EMAIL": user.get("EMAIL", ""),
        "LAST_LOGIN": iso(user.get("LAST_LOGIN")),
        "DATE_REGISTER": iso(user.get("DATE_REGISTER")),
        "IS_ONLINE": user.get("IS_ONLINE", "N"),
        "TIME_ZONE_OFFSET": "10800",
        "PERSONAL_GENDER": user.get("PERSONAL_GENDER", ""),
        "WORK_POSITION": user.get("WORK_POSITION", ""),
        "UF_DEPARTMENT": list(user.get("UF_DEPARTMENT", [])),
        "USER_TYPE": user.get("USER_TYPE", "employee"),
    }


def _current_user(ctx: CallContext) -> dict[str, Any]:
    user = ctx.portal.users.get(ctx.user_id)
    if user is None:
        raise RestError(401, "invalid_token", "Unable to get application by token")
    return user


@method("user.current", "user")
def user_current(ctx: CallContext, p: dict[str, Any]) -> Answer:
    return Answer(user_wire(_current_user(ctx)))


@method("user.admin", "user")
def user_admin(ctx: CallContext, p: dict[str, Any]) -> Answer:
    return Answer(ctx.portal.user_is_admin(ctx.user_id))


@method("profile", "user")
def profile(ctx: CallContext, p: dict[str, Any]) -> Answer:
    user = _current_user(ctx)
    return Answer(
        {
            "ID": str(user["ID"]),
            "ADMIN": ctx.portal.user_is_admin(ctx.user_id),
            "NAME": user["NAME"],
            "LAST_NAME": user["LAST_NAME"],
            "PERSONAL_GENDER": user.get("PERSONAL_GENDER", ""),
            # The user's own zone; empty while he follows the portal's (the documented answer shows "").
            "TIME_ZONE": user.get("TIME_ZONE", ""),
        }
    )


@method("server.time", "app")
def server_time(ctx: CallContext, p: dict[str, Any]) -> Answer:
    """The portal's time with its UTC offset, ``YYYY-MM-DDThh:mm:ss±hh:mm`` (scope basic)."""
    return Answer(iso(ctx.sandbox.clock.now()))


@method("user.get", "user")
def user_get(ctx: CallContext, p: dict[str, Any]) -> Answer:
    raw_filter = as_map(arg(p, "FILTER"))
    for key, value in p.items():
        upper = str(key).upper()
        if upper not in {"FILTER", "SORT", "ORDER", "START", "ADMIN_MODE", "SELECT"}:
            raw_filter[key] = value
    predicate = compile_filter(parse_filter(raw_filter), USER_KINDS, lambda row, name: row.get(name))
    sort = str(arg(p, "sort") or "ID").upper()
    order = [(sort, str(arg(p, "order") or "ASC").upper() == "DESC")]
    page = paginate(
        ctx.portal.users.values(), predicate, order, USER_KINDS, lambda r, n: r.get(n), parse_start(arg(p, "start"))
    )
    return Answer([user_wire(user) for user in page.rows], page.next, page.total)


DEPARTMENT_KINDS = {"ID": "int", "NAME": "str", "SORT": "int", "PARENT": "int", "UF_HEAD": "int"}


@method("department.get", "department")
def department_get(ctx: CallContext, p: dict[str, Any]) -> Answer:
    # Lowercase sort/order/start are paging parameters; filter fields (ID, NAME, SORT, ...) are uppercase.
    raw_filter = {
        k: v for k, v in p.items() if k not in ("sort", "order", "start") and str(k).upper() in DEPARTMENT_KINDS
    }
    predicate = compile_filter(parse_filter(raw_filter), DEPARTMENT_KINDS, lambda r, n: r.get(n))
    sort = str(arg(p, "sort") or "ID").upper()
    order = [(sort, str(arg(p, "order") or "ASC").upper() == "DESC")]
    page = paginate(
        ctx.portal.departments.values(),
        predicate,
        order,
        DEPARTMENT_KINDS,
        lambda r, n: r.get(n),
        parse_start(arg(p, "START", arg(p, "start"))),
    )
    rows = []
    for department in page.rows:
        row = {"ID": str(department["ID"]), "NAME": department["NAME"], "SORT": str(department["SORT"])}
        if department.get("PARENT"):
            row["PARENT"] = str(department["PARENT"])
        if department.get("UF_HEAD"):
            row["UF_HEAD"] = str(department["UF_HEAD"])
        rows.append(row)
    return Answer(rows, page.next, page.total)


# ---- funnels and stages ----------------------------------------------------------------------------


def _entity_type(p: Mapping[str, Any]) -> int:
    entity_type = as_int(arg(p, "entityTypeId"))
    if entity_type != DEAL_ENTITY_TYPE_ID:
        raise bad_argument("The sandbox only knows deals (entityTypeId 2)", code="NOT_FOUND")
    return entity_type


def _category_wire(category: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": category["ID"],
        "name": category["NAME"],
        "sort": category["SORT"],
        "entityTypeId": DEAL_ENTITY_TYPE_ID,
        "isDefault": "Y" if category["ID"] == 0 else "N",
        "originId": "",
        "originatorId": "",
    }


@method("crm.category.list", "crm")
def category_list(ctx: CallContext, p: dict[str, Any]) -> Answer:
    _entity_type(p)
    categories = sorted(ctx.portal.categories.values(), key=lambda c: (c["SORT"], c["ID"]))
    return Answer({"categories": [_category_wire(c) for c in categories]}, total=len(categories))


@method("crm.category.get", "crm")
def category_get(ctx: CallContext, p: dict[str, Any]) -> Answer:
    _entity_type(p)
    category = ctx.portal.categories.get(as_int(arg(p, "id"), -1) or 0)
    if category is None:
        raise bad_argument("Category not found", code="NOT_FOUND")
    return Answer({"category": _category_wire(category)})


def _add_category(portal: Portal, name: str, sort: int) -> dict[str, Any]:
    """A new deal funnel with the stages Bitrix24 gives it (no event: Bitrix24 has none for a new funnel)."""
    from sandbox.seed import add_stages

    name = name.strip()
    if not name:
        raise RestError(400, "0", "Field 'NAME' is required")
    category_id = max(portal.categories, default=0) + 1
    portal.categories[category_id] = {"ID": category_id, "NAME": name, "SORT": max(sort, 0)}
    add_stages(portal, category_id)
    return portal.categories[category_id]


@method("crm.category.add", "crm", admin=True)
def category_add(ctx: CallContext, p: dict[str, Any]) -> Answer:
    _entity_type(p)
    fields = as_map(arg(p, "fields"))
    category = _add_category(ctx.portal, str(fields.get("name") or ""), as_int(fields.get("sort"), 500) or 0)
    return Answer({"category": _category_wire(category)})


@method("crm.dealcategory.add", "crm", admin=True)
def dealcategory_add(ctx: CallContext, p: dict[str, Any]) -> Answer:
    fields = {str(k).upper(): v for k, v in as_map(arg(p, "fields")).items()}
    category = _add_category(ctx.portal, str(fields.get("NAME") or ""), as_int(fields.get("SORT"), 500) or 0)
    return Answer(category["ID"])


STATUS_KINDS = {
    "ID": "int",
    "ENTITY_ID": "str",
    "STATUS_ID": "str",
    "NAME": "str",
    "SORT": "int",
    "SYSTEM": "yn",
    "CATEGORY_ID": "int",
    "SEMANTICS": "str",
}


def status_wire(portal: Portal, row: Mapping[str, Any]) -> dict[str, Any]:
    """A crm.status row as crm.status.list prints it."""
    semantics = row.get("SEMANTICS")
    extra: dict[str, Any] | None = None
    if row["ENTITY_ID"].startswith("DEAL_STAGE"):
        if semantics == "S":
            label = "success"
        elif semantics == "F":
            failures = [s for s in portal.stages(int(row["CATEGORY_ID"] or 0)) if s.get("SEMANTICS") == "F"]
            label = "failure" if failures and failures[0]["ID"] == row["ID"] else "apology"
        else:
            label = "process"
        extra = {"SEMANTICS": label, "COLOR": row.get("COLOR", "")}
    wire = {
        "ID": str(row["ID"]),
        "ENTITY_ID": row["ENTITY_ID"],
        "STATUS_ID": row["STATUS_ID"],
        "NAME": row["NAME"],
        "NAME_INIT": row.get("NAME_INIT", row["NAME"]) if row.get("SYSTEM") == "Y" else "",
        "SORT": str(row["SORT"]),
        "SYSTEM": row.get("SYSTEM", "N"),
        "CATEGORY_ID": None if row.get("CATEGORY_ID") is None else str(row["CATEGORY_ID"]),
        "COLOR": row.get("COLOR", ""),
        "SEMANTICS": semantics,
    }
    if extra is not None:
        wire["EXTRA"] = extra
    return wire


@method("crm.status.list", "crm")
def status_list(ctx: CallContext, p: dict[str, Any]) -> Answer:
    predicate = compile_filter(parse_filter(arg(p, "filter")), STATUS_KINDS, lambda r, n: r.get(n))
    order = parse_order(arg(p, "order")) or [("SORT", False), ("ID", False)]
    rows = [row for row in ctx.portal.statuses.values() if predicate(row)]
    from sandbox.query import sort_rows

    sort_rows(rows, order, STATUS_KINDS, lambda r, n: r.get(n))
    return Answer([status_wire(ctx.portal, row) for row in rows], total=len(rows))


@method("crm.status.get", "crm")
def status_get(ctx: CallContext, p: dict[str, Any]) -> Answer:
    row = ctx.portal.statuses.get(as_int(arg(p, "id"), 0) or 0)
    if row is None:
        raise not_found()
    return Answer(status_wire(ctx.portal, row))


@method("crm.status.entity.types", "crm")
def status_entity_types(ctx: CallContext, p: dict[str, Any]) -> Answer:
    types: list[dict[str, Any]] = [
        {"ID": "STATUS", "NAME": "Статусы", "SEMANTIC_INFO": {}},
        {"ID": "SOURCE", "NAME": "Источники", "SEMANTIC_INFO": {}},
        {"ID": "DEAL_TYPE", "NAME": "Тип сделки", "SEMANTIC_INFO": {}},
    ]
    for category_id in sorted(ctx.portal.categories):
        stages = ctx.portal.stages(category_id)
        prefix = "" if category_id == 0 else f"C{category_id}"
        success = next((s["STATUS_ID"] for s in stages if s.get("SEMANTICS") == "S"), "")
        failure = next((s["STATUS_ID"] for s in stages if s.get("SEMANTICS") == "F"), "")
        name = ctx.portal.categories[category_id]["NAME"]
        entry: dict[str, Any] = {
            "ID": ctx.portal.stage_entity(category_id),
            "NAME": f"Стадии сделки ({name})" if category_id else "Стадии сделки",
            "PARENT_ID": "" if category_id == 0 else "DEAL_STAGE",
            "SEMANTIC_INFO": {
                "START_FIELD": stages[0]["STATUS_ID"] if stages else "",
                "FINAL_SUCCESS_FIELD": success,
                "FINAL_UNSUCCESS_FIELD": failure,
                "FINAL_SORT": next((s["SORT"] for s in stages if s.get("SEMANTICS") == "S"), 0),
            },
            "ENTITY_TYPE_ID": DEAL_ENTITY_TYPE_ID,
            "IS_ENABLED": True,
            "CATEGORY_ID": category_id,
        }
        if prefix:
            entry["PREFIX"] = prefix
        types.append(entry)
    return Answer(types)


_STATUS_ID = re.compile(r"^[A-Za-z0-9_-]{1,22}$")


def _entity_category(portal: Portal, entity_id: str) -> int | None:
    if entity_id == "DEAL_STAGE":
        return 0
    match = re.fullmatch(r"DEAL_STAGE_(\d+)", entity_id)
    if match and int(match.group(1)) in portal.categories:
        return int(match.group(1))
    return None


@method("crm.status.add", "crm", admin=True)
def status_add(ctx: CallContext, p: dict[str, Any]) -> Answer:
    portal = ctx.portal
    fields = {str(k).upper(): v for k, v in as_map(arg(p, "fields")).items()}
    entity_id = str(fields.get("ENTITY_ID") or "")
    status_id = str(fields.get("STATUS_ID") or "")
    name = str(fields.get("NAME") or "")
    if not entity_id or not status_id or not name:
        raise RestError(400, "", "Required fields: ENTITY_ID, STATUS_ID, NAME")
    category = _entity_category(portal, entity_id)
    known_entities = {"STATUS", "SOURCE", "DEAL_TYPE"}
    if category is None and entity_id not in known_entities:
        raise RestError(400, "", f"ENTITY_ID {entity_id} is not defined")
    raw_id = status_id
    if category:
        prefix = f"C{category}:"
        raw_id = status_id[len(prefix) :] if status_id.startswith(prefix) else status_id
        status_id = prefix + raw_id
    if not _STATUS_ID.match(raw_id):
        raise RestError(400, "", "STATUS_ID may contain only Latin letters, digits, '_' and '-', up to 22 characters")
    if any(r["ENTITY_ID"] == entity_id and r["STATUS_ID"] == status_id for r in portal.statuses.values()):
        raise RestError(400, "", f"Status ID {status_id} already exists")
    semantics = str(fields.get("SEMANTICS") or "").upper() or None
    if semantics not in {None, "S", "F"}:
        raise RestError(400, "", "SEMANTICS must be S, F or empty")
    if semantics == "S" and category is not None:
        if any(s.get("SEMANTICS") == "S" for s in portal.stages(category)):
            raise RestError(400, "", "A funnel has only one success stage")
    row_id = portal.next_id("status", start=1000)
    portal.statuses[row_id] = {
        "ID": row_id,
        "ENTITY_ID": entity_id,
        "STATUS_ID": status_id,
        "NAME": name,
        "NAME_INIT": "",
        "SORT": as_int(fields.get("SORT"), 10),
        "SYSTEM": "N",
        "CATEGORY_ID": category,
        "COLOR": str(fields.get("COLOR") or "#39A8EF"),
        "SEMANTICS": semantics if category is not None else None,
    }
    return Answer(row_id)


@method("crm.status.update", "crm", admin=True)
def status_update(ctx: CallContext, p: dict[str, Any]) -> Answer:
    row = ctx.portal.statuses.get(as_int(arg(p, "id"), 0) or 0)
    if row is None:
        raise not_found()
    fields = {str(k).upper(): v for k, v in as_map(arg(p, "fields")).items()}
    if "NAME" in fields and str(fields["NAME"]).strip():
        row["NAME"] = str(fields["NAME"])
    if "SORT" in fields:
        row["SORT"] = as_int(fields["SORT"], row["SORT"])
    if "COLOR" in fields:
        row["COLOR"] = str(fields["COLOR"])
    return Answer(True)


@method("crm.status.delete", "crm", admin=True)
def status_delete(ctx: CallContext, p: dict[str, Any]) -> Answer:
    portal = ctx.portal
    row = portal.statuses.get(as_int(arg(p, "id"), 0) or 0)
    if row is None:
        raise not_found()
    params = {str(k).upper(): v for k, v in as_map(arg(p, "params")).items()}
    if row.get("SYSTEM") == "Y" and not truthy(params.get("FORCED", "N")):
        raise RestError(400, "", "The system status can not be deleted")
    if row["ENTITY_ID"].startswith("DEAL_STAGE") and any(d.stage_id == row["STATUS_ID"] for d in portal.deals.values()):
        raise RestError(400, "", "There are deals in this stage")
    del portal.statuses[row["ID"]]
    return Answer(True)


# ---- deals -----------------------------------------------------------------------------------------


def _actor(ctx: CallContext) -> tuple[int, int]:
    return ctx.user_id, ctx.user_id


# What crm.deal.fields calls the standard fields on a Russian portal (its `title`; another language's
# portal answers in that language). Fields not named here answer with their code, as Bitrix24 does for
# MOVED_BY_ID, MOVED_TIME and the like.
DEAL_FIELD_TITLES: dict[str, str] = {
    "ID": "ID", "TITLE": "Название", "TYPE_ID": "Тип", "STAGE_ID": "Стадия сделки", "PROBABILITY": "Вероятность",
    "CURRENCY_ID": "Валюта", "OPPORTUNITY": "Сумма", "TAX_VALUE": "Ставка налога", "LEAD_ID": "Лид",
    "COMPANY_ID": "Компания", "CONTACT_ID": "Контакт", "QUOTE_ID": "Предложение", "BEGINDATE": "Дата начала",
    "CLOSEDATE": "Дата завершения", "ASSIGNED_BY_ID": "Ответственный", "CREATED_BY_ID": "Кем создана",
    "MODIFY_BY_ID": "Кем изменена", "DATE_CREATE": "Дата создания", "DATE_MODIFY": "Дата изменения",
    "OPENED": "Доступна для всех", "CLOSED": "Закрыта", "COMMENTS": "Комментарий",
    "ADDITIONAL_INFO": "Дополнительная информация", "LOCATION_ID": "Местоположение", "CATEGORY_ID": "Воронка",
    "STAGE_SEMANTIC_ID": "Группа стадии", "IS_NEW": "Новая сделка", "IS_RECURRING": "Регулярная сделка",
    "IS_RETURN_CUSTOMER": "Повторная сделка", "IS_REPEATED_APPROACH": "Повторное обращение",
    "SOURCE_ID": "Источник", "SOURCE_DESCRIPTION": "Дополнительно об источнике", "ORIGINATOR_ID": "Внешний источник",
    "ORIGIN_ID": "Идентификатор элемента во внешнем источнике", "UTM_SOURCE": "Рекламная система",
    "UTM_MEDIUM": "Тип трафика", "UTM_CAMPAIGN": "Обозначение рекламной кампании",
    "UTM_CONTENT": "Содержание кампании", "UTM_TERM": "Условие поиска кампании",
}  # fmt: skip
_FIELD_TYPES = {"OPPORTUNITY": "double", "TAX_VALUE": "double", "BEGINDATE": "date", "CLOSEDATE": "date"}
_READ_ONLY = frozenset(
    {"ID", "DATE_CREATE", "DATE_MODIFY", "CLOSED", "CREATED_BY_ID", "MODIFY_BY_ID", "MOVED_BY_ID", "MOVED_TIME",
     "STAGE_SEMANTIC_ID", "IS_NEW", "LAST_ACTIVITY_TIME", "LAST_ACTIVITY_BY", "QUOTE_ID", "LEAD_ID"}
)  # fmt: skip


def _uf_label(userfield: UserFieldRow) -> Any:
    """A user field's label of one kind (EDIT_FORM_LABEL, ...) in the portal's language, else its name."""

    def label(key: str) -> str:
        texts = userfield.labels.get(key, {})
        return str(texts.get("ru") or texts.get("en") or userfield.field_name)

    return label


@method("crm.deal.fields", "crm")
def deal_fields(ctx: CallContext, p: dict[str, Any]) -> Answer:
    """Every deal field: a standard one titled by its label, a user field titled by its FIELD_NAME with its
    labels in formLabel / listLabel / filterLabel (and its items when it is a list)."""
    types = {"int": "integer", "float": "double", "date": "datetime", "str": "string", "yn": "char"}
    user_types = {"ASSIGNED_BY_ID": "user", "CREATED_BY_ID": "user", "MODIFY_BY_ID": "user", "MOVED_BY_ID": "user",
                  "LAST_ACTIVITY_BY": "user", "COMPANY_ID": "crm_company", "CONTACT_ID": "crm_contact",
                  "LEAD_ID": "crm_lead", "QUOTE_ID": "crm_quote", "CURRENCY_ID": "crm_currency",
                  "CATEGORY_ID": "crm_category"}  # fmt: skip
    result: dict[str, Any] = {}
    for name, (_attr, kind) in DEAL_FIELDS.items():
        if name in {"STAGE_ID", "SOURCE_ID", "TYPE_ID"}:
            field_type = "crm_status"
        else:
            field_type = user_types.get(name) or _FIELD_TYPES.get(name) or types[kind]
        result[name] = {
            "type": field_type,
            "isRequired": False,
            "isReadOnly": name in _READ_ONLY,
            "isImmutable": name == "CATEGORY_ID",
            "isMultiple": False,
            "isDynamic": False,
            "title": DEAL_FIELD_TITLES.get(name, name),
        }
    for userfield in ctx.portal.userfields.values():
        label = _uf_label(userfield)
        result[userfield.field_name] = {
            "type": userfield.user_type_id,
            "isRequired": userfield.mandatory == "Y",
            "isReadOnly": False,
            "isImmutable": False,
            "isMultiple": userfield.multiple == "Y",
            "isDynamic": True,
            "title": userfield.field_name,
            "listLabel": label("LIST_COLUMN_LABEL"),
            "formLabel": label("EDIT_FORM_LABEL"),
            "filterLabel": label("LIST_FILTER_LABEL"),
        }
        if userfield.items:
            result[userfield.field_name]["items"] = [{"ID": str(i["ID"]), "VALUE": i["VALUE"]} for i in userfield.items]
    return Answer(result)


@method("crm.deal.get", "crm")
def deal_get(ctx: CallContext, p: dict[str, Any]) -> Answer:
    row = ops.get_deal(ctx.portal, arg(p, "id"))
    return Answer(ctx.portal.deal_wire(row))


@method("crm.deal.list", "crm")
def deal_list(ctx: CallContext, p: dict[str, Any]) -> Answer:
    portal = ctx.portal
    conditions = parse_filter(arg(p, "filter"))
    order = parse_order(arg(p, "order"))
    start = parse_start(arg(p, "start"))
    rows: Any = portal.deals.values()
    # Fast scans (`>ID` with start=-1) jump straight to the id instead of walking every deal.
    lower = [c for c in conditions if c.field == "ID" and c.op in {">", ">="}]
    if start == -1 and lower and (not order or order == [("ID", False)]):
        import bisect

        bound = as_int(lower[-1].value, 0) or 0
        position = (bisect.bisect_right if lower[-1].op == ">" else bisect.bisect_left)(portal.deal_ids, bound)
        rows = (portal.deals[deal_id] for deal_id in portal.deal_ids[position:])
    predicate = compile_filter(conditions, DEAL_KINDS, portal.deal_value)
    page = paginate(rows, predicate, order, DEAL_KINDS, portal.deal_value, start)
    select = select_fields(arg(p, "select"))
    return Answer([portal.deal_wire(row, select, with_uf=False) for row in page.rows], page.next, page.total)


@method("crm.deal.add", "crm")
def deal_add(ctx: CallContext, p: dict[str, Any]) -> Answer:
    author, actor = _actor(ctx)
    return Answer(ops.create_deal(ctx.sandbox, ctx.portal, as_map(arg(p, "fields")), author, actor, ctx.auth_connector))


@method("crm.deal.update", "crm")
def deal_update(ctx: CallContext, p: dict[str, Any]) -> Answer:
    author, actor = _actor(ctx)
    ops.update_deal(ctx.sandbox, ctx.portal, arg(p, "id"), as_map(arg(p, "fields")), author, actor, ctx.auth_connector)
    return Answer(True)


@method("crm.deal.delete", "crm")
def deal_delete(ctx: CallContext, p: dict[str, Any]) -> Answer:
    ops.delete_deal(ctx.sandbox, ctx.portal, arg(p, "id"), ctx.user_id, ctx.auth_connector)
    return Answer(True)


# crm.item (camelCase) over the same deals.
_ITEM_FIELDS = {to_camel(name): name for name in DEAL_FIELDS} | {
    "id": "ID",
    "stageId": "STAGE_ID",
    "categoryId": "CATEGORY_ID",
    "assignedById": "ASSIGNED_BY_ID",
    "createdBy": "CREATED_BY_ID",
    "updatedBy": "MODIFY_BY_ID",
    "createdTime": "DATE_CREATE",
    "updatedTime": "DATE_MODIFY",
    "movedBy": "MOVED_BY_ID",
    "movedTime": "MOVED_TIME",
    "stageSemanticId": "STAGE_SEMANTIC_ID",
    "sourceId": "SOURCE_ID",
    "contactId": "CONTACT_ID",
    "companyId": "COMPANY_ID",
    "begindate": "BEGINDATE",
    "closedate": "CLOSEDATE",
    "lastActivityTime": "LAST_ACTIVITY_TIME",
    "lastActivityBy": "LAST_ACTIVITY_BY",
}
_ITEM_NAMES = {
    "ID": "id",
    "STAGE_ID": "stageId",
    "CATEGORY_ID": "categoryId",
    "ASSIGNED_BY_ID": "assignedById",
    "CREATED_BY_ID": "createdBy",
    "MODIFY_BY_ID": "updatedBy",
    "DATE_CREATE": "createdTime",
    "DATE_MODIFY": "updatedTime",
    "MOVED_BY_ID": "movedBy",
    "MOVED_TIME": "movedTime",
    "BEGINDATE": "begindate",
    "CLOSEDATE": "closedate",
}


def _item_wire(portal: Portal, row: Any, original_uf: bool) -> dict[str, Any]:
    item: dict[str, Any] = {}
    for name, (_attr, kind) in DEAL_FIELDS.items():
        value = portal.deal_value(row, name)
        key = _ITEM_NAMES.get(name, to_camel(name))
        if value is None:
            item[key] = None
        elif kind == "int":
            item[key] = int(value)
        elif kind == "float":
            item[key] = float(value)
        elif kind == "date":
            item[key] = iso(value)
        else:
            item[key] = value
    for name in portal.uf_names():
        item[name if original_uf else to_camel(name)] = portal.deal_wire_value(row, name)
    return item


def _item_fields_to_upper(portal: Portal, fields: Mapping[str, Any]) -> dict[str, Any]:
    camel_uf = {to_camel(name): name for name in portal.uf_names()}
    upper: dict[str, Any] = {}
    for key, value in fields.items():
        key = str(key)
        if key in camel_uf:
            upper[camel_uf[key]] = value
        elif key in _ITEM_FIELDS:
            upper[_ITEM_FIELDS[key]] = value
        elif key.upper().startswith("UF_CRM_"):
            upper[key.upper()] = value
    return upper


@method("crm.item.get", "crm")
def item_get(ctx: CallContext, p: dict[str, Any]) -> Answer:
    _entity_type(p)
    row = ctx.portal.deals.get(as_int(arg(p, "id"), 0) or 0)
    if row is None:
        raise bad_argument("Item not found", code="NOT_FOUND")
    return Answer({"item": _item_wire(ctx.portal, row, truthy(arg(p, "useOriginalUfNames", "N")))})


@method("crm.item.update", "crm")
def item_update(ctx: CallContext, p: dict[str, Any]) -> Answer:
    _entity_type(p)
    portal = ctx.portal
    row = portal.deals.get(as_int(arg(p, "id"), 0) or 0)
    if row is None:
        raise bad_argument("Item not found", code="NOT_FOUND")
    upper = _item_fields_to_upper(portal, as_map(arg(p, "fields")))
    author, actor = _actor(ctx)
    category = as_int(upper.pop("CATEGORY_ID", None))
    stage = upper.pop("STAGE_ID", None)
    if category is not None and category != row.category_id:
        ops.move_deal_to_category(
            ctx.sandbox,
            portal,
            row.id,
            category,
            None if stage is None else str(stage),
            upper,
            author,
            actor,
            ctx.auth_connector,
        )
    else:
        if stage is not None:
            if portal.stage_category(str(stage)) != row.category_id:
                raise bad_argument(f"Stage {stage} not found", code="CRM_FIELD_ERROR_VALUE")
            upper["STAGE_ID"] = stage
        ops.update_deal(ctx.sandbox, portal, row.id, upper, author, actor, ctx.auth_connector)
    return Answer({"item": _item_wire(portal, row, truthy(arg(p, "useOriginalUfNames", "N")))})


# ---- deal user fields ------------------------------------------------------------------------------

_UF_NAME = re.compile(r"^UF_CRM_[A-Z0-9_]+$")
_LABEL_KEYS = ("EDIT_FORM_LABEL", "LIST_COLUMN_LABEL", "LIST_FILTER_LABEL", "ERROR_MESSAGE", "HELP_MESSAGE")


def _labels(fields: Mapping[str, Any], labels: dict[str, Any]) -> None:
    if "LABEL" in fields:
        for key in _LABEL_KEYS[:3]:
            labels.setdefault(key, {})
            labels[key] = {"ru": str(fields["LABEL"]), "en": str(fields["LABEL"])}
    for key in _LABEL_KEYS:
        if key in fields:
            value = fields[key]
            labels[key] = (
                {str(k): str(v) for k, v in value.items()}
                if isinstance(value, Mapping)
                else {
                    "ru": str(value),
                    "en": str(value),
                }
            )


def _enum_items(portal: Portal, userfield: UserFieldRow, raw: Any) -> None:
    for entry in as_list(raw):
        if not isinstance(entry, Mapping):
            continue
        entry = {str(k).upper(): v for k, v in entry.items()}
        item_id = as_int(entry.get("ID"))
        existing = next((i for i in userfield.items if i["ID"] == item_id), None) if item_id else None
        if existing is not None:
            if truthy(entry.get("DEL", "N")):
                userfield.items.remove(existing)
                continue
            for key in ("VALUE", "SORT", "DEF", "XML_ID"):
                if key in entry:
                    existing[key] = as_int(entry[key], 500) if key == "SORT" else str(entry[key])
            continue
        if item_id or not str(entry.get("VALUE") or "").strip():
            continue
        new_id = portal.next_id("enum", start=3150)
        userfield.items.append(
            {
                "ID": new_id,
                "VALUE": str(entry["VALUE"]),
                "SORT": as_int(entry.get("SORT"), 500),
                "DEF": "Y" if truthy(entry.get("DEF", "N")) else "N",
                "XML_ID": str(entry.get("XML_ID") or f"{new_id:x}"),
            }
        )
    userfield.items.sort(key=lambda i: (i["SORT"], i["ID"]))


def userfield_wire(userfield: UserFieldRow, lang: str | None) -> dict[str, Any]:
    """A user field as crm.deal.userfield.list prints it; labels only with LANG."""
    wire: dict[str, Any] = {
        "ID": str(userfield.id),
        "ENTITY_ID": "CRM_DEAL",
        "FIELD_NAME": userfield.field_name,
        "USER_TYPE_ID": userfield.user_type_id,
        "XML_ID": userfield.xml_id or None,
        "SORT": str(userfield.sort),
        "MULTIPLE": userfield.multiple,
        "MANDATORY": userfield.mandatory,
        "SHOW_FILTER": userfield.show_filter,
        "SHOW_IN_LIST": userfield.show_in_list,
        "EDIT_IN_LIST": userfield.edit_in_list,
        "IS_SEARCHABLE": userfield.is_searchable,
        "SETTINGS": userfield.settings,
    }
    if lang:
        for key in _LABEL_KEYS:
            wire[key] = userfield.labels.get(key, {}).get(lang, "")
    if userfield.user_type_id == "enumeration":
        wire["LIST"] = [
            {"ID": str(i["ID"]), "SORT": str(i["SORT"]), "VALUE": i["VALUE"], "DEF": i["DEF"], "XML_ID": i["XML_ID"]}
            for i in userfield.items
        ]
    return wire


@method("crm.deal.userfield.list", "crm")
def userfield_list(ctx: CallContext, p: dict[str, Any]) -> Answer:
    raw_filter = as_map(arg(p, "filter"))
    lang = raw_filter.pop("LANG", None) or raw_filter.pop("lang", None)
    kinds = {"ID": "int", "FIELD_NAME": "str", "USER_TYPE_ID": "str", "XML_ID": "str", "MULTIPLE": "yn"}
    getter: Callable[[Any, str], Any] = lambda u, n: userfield_wire(u, None).get(n)  # noqa: E731
    predicate = compile_filter(parse_filter(raw_filter), kinds, getter)
    order = parse_order(arg(p, "order")) or [("SORT", False), ("ID", False)]
    page = paginate(ctx.portal.userfields.values(), predicate, order, kinds | {"SORT": "int"}, getter, 0, 10**9)
    rows = [userfield_wire(u, str(lang) if lang else None) for u in page.rows]
    return Answer(rows, total=len(rows))


@method("crm.deal.userfield.get", "crm")
def userfield_get(ctx: CallContext, p: dict[str, Any]) -> Answer:
    userfield = ctx.portal.userfields.get(as_int(arg(p, "id"), 0) or 0)
    if userfield is None:
        raise not_found()
    return Answer(userfield_wire(userfield, "ru"))


@method("crm.deal.userfield.add", "crm", admin=True)
def userfield_add(ctx: CallContext, p: dict[str, Any]) -> Answer:
    portal = ctx.portal
    fields = {str(k).upper(): v for k, v in as_map(arg(p, "fields")).items()}
    name = str(fields.get("FIELD_NAME") or "").upper()
    user_type = str(fields.get("USER_TYPE_ID") or "")
    if not name or not user_type:
        raise RestError(400, "ERROR_CORE", "FIELD_NAME and USER_TYPE_ID are required")
    if not name.startswith("UF_CRM_"):
        name = "UF_CRM_" + name
    if not _UF_NAME.match(name) or len(name) > 50:
        raise RestError(400, "ERROR_CORE", "Invalid field name: only A-Z, 0-9 and _ are allowed, up to 50 characters")
    if portal.userfield_by_name(name) is not None:
        raise RestError(400, "ERROR_CORE", f"A field named {name} already exists")
    allowed = {
        "string", "integer", "double", "boolean", "date", "datetime", "money", "url", "enumeration", "file",
        "employee", "crm_status", "crm", "address", "resourcebooking", "iblock_section", "iblock_element",
    }  # fmt: skip
    if user_type not in allowed:
        raise RestError(400, "ERROR_CORE", f"Unknown USER_TYPE_ID {user_type}")
    userfield = UserFieldRow(
        id=portal.next_id("userfield", start=301),
        field_name=name,
        user_type_id=user_type,
        xml_id=str(fields.get("XML_ID") or ""),
        sort=as_int(fields.get("SORT"), 100) or 100,
        multiple="Y" if truthy(fields.get("MULTIPLE", "N")) else "N",
        mandatory="Y" if truthy(fields.get("MANDATORY", "N")) else "N",
        show_filter="Y" if truthy(fields.get("SHOW_FILTER", "N")) else "N",
        show_in_list="Y" if truthy(fields.get("SHOW_IN_LIST", "Y")) else "N",
        edit_in_list="Y" if truthy(fields.get("EDIT_IN_LIST", "Y")) else "N",
        is_searchable="Y" if truthy(fields.get("IS_SEARCHABLE", "N")) else "N",
        settings=as_map(fields.get("SETTINGS")),
    )
    _labels(fields, userfield.labels)
    if user_type == "enumeration":
        _enum_items(portal, userfield, fields.get("LIST"))
    portal.userfields[userfield.id] = userfield
    return Answer(userfield.id)


@method("crm.deal.userfield.update", "crm", admin=True)
def userfield_update(ctx: CallContext, p: dict[str, Any]) -> Answer:
    userfield = ctx.portal.userfields.get(as_int(arg(p, "id"), 0) or 0)
    if userfield is None:
        raise not_found()
    fields = {str(k).upper(): v for k, v in as_map(arg(p, "fields")).items()}
    for key, attr in (("SORT", "sort"), ("XML_ID", "xml_id")):
        if key in fields:
            setattr(userfield, attr, as_int(fields[key], 100) if key == "SORT" else str(fields[key]))
    for key in ("MANDATORY", "SHOW_FILTER", "SHOW_IN_LIST", "EDIT_IN_LIST", "IS_SEARCHABLE"):
        if key in fields:
            setattr(userfield, key.lower(), "Y" if truthy(fields[key]) else "N")
    if "SETTINGS" in fields:
        userfield.settings = {**userfield.settings, **as_map(fields["SETTINGS"])}
    _labels(fields, userfield.labels)
    if userfield.user_type_id == "enumeration" and "LIST" in fields:
        _enum_items(ctx.portal, userfield, fields["LIST"])
    return Answer(True)


@method("crm.deal.userfield.delete", "crm", admin=True)
def userfield_delete(ctx: CallContext, p: dict[str, Any]) -> Answer:
    userfield = ctx.portal.userfields.pop(as_int(arg(p, "id"), 0) or 0, None)
    if userfield is None:
        raise not_found()
    for row in ctx.portal.deals.values():
        if row.uf:
            row.uf.pop(userfield.field_name, None)
    return Answer(True)


# ---- stage history ---------------------------------------------------------------------------------

HISTORY_KINDS = {
    "ID": "int",
    "TYPE_ID": "int",
    "OWNER_ID": "int",
    "CREATED_TIME": "date",
    "CATEGORY_ID": "int",
    "STAGE_SEMANTIC_ID": "str",
    "STAGE_ID": "str",
}


@method("crm.stagehistory.list", "crm")
def stagehistory_list(ctx: CallContext, p: dict[str, Any]) -> Answer:
    _entity_type(p)
    predicate = compile_filter(parse_filter(arg(p, "filter")), HISTORY_KINDS, lambda r, n: r.get(n))
    order = parse_order(arg(p, "order"))
    page = paginate(
        ctx.portal.stage_history, predicate, order, HISTORY_KINDS, lambda r, n: r.get(n), parse_start(arg(p, "start"))
    )
    select = select_fields(arg(p, "select")) or list(HISTORY_KINDS)
    items = []
    for row in page.rows:
        item: dict[str, Any] = {}
        for name in HISTORY_KINDS:
            if name in select or "*" in select:
                value = row[name]
                item[name] = iso(value) if name == "CREATED_TIME" else value
        items.append(item)
    return Answer({"items": items}, page.next, page.total)


# ---- events ----------------------------------------------------------------------------------------

KNOWN_EVENTS = frozenset(
    {
        "ONAPPINSTALL", "ONAPPUNINSTALL", "ONAPPUPDATE", "ONAPPTEST", "ONAPPPAYMENT", "ONOFFLINEEVENT",
        "ONCRMDEALADD", "ONCRMDEALUPDATE", "ONCRMDEALDELETE", "ONCRMDEALMOVETOCATEGORY",
        "ONCRMDEALUSERFIELDADD", "ONCRMDEALUSERFIELDUPDATE", "ONCRMDEALUSERFIELDDELETE",
        "ONCRMACTIVITYADD", "ONCRMACTIVITYUPDATE", "ONCRMACTIVITYDELETE",
        "ONTASKADD", "ONTASKUPDATE", "ONTASKDELETE", "ONTASKCOMMENTADD",
        "ONVOXIMPLANTCALLINIT", "ONVOXIMPLANTCALLSTART", "ONVOXIMPLANTCALLEND",
        "ONUSERADD", "ONCRMCONTACTADD", "ONCRMCONTACTUPDATE", "ONCRMCOMPANYADD", "ONCRMCOMPANYUPDATE",
        "ONCRMLEADADD", "ONCRMLEADUPDATE",
    }
)  # fmt: skip
_URL = re.compile(r"^https?://[^\s/]+", re.IGNORECASE)


def _is_local(url: str) -> bool:
    host = re.sub(r"^https?://", "", url, flags=re.IGNORECASE).split("/")[0].split(":")[0].lower()
    return host in {"localhost", "127.0.0.1", "0.0.0.0", "::1"} or host.endswith(".localhost")  # noqa: S104


@method("event.bind", "app")
def event_bind(ctx: CallContext, p: dict[str, Any]) -> Answer:
    portal = ctx.portal
    event = str(arg(p, "event") or "").upper()
    handler = str(arg(p, "handler") or "")
    offline = str(arg(p, "event_type") or "online").lower() == "offline"
    auth_type = as_int(arg(p, "auth_type"), 0) or 0
    is_admin = portal.user_is_admin(ctx.user_id)
    if not is_admin and (offline or (auth_type and auth_type != ctx.user_id)):
        raise access_denied("Access denied! Application context required")
    if not is_admin:
        raise access_denied("Access denied! Administrator access required")
    if event not in KNOWN_EVENTS:
        raise RestError(400, "ERROR_EVENT_NOT_FOUND", "Event not found")
    if offline:
        handler = ""
    elif not _URL.match(handler):
        raise RestError(400, "ERROR_HANDLER_URL_MISMATCH", "Handler URL host doesn't match application url")
    connector = str(arg(p, "auth_connector") or "")
    for binding in portal.bindings.values():
        if (binding.event, binding.handler, binding.auth_type, binding.offline) == (event, handler, auth_type, offline):
            raise RestError(400, "ERROR_EVENT_HANDLER_ALREADY_EXISTS", "Handler already binded")
    options = as_map(arg(p, "options"))
    binding_id = portal.next_id("event_binding", start=201)
    portal.bindings[binding_id] = EventBinding(
        binding_id, event, handler, auth_type, offline, connector, as_int(options.get("minTimeout"), 0) or 0
    )
    return Answer(True)


@method("event.unbind", "app")
def event_unbind(ctx: CallContext, p: dict[str, Any]) -> Answer:
    portal = ctx.portal
    if not portal.user_is_admin(ctx.user_id):
        raise access_denied("Access denied! Administrator access required")
    event = str(arg(p, "event") or "").upper()
    handler = str(arg(p, "handler") or "")
    offline = str(arg(p, "event_type") or "online").lower() == "offline"
    auth_type_raw = arg(p, "auth_type")
    count = 0
    for binding in list(portal.bindings.values()):
        if binding.event != event or binding.offline != offline:
            continue
        if not offline and binding.handler != handler:
            continue
        if auth_type_raw is not None and (as_int(auth_type_raw, 0) or 0) != binding.auth_type:
            continue
        del portal.bindings[binding.id]
        count += 1
    return Answer({"count": count})


@method("event.get", "app")
def event_get(ctx: CallContext, p: dict[str, Any]) -> Answer:
    return Answer(
        [
            {
                "event": b.event,
                "handler": b.handler,
                "auth_type": str(b.auth_type),
                "offline": 1 if b.offline else 0,
                **({"connector_id": b.auth_connector} if b.auth_connector else {}),
            }
            for b in ctx.portal.bindings.values()
        ]
    )


OFFLINE_KINDS = {"ID": "int", "TIMESTAMP_X": "date", "EVENT_NAME": "str", "MESSAGE_ID": "str"}


def _offline_wire(record: Any) -> dict[str, Any]:
    return {
        "ID": str(record.id),
        "TIMESTAMP_X": iso(record.timestamp),
        "EVENT_NAME": record.event_name,
        "EVENT_DATA": record.data,
        "EVENT_ADDITIONAL": record.additional or [],
        "MESSAGE_ID": record.message_id,
        **({"PROCESS_ID": record.process_id} if record.process_id else {}),
        **({"ERROR": "1"} if record.error else {}),
    }


def _offline_getter(record: Any, name: str) -> Any:
    return {"ID": record.id, "TIMESTAMP_X": record.timestamp, "EVENT_NAME": record.event_name}.get(
        name, getattr(record, name.lower(), None)
    )


def _require_offline(ctx: CallContext) -> None:
    if not ctx.portal.user_is_admin(ctx.user_id):
        raise access_denied("Access denied! Administrator access required")
    if not ctx.portal.offline_extended:
        raise RestError(403, "ACCESS_DENIED", "Offline events are not available on this plan")


@method("event.offline.get", "app")
def event_offline_get(ctx: CallContext, p: dict[str, Any]) -> Answer:
    _require_offline(ctx)
    portal = ctx.portal
    predicate = compile_filter(parse_filter(arg(p, "filter")), OFFLINE_KINDS, _offline_getter)
    want_errors = truthy(arg(p, "error", "0"))
    connector = str(arg(p, "auth_connector") or "")
    order = parse_order(arg(p, "order")) or [("TIMESTAMP_X", False), ("ID", False)]
    candidates = [
        r
        for r in portal.offline_events.values()
        if r.process_id is None
        and r.error == want_errors
        and predicate(r)
        and (not connector or r.additional.get("auth_connector") != connector)
    ]
    from sandbox.query import sort_rows

    sort_rows(candidates, order, OFFLINE_KINDS, _offline_getter)
    limit = min(as_int(arg(p, "limit"), PAGE_SIZE) or PAGE_SIZE, 1000)
    chosen = candidates[:limit]
    process_id = ops_token()
    clear = truthy(arg(p, "clear", "1"))
    events = [_offline_wire(r) for r in chosen]
    for record in chosen:
        if clear:
            del portal.offline_events[record.id]
        else:
            record.process_id = process_id
    return Answer({"process_id": process_id, "events": events})


def ops_token() -> str:
    """A process id for offline-event reservations."""
    from sandbox.state import new_token

    return new_token()[:32]


@method("event.offline.clear", "app")
def event_offline_clear(ctx: CallContext, p: dict[str, Any]) -> Answer:
    _require_offline(ctx)
    process_id = str(arg(p, "process_id") or "")
    if not process_id:
        raise bad_argument("process_id is required", code="ERROR_ARGUMENT")
    ids = {as_int(i) for i in as_list(arg(p, "id"))}
    message_ids = {str(i) for i in as_list(arg(p, "message_id"))}
    for record in list(ctx.portal.offline_events.values()):
        if record.process_id != process_id:
            continue
        if (ids or message_ids) and record.id not in ids and record.message_id not in message_ids:
            continue
        del ctx.portal.offline_events[record.id]
    return Answer(True)


@method("event.offline.error", "app")
def event_offline_error(ctx: CallContext, p: dict[str, Any]) -> Answer:
    _require_offline(ctx)
    process_id = str(arg(p, "process_id") or "")
    message_ids = {str(i) for i in as_list(arg(p, "message_id"))}
    for record in ctx.portal.offline_events.values():
        if record.process_id == process_id and record.message_id in message_ids:
            record.error = True
            record.process_id = None
    return Answer(True)


@method("event.offline.list", "app")
def event_offline_list(ctx: CallContext, p: dict[str, Any]) -> Answer:
    _require_offline(ctx)
    predicate = compile_filter(parse_filter(arg(p, "filter")), OFFLINE_KINDS, _offline_getter)
    order = parse_order(arg(p, "order")) or [("ID", False)]
    page = paginate(
        ctx.portal.offline_events.values(),
        predicate,
        order,
        OFFLINE_KINDS,
        _offline_getter,
        parse_start(arg(p, "start")),
    )
    return Answer([_offline_wire(r) for r in page.rows], page.next, page.total)


# ---- placements ------------------------------------------------------------------------------------

KNOWN_PLACEMENTS = frozenset(
    {
        "CRM_DEAL_DETAIL_TAB", "CRM_LEAD_DETAIL_TAB", "CRM_CONTACT_DETAIL_TAB", "CRM_COMPANY_DETAIL_TAB",
        "CRM_DEAL_LIST_MENU", "CRM_DEAL_DETAIL_TOOLBAR", "CRM_DEAL_DETAIL_ACTIVITY", "CRM_DEAL_LIST_TOOLBAR",
        "CRM_DEAL_ACTIVITY_TIMELINE_MENU", "CRM_ANALYTICS_MENU", "LEFT_MENU", "USER_PROFILE_MENU",
        "TASK_VIEW_TAB", "CALL_CARD", "DEFAULT",
    }
)  # fmt: skip


def _lang_all(value: Any) -> dict[str, Any]:
    return {str(lang): dict(item) for lang, item in as_map(value).items() if isinstance(item, Mapping)}


@method("placement.bind", "placement", admin=True)
def placement_bind(ctx: CallContext, p: dict[str, Any]) -> Answer:
    portal = ctx.portal
    code = str(arg(p, "PLACEMENT") or "").upper()
    handler = str(arg(p, "HANDLER") or "")
    if not code or not handler:
        raise RestError(400, "ERROR_ARGUMENT", "PLACEMENT and HANDLER are required")
    if code not in KNOWN_PLACEMENTS and not re.fullmatch(r"CRM_DYNAMIC_\d+_DETAIL_TAB", code):
        raise RestError(400, "ERROR_PLACEMENT_NOT_FOUND", "Placement not found")
    if not _URL.match(handler) or (portal.reject_local_handlers and _is_local(handler)):
        raise RestError(400, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL")
    if any(pl.placement == code and pl.handler == handler for pl in portal.placements.values()):
        raise RestError(400, "ERROR_PLACEMENT_HANDLER_EXISTS", "Handler already binded")
    if sum(1 for pl in portal.placements.values() if pl.placement == code) >= 10:
        raise RestError(400, "ERROR_PLACEMENT_MAX_COUNT", "Placement handlers limit reached")
    placement_id = portal.next_id("placement", start=11)
    portal.placements[placement_id] = Placement(
        id=placement_id,
        placement=code,
        handler=handler,
        title=str(arg(p, "TITLE") or ""),
        description=str(arg(p, "DESCRIPTION") or ""),
        group_name=str(arg(p, "GROUP_NAME") or ""),
        options=as_map(arg(p, "OPTIONS")),
        lang_all=_lang_all(arg(p, "LANG_ALL")),
        user_id=as_int(arg(p, "USER_ID"), 0) or 0,
    )
    return Answer(True)


@method("placement.unbind", "placement", admin=True)
def placement_unbind(ctx: CallContext, p: dict[str, Any]) -> Answer:
    code = str(arg(p, "PLACEMENT") or "").upper()
    if not code:
        raise RestError(400, "ERROR_ARGUMENT", "PLACEMENT is required")
    handler = str(arg(p, "HANDLER") or "")
    user_id = as_int(arg(p, "USER_ID"))
    count = 0
    for placement in list(ctx.portal.placements.values()):
        if placement.placement != code or (handler and placement.handler != handler):
            continue
        if user_id is not None and placement.user_id != user_id:
            continue
        del ctx.portal.placements[placement.id]
        count += 1
    return Answer({"count": count})


@method("placement.get", "placement")
def placement_get(ctx: CallContext, p: dict[str, Any]) -> Answer:
    return Answer(
        [
            {
                "placement": pl.placement,
                "userId": pl.user_id,
                "handler": pl.handler,
                "options": pl.options or [],
                "title": pl.title,
                "description": pl.description,
                "groupName": pl.group_name,
                "langAll": pl.lang_all or [],
            }
            for pl in ctx.portal.placements.values()
        ]
    )


@method("placement.list", "placement")
def placement_list(ctx: CallContext, p: dict[str, Any]) -> Answer:
    return Answer(sorted(KNOWN_PLACEMENTS - {"DEFAULT"}))


# ---- robots ----------------------------------------------------------------------------------------

_ROBOT_CODE = re.compile(r"^[a-zA-Z0-9._-]+$")


def _robot_from(fields: Mapping[str, Any], portal: Portal, existing: Robot | None = None) -> Robot:
    def pick(key: str, default: Any) -> Any:
        return arg(fields, key, default)

    handler = str(pick("HANDLER", existing.handler if existing else "") or "")
    if not _URL.match(handler):
        raise RestError(400, "ERROR_ACTIVITY_VALIDATION_FAILURE", "Wrong HANDLER")
    if portal.app_url:
        app_host = re.sub(r"^https?://", "", portal.app_url).split("/")[0].lower()
        handler_host = re.sub(r"^https?://", "", handler, flags=re.IGNORECASE).split("/")[0].lower()
        if app_host != handler_host:
            raise RestError(400, "ERROR_ACTIVITY_VALIDATION_FAILURE", "Wrong handler URL: must be on the app's domain")
    name = pick("NAME", existing.name if existing else "")
    if not name:
        raise RestError(400, "ERROR_ACTIVITY_VALIDATION_FAILURE", "Empty activity name")
    return Robot(
        code=existing.code if existing else str(pick("CODE", "")),
        handler=handler,
        name=name,
        auth_user_id=as_int(pick("AUTH_USER_ID", existing.auth_user_id if existing else 0), 0) or 0,
        use_subscription=str(pick("USE_SUBSCRIPTION", existing.use_subscription if existing else "") or ""),
        description=pick("DESCRIPTION", existing.description if existing else ""),
        properties=as_map(pick("PROPERTIES", existing.properties if existing else {})),
        return_properties=as_map(pick("RETURN_PROPERTIES", existing.return_properties if existing else {})),
        document_type=as_list(pick("DOCUMENT_TYPE", existing.document_type if existing else [])),
        filter=as_map(pick("FILTER", existing.filter if existing else {})),
        use_placement=str(pick("USE_PLACEMENT", existing.use_placement if existing else "N")),
        placement_handler=str(pick("PLACEMENT_HANDLER", existing.placement_handler if existing else "")),
    )


@method("bizproc.robot.add", "bizproc", admin=True)
def robot_add(ctx: CallContext, p: dict[str, Any]) -> Answer:
    code = str(arg(p, "CODE") or "")
    if not code or not _ROBOT_CODE.match(code):
        raise RestError(400, "ERROR_ACTIVITY_VALIDATION_FAILURE", "Wrong activity code")
    if code in ctx.portal.robots:
        raise RestError(400, "ERROR_ACTIVITY_ALREADY_INSTALLED", "Activity or Robot already installed!")
    ctx.portal.robots[code] = _robot_from(p, ctx.portal)
    return Answer(True)


@method("bizproc.robot.update", "bizproc", admin=True)
def robot_update(ctx: CallContext, p: dict[str, Any]) -> Answer:
    code = str(arg(p, "CODE") or "")
    robot = ctx.portal.robots.get(code)
    if robot is None:
        raise RestError(400, "ERROR_ACTIVITY_NOT_FOUND", "Activity not found!")
    fields = as_map(arg(p, "FIELDS"))
    if not fields:
        raise RestError(400, "ERROR_ACTIVITY_VALIDATION_FAILURE", "No fields to update.")
    ctx.portal.robots[code] = _robot_from(fields, ctx.portal, robot)
    return Answer(True)


@method("bizproc.robot.list", "bizproc", admin=True)
def robot_list(ctx: CallContext, p: dict[str, Any]) -> Answer:
    return Answer(list(ctx.portal.robots))


@method("bizproc.robot.delete", "bizproc", admin=True)
def robot_delete(ctx: CallContext, p: dict[str, Any]) -> Answer:
    code = str(arg(p, "CODE") or "")
    if ctx.portal.robots.pop(code, None) is None:
        raise RestError(400, "ERROR_ACTIVITY_NOT_FOUND", "Activity not found!")
    return Answer(True)


@method("bizproc.event.send", "bizproc")
def bizproc_event_send(ctx: CallContext, p: dict[str, Any]) -> Answer:
    run = ctx.portal.robot_runs.get(str(arg(p, "event_token") or ""))
    if run is None or run.return_values is not None:
        raise access_denied("Access denied!")
    run.return_values = as_map(arg(p, "return_values"))
    message = arg(p, "log_message")
    if message:
        run.log_messages.append(str(message))
    return Answer(True)


@method("bizproc.activity.log", "bizproc")
def bizproc_activity_log(ctx: CallContext, p: dict[str, Any]) -> Answer:
    run = ctx.portal.robot_runs.get(str(arg(p, "event_token") or ""))
    if run is None:
        raise access_denied("Access denied!")
    run.log_messages.append(str(arg(p, "log_message") or ""))
    return Answer(True)


# ---- notifications ---------------------------------------------------------------------------------


def _notify(ctx: CallContext, p: dict[str, Any], kind: str) -> Answer:
    from sandbox.state import Notification

    user_id = as_int(arg(p, "USER_ID"))
    if not user_id:
        raise RestError(400, "USER_ID_EMPTY", "Recipient ID can't be empty")
    message = str(arg(p, "MESSAGE") or "")
    if not message.strip():
        raise RestError(400, "MESSAGE_EMPTY", "Message can't be empty")
    if user_id not in ctx.portal.users:
        raise RestError(400, "USER_ID_EMPTY", "Recipient not found")
    notification_id = ctx.portal.next_id("notification", start=901)
    tag = str(arg(p, "TAG") or "")
    if tag:
        # A tag is unique: adding a notification with a tag already in use deletes the earlier ones.
        ctx.portal.notifications[:] = [n for n in ctx.portal.notifications if n.tag != tag]
    ctx.portal.notifications.append(
        Notification(
            id=notification_id,
            kind=kind,
            user_id=user_id,
            message=message,
            tag=tag,
            sub_tag=str(arg(p, "SUB_TAG") or ""),
            from_user_id=None if kind == "system" else ctx.user_id,
            created=ctx.sandbox.clock.now(),
        )
    )
    return Answer(notification_id)


@method("im.notify.system.add", "im")
def notify_system(ctx: CallContext, p: dict[str, Any]) -> Answer:
    return _notify(ctx, p, "system")


@method("im.notify.personal.add", "im")
def notify_personal(ctx: CallContext, p: dict[str, Any]) -> Answer:
    return _notify(ctx, p, "personal")


# ---- tasks -----------------------------------------------------------------------------------------

_TASK_CAMEL = {
    "ID": "id", "PARENT_ID": "parentId", "TITLE": "title", "DESCRIPTION": "description", "PRIORITY": "priority",
    "STATUS": "status", "GROUP_ID": "groupId", "CREATED_BY": "createdBy", "CREATED_DATE": "createdDate",
    "RESPONSIBLE_ID": "responsibleId", "CHANGED_DATE": "changedDate", "CLOSED_DATE": "closedDate",
    "DEADLINE": "deadline", "ACCOMPLICES": "accomplices", "AUDITORS": "auditors", "ACTIVITY_DATE": "activityDate",
    "SUB_STATUS": "subStatus", "UF_CRM_TASK": "ufCrmTask", "TAGS": "tags",
}  # fmt: skip
_TASK_DEFAULT_SELECT = [k for k in _TASK_CAMEL if k not in {"UF_CRM_TASK", "TAGS"}]


def _task_sub_status(task: Mapping[str, Any], now: float) -> int:
    if task["STATUS"] in {2, 3} and task.get("DEADLINE") and task["DEADLINE"] < now:
        return -1
    return int(task["STATUS"])


def task_wire(task: Mapping[str, Any], now: float, select: list[str] | None = None) -> dict[str, Any]:
    """A task in tasks.task.* camelCase with string values."""
    names = select or [*_TASK_DEFAULT_SELECT, "UF_CRM_TASK"]
    if "*" in names:
        names = [*_TASK_DEFAULT_SELECT, *[n for n in names if n != "*"]]
    names = ["ID", *[n for n in names if n in _TASK_CAMEL and n != "ID"]]
    out: dict[str, Any] = {}
    for name in names:
        if name == "SUB_STATUS":
            value: Any = str(_task_sub_status(task, now))
        else:
            value = task.get(name)
            if name in {"CREATED_DATE", "CHANGED_DATE", "CLOSED_DATE", "DEADLINE", "ACTIVITY_DATE"}:
                value = iso(value)
            elif name in {"ACCOMPLICES", "AUDITORS"}:
                value = [str(item) for item in value or []]
            elif name in {"UF_CRM_TASK", "TAGS"}:
                value = list(value or []) or False if name == "UF_CRM_TASK" else list(value or [])
            elif value is not None:
                value = str(value)
        out[_TASK_CAMEL[name]] = value
    return out


def _task_status_filter(now: float) -> Callable[[Any, Condition], bool]:
    def check(task: Any, condition: Condition) -> bool:
        wanted = (
            [as_int(v) for v in as_list(condition.value)]
            if not isinstance(condition.value, str | int)
            else [as_int(condition.value)]
        )
        actual = {int(task["STATUS"])}
        if _task_sub_status(task, now) == -1:
            actual.add(-1)
        deadline = task.get("DEADLINE")
        if task["STATUS"] in {2, 3} and deadline and now <= deadline < now + 86400:
            actual.add(-3)
        hit = bool(actual & set(wanted))
        return not hit if condition.op in {"!", "!=", "!@"} else hit

    return check


def _task_getter(task: Mapping[str, Any], name: str) -> Any:
    if name == "REAL_STATUS":
        return task.get("STATUS")
    if name == "ACCOMPLICE":
        return task.get("ACCOMPLICES")
    if name == "AUDITOR":
        return task.get("AUDITORS")
    if name == "TAG":
        return task.get("TAGS")
    return task.get(name)


@method("tasks.task.add", "task")
def task_add(ctx: CallContext, p: dict[str, Any]) -> Answer:
    task = ops.create_task(ctx.sandbox, ctx.portal, as_map(arg(p, "fields")), ctx.user_id, ctx.user_id)
    return Answer({"task": task_wire(task, ctx.sandbox.clock.now())})


@method("tasks.task.update", "task")
def task_update(ctx: CallContext, p: dict[str, Any]) -> Answer:
    task = ops.update_task(ctx.sandbox, ctx.portal, arg(p, "taskId"), as_map(arg(p, "fields")), ctx.user_id)
    return Answer({"task": task_wire(task, ctx.sandbox.clock.now())})


@method("tasks.task.get", "task")
def task_get(ctx: CallContext, p: dict[str, Any]) -> Answer:
    task = ops.get_task(ctx.portal, arg(p, "taskId"))
    select = select_fields(arg(p, "select"))
    return Answer({"task": task_wire(task, ctx.sandbox.clock.now(), select or None)})


@method("tasks.task.complete", "task")
def task_complete(ctx: CallContext, p: dict[str, Any]) -> Answer:
    task = ops.update_task(ctx.sandbox, ctx.portal, arg(p, "taskId"), {"STATUS": 5}, ctx.user_id)
    return Answer({"task": task_wire(task, ctx.sandbox.clock.now())})


@method("tasks.task.list", "task")
def task_list(ctx: CallContext, p: dict[str, Any]) -> Answer:
    from sandbox.ops import TASK_KINDS

    now = ctx.sandbox.clock.now()
    predicate = compile_filter(
        parse_filter(arg(p, "filter")), TASK_KINDS, _task_getter, special={"STATUS": _task_status_filter(now)}
    )
    order = parse_order(arg(p, "order"))
    start = parse_start(arg(p, "start"))
    rows: Any = ctx.portal.tasks.values()
    # Fast scans (`>ID` with start=-1) jump straight to the id (task ids are issued in ascending order).
    lower = [c for c in parse_filter(arg(p, "filter")) if c.field == "ID" and c.op in {">", ">="}]
    if start == -1 and lower and (not order or order == [("ID", False)]):
        import bisect

        ids = list(ctx.portal.tasks)
        bound = as_int(lower[-1].value, 0) or 0
        position = (bisect.bisect_right if lower[-1].op == ">" else bisect.bisect_left)(ids, bound)
        rows = (ctx.portal.tasks[task_id] for task_id in ids[position:])
    page = paginate(rows, predicate, order, TASK_KINDS, _task_getter, start)
    select = select_fields(arg(p, "select"))
    select = select or _TASK_DEFAULT_SELECT
    return Answer({"tasks": [task_wire(t, now, select) for t in page.rows]}, page.next, page.total)


# ---- activities and calls --------------------------------------------------------------------------

ACTIVITY_KINDS = {
    "ID": "int", "OWNER_ID": "int", "OWNER_TYPE_ID": "int", "TYPE_ID": "int", "PROVIDER_ID": "str",
    "PROVIDER_TYPE_ID": "str", "SUBJECT": "str", "CREATED": "date", "LAST_UPDATED": "date", "START_TIME": "date",
    "END_TIME": "date", "DEADLINE": "date", "COMPLETED": "yn", "STATUS": "int", "RESPONSIBLE_ID": "int",
    "PRIORITY": "int", "DIRECTION": "int", "AUTHOR_ID": "int", "EDITOR_ID": "int", "ORIGIN_ID": "str",
    "DESCRIPTION": "str",
}  # fmt: skip
_ACTIVITY_HIDDEN = {"FILE_IDS", "COMMUNICATIONS", "BINDINGS"}


def activity_wire(sb: Any, portal: Portal, activity: Mapping[str, Any], select: list[str]) -> dict[str, Any]:
    """An activity as crm.activity.list prints it; FILES and COMMUNICATIONS only when selected."""
    names = [k for k in activity if k not in _ACTIVITY_HIDDEN] if not select or "*" in select else ["ID", *select]
    out: dict[str, Any] = {}
    for name in dict.fromkeys(names):
        if name == "FILES":
            out["FILES"] = [
                {"id": fid, "url": sb.recording_url(portal, fid, activity.get("ID", 0))} for fid in activity["FILE_IDS"]
            ]
            continue
        if name == "COMMUNICATIONS":
            out["COMMUNICATIONS"] = [
                {k: (str(v) if isinstance(v, int) else v) for k, v in c.items()} for c in activity["COMMUNICATIONS"]
            ]
            continue
        if name not in activity or name in _ACTIVITY_HIDDEN:
            continue
        value = activity[name]
        kind = ACTIVITY_KINDS.get(name, "str")
        if value is None:
            out[name] = None
        elif kind == "date":
            out[name] = iso(value)
        elif kind == "int":
            out[name] = str(value)
        else:
            out[name] = value
    if select and "FILES" in select and "FILES" not in out:
        out["FILES"] = []
    return out


def _activity_owner_check(activity: Any, condition: Condition) -> bool:
    wanted = {str(v) for v in as_list(condition.value)}
    field = "OWNER_ID" if condition.field == "OWNER_ID" else "OWNER_TYPE_ID"
    hit = any(str(binding[field]) in wanted for binding in activity["BINDINGS"]) or str(activity[field]) in wanted
    return not hit if condition.op.startswith("!") else hit


@method("crm.activity.list", "crm")
def activity_list(ctx: CallContext, p: dict[str, Any]) -> Answer:
    raw = as_map(arg(p, "filter"))
    bindings = raw.pop("BINDINGS", None)
    conditions = parse_filter(raw)
    owner_pairs = {
        (str(b.get("OWNER_TYPE_ID")), str(b.get("OWNER_ID"))) for b in as_list(bindings) if isinstance(b, Mapping)
    }
    predicate = compile_filter(conditions, ACTIVITY_KINDS, lambda r, n: r.get(n))
    owner_ids = [c for c in conditions if c.field == "OWNER_ID"]
    owner_types = [c for c in conditions if c.field == "OWNER_TYPE_ID"]
    other = compile_filter(
        [c for c in conditions if c.field not in {"OWNER_ID", "OWNER_TYPE_ID"}], ACTIVITY_KINDS, lambda r, n: r.get(n)
    )

    def matches(activity: Mapping[str, Any]) -> bool:
        if not other(activity):
            return False
        pairs = {(str(b["OWNER_TYPE_ID"]), str(b["OWNER_ID"])) for b in activity["BINDINGS"]}
        if owner_pairs and not pairs & owner_pairs:
            return False
        if owner_ids or owner_types:
            ids = {str(v) for c in owner_ids for v in as_list(c.value)}
            types = {str(v) for c in owner_types for v in as_list(c.value)}
            if not any((not ids or oid in ids) and (not types or otype in types) for otype, oid in pairs):
                return False
        return True

    del predicate
    order = parse_order(arg(p, "order"))
    page = paginate(
        ctx.portal.activities.values(),
        matches,
        order,
        ACTIVITY_KINDS,
        lambda r, n: r.get(n),
        parse_start(arg(p, "start")),
    )
    select = select_fields(arg(p, "select"))
    return Answer([activity_wire(ctx.sandbox, ctx.portal, a, select) for a in page.rows], page.next, page.total)


@method("crm.activity.get", "crm")
def activity_get(ctx: CallContext, p: dict[str, Any]) -> Answer:
    activity = ctx.portal.activities.get(as_int(arg(p, "id"), 0) or 0)
    if activity is None:
        raise not_found()
    return Answer(activity_wire(ctx.sandbox, ctx.portal, activity, ["*", "FILES", "COMMUNICATIONS"]))


@method("crm.activity.update", "crm")
def activity_update(ctx: CallContext, p: dict[str, Any]) -> Answer:
    """crm.activity.update {id, fields}: the fields the sandbox keeps (COMPLETED=Y completes the activity,
    STATUS 2); an unknown id answers the legacy "Not found". Answers true and fires ONCRMACTIVITYUPDATE."""
    activity = ctx.portal.activities.get(as_int(arg(p, "id"), 0) or 0)
    if activity is None:
        raise not_found()
    fields = {str(k).upper(): v for k, v in as_map(arg(p, "fields")).items()}
    if "COMPLETED" in fields:
        completed = str(fields["COMPLETED"]).upper() in ("Y", "1", "TRUE")
        activity["COMPLETED"] = "Y" if completed else "N"
        activity["STATUS"] = 2 if completed else 1
    for name in ("SUBJECT", "DESCRIPTION"):
        if name in fields:
            activity[name] = str(fields[name] or "")
    if "RESPONSIBLE_ID" in fields:
        responsible = as_int(fields["RESPONSIBLE_ID"])
        if not responsible:
            raise bad_argument("The field RESPONSIBLE_ID is not defined or invalid.", code="")
        activity["RESPONSIBLE_ID"] = responsible
    activity["LAST_UPDATED"] = ctx.sandbox.clock.now()
    activity["EDITOR_ID"] = ctx.user_id
    ctx.sandbox.emit(
        ctx.portal, "ONCRMACTIVITYUPDATE", {"FIELDS": {"ID": activity["ID"]}}, f"activity:{activity['ID']}", ctx.user_id
    )
    return Answer(True)


@method("crm.activity.todo.add", "crm")
def activity_todo_add(ctx: CallContext, p: dict[str, Any]) -> Answer:
    portal = ctx.portal
    owner_type = as_int(arg(p, "ownerTypeId"))
    owner_id = as_int(arg(p, "ownerId"))
    deadline = arg(p, "deadline")
    from sandbox.clock import parse_date

    deadline_ts = parse_date(deadline)
    if owner_type != DEAL_ENTITY_TYPE_ID or owner_id not in portal.deals:
        raise bad_argument("Owner not found", code="NOT_FOUND")
    if deadline_ts is None:
        raise bad_argument("deadline is required", code="ERROR_ARGUMENT")
    now = ctx.sandbox.clock.now()
    activity_id = portal.next_id("activity")
    responsible = as_int(arg(p, "responsibleId")) or portal.deals[owner_id].assigned_by_id
    portal.activities[activity_id] = {
        "ID": activity_id,
        "OWNER_ID": owner_id,
        "OWNER_TYPE_ID": owner_type,
        "TYPE_ID": 6,
        "PROVIDER_ID": "CRM_TODO",
        "PROVIDER_TYPE_ID": "TODO",
        "SUBJECT": str(arg(p, "title") or ""),
        "CREATED": now,
        "LAST_UPDATED": now,
        "START_TIME": deadline_ts,
        "END_TIME": deadline_ts,
        "DEADLINE": deadline_ts,
        "COMPLETED": "N",
        "STATUS": 1,
        "RESPONSIBLE_ID": responsible,
        "PRIORITY": 2,
        "DESCRIPTION": str(arg(p, "description") or ""),
        "DIRECTION": 0,
        "ORIGIN_ID": "",
        "AUTHOR_ID": ctx.user_id,
        "EDITOR_ID": ctx.user_id,
        "FILE_IDS": [],
        "COMMUNICATIONS": [],
        "BINDINGS": [{"OWNER_TYPE_ID": owner_type, "OWNER_ID": owner_id}],
    }
    return Answer({"id": activity_id})


VOX_KINDS = {
    "ID": "int", "CALL_ID": "str", "PORTAL_USER_ID": "int", "PORTAL_NUMBER": "str", "PHONE_NUMBER": "str",
    "CALL_TYPE": "int", "CALL_DURATION": "int", "CALL_START_DATE": "date", "CALL_FAILED_CODE": "str",
    "CRM_ENTITY_TYPE": "str", "CRM_ENTITY_ID": "int", "CRM_ACTIVITY_ID": "int", "RECORD_FILE_ID": "int",
}  # fmt: skip


@method("voximplant.statistic.get", "telephony")
def voximplant_statistic_get(ctx: CallContext, p: dict[str, Any]) -> Answer:
    predicate = compile_filter(parse_filter(arg(p, "FILTER")), VOX_KINDS, lambda r, n: r.get(n))
    sort = arg(p, "SORT")
    order = [(str(sort).upper(), str(arg(p, "ORDER") or "ASC").upper() == "DESC")] if sort else []
    page = paginate(
        ctx.portal.call_stats.values(),
        predicate,
        order,
        VOX_KINDS,
        lambda r, n: r.get(n),
        parse_start(arg(p, "start")),
    )
    rows = []
    for stat in page.rows:
        row: dict[str, Any] = {}
        for key, value in stat.items():
            if value is None:
                row[key] = None
            elif VOX_KINDS.get(key) == "date":
                row[key] = iso(value)
            else:
                row[key] = str(value)
        rows.append(row)
    return Answer(rows, page.next, page.total)


# ---- contacts and companies ----------------------------------------------------------------------
# `crm.contact.list`, `crm.company.list` (50-row pages, `@ID` and other filters, PHONE / EMAIL as multifields),
# `crm.contact.get`, `crm.company.get`, `crm.deal.contact.items.get` (the deal's contact bindings) and
# `crm.duplicate.findbycomm` (ids of contacts and companies that carry a phone or e-mail: at most 20 values, at
# most 20 ids per type). A contact or company is a plain dict: ID, NAME / LAST_NAME (contacts) or TITLE
# (companies), ASSIGNED_BY_ID, DATE_CREATE (unix time), PHONE and EMAIL (a string or a list of strings). A deal's
# contacts are its CONTACT_ID and `Portal.deal_contacts[deal id]` (more bindings).

CLIENT_KINDS = {
    "ID": "int",
    "ASSIGNED_BY_ID": "int",
    "DATE_CREATE": "date",
    "NAME": "str",
    "LAST_NAME": "str",
    "TITLE": "str",
}
CLIENT_MULTI = ("PHONE", "EMAIL")
DUPLICATE_LIMIT = 20


def _client_values(row: dict[str, Any], name: str) -> list[str]:
    raw = row.get(name)
    if not raw:
        return []
    return [str(raw)] if isinstance(raw, str) else [str(item) for item in raw]


def _client_getter(row: dict[str, Any], name: str) -> Any:
    value = row.get(name)
    if name == "DATE_CREATE" and value is not None:
        return iso(float(value))
    return value


def client_wire(row: dict[str, Any], kind: str, select: list[str] | None = None) -> dict[str, Any]:
    """A contact or company as crm.*.get / crm.*.list print it (strings; multifields as lists of objects)."""
    names = ["ID", "TITLE"] if kind == "company" else ["ID", "NAME", "LAST_NAME"]
    names += ["ASSIGNED_BY_ID", "DATE_CREATE"]
    if select:
        wanted = set(select)
        names = [name for name in names if name == "ID" or name in wanted or "*" in wanted]
    out: dict[str, Any] = {}
    for name in names:
        value = row.get(name)
        if name == "DATE_CREATE":
            out[name] = iso(float(value)) if value is not None else None
        else:
            out[name] = None if value is None else str(value)
    for name in CLIENT_MULTI:
        if not select or name in select:
            values = _client_values(row, name)
            if values or not select:
                out[name] = [
                    {"ID": str(index), "VALUE_TYPE": "WORK", "VALUE": value, "TYPE_ID": name}
                    for index, value in enumerate(values, start=1)
                ]
    return out


def _client_table(portal: Portal, kind: str) -> dict[int, dict[str, Any]]:
    return portal.companies if kind == "company" else portal.contacts


def _client_list(ctx: CallContext, p: dict[str, Any], kind: str) -> Answer:
    rows = _client_table(ctx.portal, kind)
    predicate = compile_filter(parse_filter(arg(p, "filter")), CLIENT_KINDS, _client_getter)
    page = paginate(
        [rows[key] for key in sorted(rows)],
        predicate,
        parse_order(arg(p, "order")),
        CLIENT_KINDS,
        _client_getter,
        parse_start(arg(p, "start")),
    )
    select = select_fields(arg(p, "select"))
    return Answer([client_wire(row, kind, select) for row in page.rows], page.next, page.total)


def _client_get(ctx: CallContext, p: dict[str, Any], kind: str) -> Answer:
    row = _client_table(ctx.portal, kind).get(as_int(arg(p, "id"), 0) or 0)
    if row is None:
        raise not_found("Not found")
    return Answer(client_wire(row, kind))


@method("crm.contact.list", "crm")
def contact_list(ctx: CallContext, p: dict[str, Any]) -> Answer:
    return _client_list(ctx, p, "contact")


@method("crm.company.list", "crm")
def company_list(ctx: CallContext, p: dict[str, Any]) -> Answer:
    return _client_list(ctx, p, "company")


@method("crm.contact.get", "crm")
def contact_get(ctx: CallContext, p: dict[str, Any]) -> Answer:
    return _client_get(ctx, p, "contact")


@method("crm.company.get", "crm")
def company_get(ctx: CallContext, p: dict[str, Any]) -> Answer:
    return _client_get(ctx, p, "company")


@method("crm.deal.contact.items.get", "crm")
def deal_contact_items(ctx: CallContext, p: dict[str, Any]) -> Answer:
    deal_id = as_int(arg(p, "id"), 0) or 0
    row = ctx.portal.deals.get(deal_id)
    if row is None:
        raise not_found("Not found")
    ids = [row.contact_id] if row.contact_id else []
    ids += [contact for contact in ctx.portal.deal_contacts.get(deal_id, []) if contact not in ids]
    return Answer(
        [
            {"CONTACT_ID": contact, "SORT": 10 * index, "ROLE_ID": 0, "IS_PRIMARY": "Y" if index == 1 else "N"}
            for index, contact in enumerate(ids, start=1)
        ]
    )


def _normal_comm(kind: str, value: str) -> str:
    """Phones compare by their digits (a leading 8 read as 7, as Russian numbers), e-mails case-insensitively."""
    if kind == "EMAIL":
        return value.strip().lower()
    digits = re.sub(r"\D", "", value)
    return "7" + digits[1:] if len(digits) == 11 and digits.startswith("8") else digits


@method("crm.duplicate.findbycomm", "crm")
def duplicate_findbycomm(ctx: CallContext, p: dict[str, Any]) -> Answer:
    kind = str(arg(p, "type") or "").upper()
    if kind not in CLIENT_MULTI:
        raise bad_argument("Parameter 'type' is not defined or invalid")
    raw = arg(p, "values")
    values = (
        [str(v) for v in (raw.values() if isinstance(raw, dict) else raw or [])] if not isinstance(raw, str) else []
    )
    if not values:
        raise bad_argument("Parameter 'values' is not defined or empty")
    if len(values) > DUPLICATE_LIMIT:
        raise bad_argument(f"Too many values: at most {DUPLICATE_LIMIT}")
    wanted = {_normal_comm(kind, value) for value in values}
    entity = str(arg(p, "entity_type") or "").upper()
    tables = {"CONTACT": ctx.portal.contacts, "COMPANY": ctx.portal.companies}
    if entity in tables:
        tables = {entity: tables[entity]}
    found: dict[str, list[int]] = {}
    for name, table in tables.items():
        ids = [
            key for key in sorted(table) if wanted & {_normal_comm(kind, v) for v in _client_values(table[key], kind)}
        ]
        if ids:
            found[name] = ids[:DUPLICATE_LIMIT]
    return Answer(found or [])
