"""The sandbox portal's own kanban at /sandbox: what a Bitrix24 user sees, so the demo needs no real account.

Served by the sandbox WSGI app (the process that holds the sandbox state). People act through the
sandbox's `Actor`, exactly like the tests do, so every move fires the same events a real portal sends.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask.typing import ResponseReturnValue

from app.core import i18n
from sandbox.errors import RestError
from sandbox.sandbox import Sandbox
from sandbox.state import Portal

AUTOMATION = "automation"
DEAL_TAB = "CRM_DEAL_DETAIL_TAB"
BX24_JS = Path(__file__).parent / "static" / "bx24.js"
_DEAL_LINK = re.compile(r"https://\S+/crm/deal/details/(\d+)/")

i18n.register(
    {
        "kanban_title": ("Песочница Bitrix24: канбан сделок", "Bitrix24 sandbox: deal kanban"),
        "kanban_explainer": (
            "Это эмулятор портала Bitrix24 с установленным приложением «Контроль отказов». "
            "Выберите себя менеджером и перетащите сделку в «Сделка провалена» — приложение вернёт её "
            "на прежнюю стадию и пришлёт уведомление. Откройте сделку, укажите причину отказа и комментарий "
            "и снова закройте её как проигранную — она попадёт в «Условный отказ» на проверку ОКК. "
            "Сотрудники ОКК и руководитель продаж закрывать сделки могут. Задача на проверку приходит ОКК в панель "
            "«Задачи»; кнопка «Контроль отказов» открывает страницы приложения от имени выбранного сотрудника, "
            "вкладка «Проверка отказа» в карточке сделки — проверку этой сделки.",
            "This is an emulated Bitrix24 portal with the Refusal Control app installed. Act as a sales "
            "manager and drag a deal to “Deal lost”: the app moves it back and notifies you. Open the deal, "
            "fill in the refusal reason and comment, and close it as lost again: it lands in Conditional "
            "refusal for QA to review. QA staff and the head of sales may close deals. QA get the review task in "
            "the Tasks panel; the Refusal Control button opens the app's pages as the chosen person, and the deal "
            "card's Refusal review tab the review of that deal.",
        ),
        "kanban_you_are": ("Вы:", "You are:"),
        "kanban_automation": ("Робот / автоматизация", "Robot / automation"),
        "kanban_pipeline": ("Воронка:", "Pipeline:"),
        "kanban_move_to": ("Переместить в…", "Move to…"),
        "kanban_open": ("Открыть", "Open"),
        "kanban_responsible": ("Ответственный", "Responsible"),
        "kanban_notifications": ("Уведомления", "Notifications"),
        "kanban_no_notifications": ("Уведомлений нет.", "No notifications."),
        "kanban_all_notifications": ("все получатели", "all recipients"),
        "kanban_editor_title": ("Сделка", "Deal"),
        "kanban_save": ("Сохранить", "Save"),
        "kanban_close": ("Закрыть", "Close"),
        "kanban_saved": ("Сохранено.", "Saved."),
        "kanban_not_set": ("— не выбрано —", "— not set —"),
        "kanban_no_fields": (
            "Поля приложения ещё не созданы: дождитесь окончания установки.",
            "The app's fields do not exist yet: wait for the installation to finish.",
        ),
        "kanban_app_installed": ("Приложение установлено", "The app is installed"),
        "kanban_app_not_installed": ("Приложение ещё не установлено…", "The app is not installed yet…"),
        "kanban_failed": ("Не получилось:", "Failed:"),
        "kanban_empty": ("Нет сделок", "No deals"),
        "kanban_language": ("English", "Русский"),
        "kanban_open_app": ("Контроль отказов", "Refusal Control"),
        "kanban_open_app_hint": (
            "Открыть приложение (очередь ОКК, биржа, отчёты, настройки) от имени выбранного сотрудника",
            "Open the app (QA queue, exchange, reports, settings) as the chosen person",
        ),
        "kanban_tab_general": ("Общие", "General"),
        "kanban_tasks": ("Задачи", "Tasks"),
        "kanban_robot": ("Запустить робота", "Run a robot"),
        "kanban_robot_running": ("Робот запущен…", "The robot is running…"),
        "kanban_robot_done": ("Робот ответил:", "The robot answered:"),
        "kanban_robot_done_empty": ("Робот выполнен.", "The robot is done."),
        "kanban_no_tasks": ("Открытых задач нет.", "No open tasks."),
        "kanban_deadline": ("Крайний срок", "Deadline"),
        "kanban_new_deal": ("Новая входящая сделка", "New incoming deal"),
        "kanban_stage": ("Стадия", "Stage"),
        "kanban_amount": ("Сумма", "Amount"),
        "kanban_robot_cannot_open": (
            "Робот не открывает страницы: выберите сотрудника.",
            "A robot opens no pages: choose a person.",
        ),
    }
)
JS_STRINGS = (
    "kanban_move_to",
    "kanban_open",
    "kanban_responsible",
    "kanban_no_notifications",
    "kanban_all_notifications",
    "kanban_editor_title",
    "kanban_saved",
    "kanban_not_set",
    "kanban_no_fields",
    "kanban_app_installed",
    "kanban_app_not_installed",
    "kanban_failed",
    "kanban_empty",
    "kanban_tab_general",
    "kanban_no_tasks",
    "kanban_robot_running",
    "kanban_robot_done",
    "kanban_robot_done_empty",
    "kanban_deadline",
    "kanban_stage",
    "kanban_amount",
    "kanban_robot_cannot_open",
)

bp = Blueprint(
    "kanban",
    __name__,
    url_prefix="/sandbox",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)


class BadRequest(Exception):
    """A request the kanban cannot act on; answered as 400 with its message."""


def _sandbox() -> Sandbox:
    return current_app.config["SANDBOX"]


def _lang() -> str:
    return "en" if request.args.get("lang") == "en" else "ru"


def _portal(sandbox: Sandbox) -> Portal:
    """The portal named by ?portal= (member_id or domain), else the first one."""
    key = request.args.get("portal") or ""
    if key:
        try:
            return sandbox.portal(key)
        except KeyError as error:
            raise BadRequest(f"no sandbox portal {key!r}") from error
    with sandbox.lock:
        portals = list(sandbox.portals.values())
    if not portals:
        raise BadRequest("the sandbox has no portal")
    return portals[0]


def _user_name(portal: Portal, user_id: int | None) -> str:
    user = portal.users.get(user_id or 0)
    if user is None:
        return str(user_id or "")
    return f"{user['NAME']} {user['LAST_NAME']}".strip()


def _users(portal: Portal) -> list[dict[str, Any]]:
    return [
        {"id": str(user_id), "name": _user_name(portal, user_id), "position": user.get("WORK_POSITION", "")}
        for user_id, user in sorted(portal.users.items())
        if user.get("ACTIVE")
    ]


def _fields(portal: Portal, lang: str) -> list[dict[str, Any]]:
    """Deal user fields the card editor shows (those the app created), labelled in the page's language."""
    fields = []
    for uf in sorted(portal.userfields.values(), key=lambda u: (u.sort, u.id)):
        label = uf.labels.get("EDIT_FORM_LABEL", {})
        fields.append(
            {
                "name": uf.field_name,
                "type": uf.user_type_id,
                "label": label.get(lang) or label.get("ru") or label.get("en") or uf.field_name,
                "items": [{"id": str(item["ID"]), "value": item["VALUE"]} for item in uf.items],
            }
        )
    return fields


def _deal(portal: Portal, row: Any, field_names: list[str]) -> dict[str, Any]:
    uf = row.uf or {}
    stage = portal.stage(row.stage_id)
    return {
        "id": str(row.id),
        "title": row.title,
        "pipeline": str(row.category_id),
        "stage": stage["NAME"] if stage else row.stage_id,
        "amount": row.opportunity,
        "currency": row.currency_id,
        "stage_id": row.stage_id,
        "responsible_id": str(row.assigned_by_id),
        "responsible": _user_name(portal, row.assigned_by_id),
        "fields": {name: "" if uf.get(name) is None else str(uf.get(name)) for name in field_names},
    }


def _notifications(portal: Portal, user: str) -> list[dict[str, Any]]:
    wanted = None if user == AUTOMATION else int(user)
    items = [n for n in portal.notifications if wanted is None or n.user_id == wanted]
    items.sort(key=lambda n: n.id, reverse=True)
    answer = []
    for note in items[:50]:
        link = _DEAL_LINK.search(note.message)
        answer.append(
            {
                "id": note.id,
                "user_id": str(note.user_id),
                "user": _user_name(portal, note.user_id),
                "message": _DEAL_LINK.sub("", note.message).strip(),
                "deal_id": link.group(1) if link else None,
                "created": note.created,
            }
        )
    return answer


def _tasks(portal: Portal, user: str) -> list[dict[str, Any]]:
    """The acting person's open tasks, newest first (the robot: everyone's), with the deal each is bound to."""
    wanted = None if user == AUTOMATION else int(user)
    items = [
        task
        for task in portal.tasks.values()
        if int(task.get("STATUS") or 0) != 5 and (wanted is None or int(task.get("RESPONSIBLE_ID") or 0) == wanted)
    ]
    items.sort(key=lambda task: int(task["ID"]), reverse=True)
    answer = []
    for task in items[:30]:
        deals = [str(ref)[2:] for ref in task.get("UF_CRM_TASK") or [] if str(ref).startswith("D_")]
        answer.append(
            {
                "id": str(task["ID"]),
                "title": str(task.get("TITLE") or ""),
                "user": _user_name(portal, int(task.get("RESPONSIBLE_ID") or 0)),
                "deadline": task.get("DEADLINE"),
                "deal_id": deals[0] if deals and deals[0].isdigit() else None,
            }
        )
    return answer


def _acting_user(portal: Portal, raw: Any) -> str:
    value = str(raw or "").strip()
    if value == AUTOMATION:
        return value
    if not value.isdigit() or int(value) not in portal.users or not portal.users[int(value)].get("ACTIVE"):
        raise BadRequest(f"unknown user {value!r}: give an active user id or {AUTOMATION!r}")
    return value


def _category(portal: Portal, raw: Any) -> int:
    value = str(raw if raw is not None else "0").strip() or "0"
    if not value.isdigit() or int(value) not in portal.categories:
        raise BadRequest(f"unknown pipeline {value!r}")
    return int(value)


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("send a JSON object")
    return body


def _actor(sandbox: Sandbox, portal: Portal, user: str) -> Any:
    if user == AUTOMATION:
        return sandbox.act_as_automation(portal)
    return sandbox.act(portal, int(user))


def _deal_id(portal: Portal, raw: Any) -> int:
    value = str(raw or "").strip()
    if not value.isdigit() or int(value) not in portal.deals:
        raise BadRequest(f"no deal {value!r}")
    return int(value)


@bp.errorhandler(BadRequest)
def bad_request(error: BadRequest) -> ResponseReturnValue:
    return jsonify(error="bad_request", message=str(error)), 400


@bp.errorhandler(RestError)
def refused(error: RestError) -> ResponseReturnValue:
    body = error.body()
    return jsonify(error="refused", message=body.get("error_description") or str(body)), 400


@bp.get("")
@bp.get("/")
def page() -> ResponseReturnValue:
    """The kanban page."""
    lang = _lang()
    strings = {key: i18n.translate(key, lang) for key in JS_STRINGS}
    return render_template("sandbox/kanban.html", lang=lang, translate=i18n.translate, strings=strings)


@bp.get("/api/board")
def board() -> ResponseReturnValue:
    """Everything the page shows, read in one go: pipelines, stages, deals, fields, people, notifications."""
    sandbox = _sandbox()
    lang = "en" if request.args.get("lang") == "en" else "ru"
    with sandbox.lock:
        portal = _portal(sandbox)
        category = _category(portal, request.args.get("pipeline"))
        user = _acting_user(portal, request.args.get("user") or "2")
        fields = _fields(portal, lang)
        names = [field["name"] for field in fields]
        stages = [
            {"id": s["STATUS_ID"], "name": s["NAME"], "color": s.get("COLOR") or "", "semantics": s.get("SEMANTICS")}
            for s in portal.stages(category)
        ]
        deals = [_deal(portal, row, names) for row in portal.deals.values() if row.category_id == category]
        answer = {
            "portal": {"domain": portal.domain, "name": portal.name, "installed": portal.installed},
            "pipelines": [
                {"id": str(c["ID"]), "name": c["NAME"]}
                for c in sorted(portal.categories.values(), key=lambda c: (c["SORT"], c["ID"]))
            ],
            "pipeline": str(category),
            "stages": stages,
            "deals": sorted(deals, key=lambda d: int(d["id"]), reverse=True),
            "fields": fields,
            "users": _users(portal),
            "user": user,
            "notifications": _notifications(portal, user),
            "tasks": _tasks(portal, user),
            "robots": _robots(portal, lang),
            "deal_tabs": _deal_tabs(portal, lang),
            "app": bool(portal.app_url) and portal.installed,
        }
    return jsonify(answer)


def _deal_tabs(portal: Portal, lang: str) -> list[dict[str, str]]:
    """The deal card's tabs that apps placed there (placement.bind CRM_DEAL_DETAIL_TAB), titled in `lang`."""
    tabs = []
    for placement in sorted(portal.placements.values(), key=lambda p: p.id):
        if placement.placement != DEAL_TAB:
            continue
        titles = placement.lang_all.get(lang) if isinstance(placement.lang_all, dict) else None
        title = titles.get("TITLE") if isinstance(titles, dict) else None
        tabs.append({"id": str(placement.id), "title": str(title or placement.title or DEAL_TAB)})
    return tabs


@bp.get("/api/v1/")
def bx24_library() -> ResponseReturnValue:
    """The sandbox's BX24 library (sandbox/static/bx24.js): B24_JS_URL points the app's pages here in the demo."""
    response = send_file(BX24_JS, mimetype="text/javascript", max_age=0)
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@bp.get("/api/deal")
def deal_card() -> ResponseReturnValue:
    """One deal as its card shows it (any pipeline): what a deal link opened through BX24.openPath shows."""
    sandbox = _sandbox()
    lang = _lang()
    with sandbox.lock:
        portal = _portal(sandbox)
        deal_id = _deal_id(portal, request.args.get("deal_id"))
        names = [field["name"] for field in _fields(portal, lang)]
        return jsonify(deal=_deal(portal, portal.deals[deal_id], names))


@bp.post("/api/frame")
def frame() -> ResponseReturnValue:
    """What the portal POSTs into an app frame it opens for a person: the handler and the signed form.

    `placement` DEFAULT is the app's own page (its handler: the app's address + /b24/app), CRM_DEAL_DETAIL_TAB
    a deal card's tab (the handler placement.bind registered, PLACEMENT_OPTIONS {"ID": deal}). The page adds
    DOMAIN, PROTOCOL, LANG (its own language) and APP_SID to the URL, as the portal does, naming its own address."""
    sandbox = _sandbox()
    body = _body()
    with sandbox.lock:
        portal = _portal(sandbox)
        user = _acting_user(portal, body.get("user"))
        if user == AUTOMATION:
            raise BadRequest("a robot opens no pages: choose a person")
        placement = str(body.get("placement") or "DEFAULT")
        options: Any = body.get("options") or {}
        if not isinstance(options, dict):
            raise BadRequest("options: give an object")
        if placement == DEAL_TAB:
            deal_id = _deal_id(portal, body.get("deal_id"))
            bound = [p for p in portal.placements.values() if p.placement == DEAL_TAB]
            if not bound:
                raise BadRequest("no app placed a tab in the deal card")
            handler = bound[0].handler
            options = {"ID": str(deal_id)}
        elif placement == "DEFAULT":
            if not portal.app_url or not portal.installed:
                raise BadRequest("the app is not installed")
            handler = portal.app_url.rstrip("/") + "/b24/app"
        else:
            raise BadRequest(f"unknown placement {placement!r}")
        tokens = sandbox.issue_tokens(portal, int(user))
        fields = {
            "AUTH_ID": tokens["access_token"],
            "AUTH_EXPIRES": str(tokens["expires_in"]),
            "REFRESH_ID": tokens["refresh_token"],
            "SERVER_ENDPOINT": tokens["server_endpoint"],
            "member_id": portal.member_id,
            "APPLICATION_TOKEN": portal.application_token,
            "status": portal.status,
            "PLACEMENT": placement,
            "PLACEMENT_OPTIONS": json.dumps(options, ensure_ascii=False) if options else "",
        }
        is_admin = bool(portal.users[int(user)].get("IS_ADMIN"))
        return jsonify(url=handler, fields=fields, is_admin=is_admin)


@bp.post("/api/move")
def move() -> ResponseReturnValue:
    """Drag a card to a stage as the acting user (or automation): the portal fires its events."""
    sandbox = _sandbox()
    body = _body()
    with sandbox.lock:
        portal = _portal(sandbox)
        user = _acting_user(portal, body.get("user"))
        deal_id = _deal_id(portal, body.get("deal_id"))
        stage_id = str(body.get("stage_id") or "")
        if portal.stage(stage_id) is None:
            raise BadRequest(f"unknown stage {stage_id!r}")
        _actor(sandbox, portal, user).move_deal(deal_id, stage_id)
        return jsonify(ok=True, deal_id=str(deal_id), stage_id=portal.deals[deal_id].stage_id)


@bp.post("/api/deal")
def edit_deal() -> ResponseReturnValue:
    """Save the card editor: user fields only, as the acting user."""
    sandbox = _sandbox()
    body = _body()
    with sandbox.lock:
        portal = _portal(sandbox)
        user = _acting_user(portal, body.get("user"))
        deal_id = _deal_id(portal, body.get("deal_id"))
        values = body.get("fields")
        if not isinstance(values, dict) or not values:
            raise BadRequest("fields: give an object of user field values")
        changes: dict[str, Any] = {}
        for name, value in values.items():
            userfield = portal.userfield_by_name(str(name))
            if userfield is None:
                raise BadRequest(f"unknown field {name!r}")
            text = "" if value is None else str(value)
            if userfield.user_type_id == "enumeration" and text:
                if text not in {str(item["ID"]) for item in userfield.items}:
                    raise BadRequest(f"{name}: {text!r} is not one of its values")
            changes[userfield.field_name] = text
        _actor(sandbox, portal, user).update_deal(deal_id, changes)
        return jsonify(ok=True, deal=_deal(portal, portal.deals[deal_id], [f["name"] for f in _fields(portal, "ru")]))


@bp.post("/api/new-deal")
def new_deal() -> ResponseReturnValue:
    """«Новая входящая сделка»: a lead arrives from the web form into the pipeline's first stage, created by the
    acting person (a robot: by automation, for the portal's admin); the portal fires ONCRMDEALADD, so the lead
    exchange and the duty rota can route it."""
    sandbox = _sandbox()
    body = _body()
    with sandbox.lock:
        portal = _portal(sandbox)
        user = _acting_user(portal, body.get("user"))
        category = _category(portal, body.get("pipeline"))
        stages = portal.stages(category)
        if not stages:
            raise BadRequest(f"pipeline {category} has no stages")
        number = portal.counters.get("deal", 0) + 1
        responsible = sandbox.admin_id(portal) if user == AUTOMATION else int(user)
        deal_id = _actor(sandbox, portal, user).create_deal(
            TITLE=f"Входящая заявка с сайта №{number}",
            CATEGORY_ID=str(category),
            STAGE_ID=stages[0]["STATUS_ID"],
            ASSIGNED_BY_ID=str(responsible),
            SOURCE_ID="WEB",
            OPPORTUNITY="120000.00",
            CURRENCY_ID="RUB",
        )
        return jsonify(ok=True, deal_id=str(deal_id))


def _label(value: Any, lang: str, fallback: str) -> str:
    """A robot's name or a property's name: {"ru": ..., "en": ...} or plain text."""
    if isinstance(value, dict):
        return str(value.get(lang) or value.get("ru") or value.get("en") or fallback)
    return str(value or fallback)


def _robots(portal: Portal, lang: str) -> list[dict[str, str]]:
    """The robots apps registered (bizproc.robot.add), as the automation rules editor lists them."""
    return [{"code": code, "name": _label(robot.name, lang, code)} for code, robot in sorted(portal.robots.items())]


@bp.post("/api/robot")
def run_robot() -> ResponseReturnValue:
    """«Запустить робота»: automation reaches an app's robot on a deal (its properties at their defaults);
    the portal POSTs the robot's HANDLER. Answers the event token to ask for the result with."""
    sandbox = _sandbox()
    body = _body()
    with sandbox.lock:
        portal = _portal(sandbox)
        deal_id = _deal_id(portal, body.get("deal_id"))
        code = str(body.get("code") or "")
        robot = portal.robots.get(code)
        if robot is None:
            raise BadRequest(f"no robot {code!r}")
        properties = {
            key: spec.get("Default", "") for key, spec in (robot.properties or {}).items() if isinstance(spec, dict)
        }
    token = sandbox.run_robot(portal, code, deal_id, properties)
    return jsonify(ok=True, token=token)


@bp.get("/api/robot")
def robot_result() -> ResponseReturnValue:
    """What the app answered a robot run with (bizproc.event.send), named as its return properties are."""
    sandbox = _sandbox()
    lang = _lang()
    with sandbox.lock:
        portal = _portal(sandbox)
        run = portal.robot_runs.get(request.args.get("token") or "")
        if run is None:
            raise BadRequest("no such robot run")
        if run.return_values is None:
            return jsonify(done=False)
        robot = portal.robots.get(run.code)
        specs = (robot.return_properties if robot else None) or {}
        values = [
            {"name": _label((specs.get(key) or {}).get("Name"), lang, key), "value": str(value)}
            for key, value in run.return_values.items()
            if str(value) != ""
        ]
        return jsonify(done=True, values=values, log=list(run.log_messages))


def deal_page(deal_id: int) -> ResponseReturnValue:
    """A deal's address on the portal (what CrmClient.deal_url links to): the kanban with that deal's card open."""
    args: dict[str, Any] = {"deal": str(deal_id)}
    if request.args.get("portal"):
        args["portal"] = request.args["portal"]
    return redirect(url_for("kanban.page", **args))


def init_app(app: Flask) -> None:
    """Serve the kanban from the sandbox WSGI app, and the portal's deal addresses."""
    app.register_blueprint(bp)
    app.add_url_rule("/crm/deal/details/<int:deal_id>/", "deal_page", deal_page)

    @app.after_request
    def no_store(response: Response) -> Response:
        if request.path.startswith("/sandbox/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response
