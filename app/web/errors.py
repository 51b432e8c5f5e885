"""Every error the pages' JSON API answers, in the user's language.

An error answer keeps its machine-readable `error` and English `message` (for API callers and logs) and
gains what a page shows:
- `code`: what went wrong, one word (`admin_only`, `already_taken`, `range`, …);
- `text`: one sentence in the page's language (never English on a Russian page, never raw JSON);
- `field_errors`: for a 400 that names wrong fields, each field's path (`pipelines.2.pool_user`) with its
  own `code` and `text`.

The English messages are the catalogue's keys (as msgids are in gettext): each rule below matches one
message, its named groups fill the sentence. A message no rule knows still gets a sentence by its HTTP
status, so a page never shows a raw English message.

The language is the page's (`X-RC-Lang`, sent by every page with its own language), else the portal's,
else Russian.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, g, request

LANGUAGES = ("ru", "en")


@dataclass(frozen=True)
class Rule:
    """One English message (a regular expression matched whole) and its sentence in both languages."""

    code: str
    pattern: re.Pattern[str]
    ru: str
    en: str

    def sentence(self, match: re.Match[str], language: str) -> str:
        template = self.en if language == "en" else self.ru
        return template.format(**{key: value or "" for key, value in match.groupdict().items()})


def _rules(*rows: tuple[str, str, str, str]) -> tuple[Rule, ...]:
    return tuple(Rule(code, re.compile(pattern, re.IGNORECASE | re.DOTALL), ru, en) for code, pattern, ru, en in rows)


# Messages of a whole answer (the `message` of an error).
MESSAGES = _rules(
    # who may do what
    (
        "admin_only",
        r"only a portal administrator can .*",
        "Это может сделать только администратор портала.",
        "Only a portal administrator can do this.",
    ),
    (
        "heads_only",
        r"(reports and penalty appeals are for heads of sales .*|the task report is for heads of sales .*"
        r"|only an admin or a head can .*)",
        "Этот раздел доступен руководителям отдела продаж и администратору портала.",
        "This section is for heads of sales and the portal administrator.",
    ),
    (
        "qa_only",
        r"(the QA queue is for QA staff and heads of sales|only QA staff and heads of sales can act .*)",
        "Это доступно только сотрудникам ОКК и руководителям отдела продаж.",
        "Only QA staff and heads of sales can do this.",
    ),
    (
        "head_decides",
        r"only a head of sales decides an unreachable case",
        "Судьбу сделки с недоступным клиентом решает руководитель отдела продаж.",
        "A head of sales decides what happens to a deal whose client is unreachable.",
    ),
    (
        "listen_forbidden",
        r"only QA staff, heads and the deal's manager can listen .*",
        "Записи звонков слушают сотрудники ОКК, руководители и менеджер сделки.",
        "Only QA staff, heads of sales and the deal's manager can listen to its calls.",
    ),
    (
        "return_forbidden",
        r"only the manager holding the deal, a head or an admin can return it",
        "Вернуть сделку на биржу может менеджер, который её взял, руководитель или администратор.",
        "Only the manager holding the deal, a head or an administrator can return it.",
    ),
    (
        "qa_no_claims",
        r"QA staff do not take deals from the exchange",
        "Сотрудники ОКК не берут сделки с биржи.",
        "QA staff do not take deals from the exchange.",
    ),
    (
        "own_fine",
        r"nobody cancels his own fine",
        "Свой штраф отменить нельзя: попросите другого руководителя или администратора портала.",
        "You cannot cancel your own fine: ask another head of sales or the portal administrator.",
    ),
    # sessions and rows
    (
        "session_expired",
        r"missing or expired session token.*",
        "Сеанс истёк: откройте приложение из CRM заново.",
        "The session has expired: open the app from the CRM again.",
    ),
    (
        "not_installed",
        r"(the app is not installed on this portal.*|portal not found)",
        "Приложение не установлено на этом портале: установите его заново из Маркета.",
        "The app is not installed on this portal: install it again from the Market.",
    ),
    (
        "no_such_penalty",
        r"no such penalty",
        "Штраф не найден: возможно, страница устарела. Обновите её.",
        "The fine was not found: the page may be out of date. Reload it.",
    ),
    (
        "no_recording",
        r"(no such recording|the recording is gone from the CRM)",
        "Записи этого звонка больше нет в CRM.",
        "This call's recording is no longer in the CRM.",
    ),
    (
        "recording_refused",
        r"the recording link was not fetched: .*",
        "Запись не загружена: ссылка ведёт не на запись звонка вашего портала.",
        "The recording was not loaded: the link does not lead to a call recording of your portal.",
    ),
    (
        "no_table",
        r"no table .*",
        "Такой таблицы в отчёте нет.",
        "The report has no such table.",
    ),
    # the CRM and the request itself
    (
        "crm_unavailable",
        r"the CRM did not answer: (?P<detail>.*)",
        "CRM не ответила ({detail}). Ничего не изменено; попробуйте ещё раз через минуту.",
        "The CRM did not answer ({detail}). Nothing was changed; try again in a minute.",
    ),
    (
        "bad_json",
        r"(expected a JSON object|the body is not valid JSON|the JSON body is nested deeper than .*)",
        "Страница отправила неверный запрос. Обновите страницу и повторите.",
        "The page sent a malformed request. Reload the page and try again.",
    ),
    (
        "too_large",
        r".*(too large|at most \d+ bytes).*",
        "Слишком большой запрос: сократите текст.",
        "The request is too large: shorten the text.",
    ),
    (
        "invalid_fields",
        r"(invalid settings|invalid CPL settings|invalid report schedule|invalid rota|invalid action)",
        "Проверьте отмеченные поля.",
        "Check the marked fields.",
    ),
    # the lead exchange
    (
        "already_taken",
        r"the deal has already been taken.*",
        "Эту сделку уже взял другой менеджер.",
        "Another manager has already taken this deal.",
    ),
    (
        "cap",
        r"you already have (?P<count>\d+) open deals; the limit is (?P<cap>\d+)",
        "У вас уже {count} открытых сделок при лимите {cap}: закройте или верните одну, чтобы взять новую.",
        "You already have {count} open deals and the limit is {cap}: close or return one to take another.",
    ),
    (
        "busy",
        r"another claim of yours is still being processed.*",
        "Предыдущая заявка ещё обрабатывается: повторите через несколько секунд.",
        "Your previous claim is still being processed: try again in a few seconds.",
    ),
    (
        "not_routed",
        r"this pipeline has no lead exchange",
        "В этой воронке биржа лидов выключена.",
        "This pipeline has no lead exchange.",
    ),
    (
        "pool_user",
        r"the pool user cannot take deals",
        "Пользователь «Биржа лидов» не может брать сделки.",
        "The pool user cannot take deals.",
    ),
    (
        "other_department",
        r"this deal is on another department's exchange",
        "Эта сделка на бирже другого отдела.",
        "This deal is on another department's exchange.",
    ),
    (
        "not_taken",
        r"the deal is not taken",
        "Сделка уже не за вами: она на бирже или у другого менеджера.",
        "The deal is no longer yours: it is on the exchange or with another manager.",
    ),
    (
        "reason_required",
        r"a reason is required",
        "Укажите причину возврата.",
        "Give a reason for returning the deal.",
    ),
    (
        "appeal_reason_required",
        r"a reason is required to cancel a fine",
        "Укажите, почему штраф отменяется.",
        "Give a reason for cancelling the fine.",
    ),
    (
        "already_cancelled",
        r"this fine was already cancelled",
        "Этот штраф уже отменён.",
        "This fine was already cancelled.",
    ),
    (
        "not_a_fine",
        r"only a fine can be appealed",
        "Отменить можно только штраф.",
        "Only a fine can be cancelled.",
    ),
    # the QA review
    (
        "stale_case",
        r"The case has changed since the page was loaded.*",
        "Проверку уже изменили после загрузки страницы (кто-то успел принять решение). Ничего не сделано: "
        "обновите вкладку.",
        "The review changed after the page was loaded (someone has already acted). Nothing was done: reload the tab.",
    ),
    (
        "stale_deal",
        r"The deal was changed in the CRM since the page was loaded.*",
        "Сделку изменили в CRM после загрузки страницы (стадию или ответственного). Ничего не записано: "
        "обновите вкладку и проверьте снова.",
        "The deal was changed in the CRM after the page was loaded (stage or responsible). Nothing was "
        "written: reload the tab and check again.",
    ),
    (
        "wrong_state",
        r"this action is not possible while the case is .*",
        "Сейчас это действие недоступно: проверка уже на другом шаге. Обновите вкладку.",
        "This action is not available now: the review is at another step. Reload the tab.",
    ),
    (
        "callback_time_required",
        r"date and time are required.*",
        "Укажите дату и время звонка.",
        "Enter the date and time of the callback.",
    ),
    (
        "callback_in_past",
        r"the callback time must be in the future",
        "Время звонка уже прошло: выберите время в будущем.",
        "The callback time has passed: choose a time in the future.",
    ),
    (
        "callback_too_far",
        r"the callback must be within (?P<days>\d+) days",
        "Звонок можно назначить не дальше чем через {days} дней.",
        "A callback can be at most {days} days ahead.",
    ),
    (
        "callback_assignee",
        r"the callback must be assigned to a QA staff member",
        "Выберите, кто из сотрудников ОКК звонит.",
        "Choose the QA staff member who calls.",
    ),
    (
        "unknown_reason",
        r"unknown reason .*",
        "Выберите причину из списка.",
        "Choose a reason from the list.",
    ),
    (
        "no_lost_stage",
        r"the deal's pipeline has no lost stage",
        "В воронке сделки нет стадии проигрыша.",
        "The deal's pipeline has no lost stage.",
    ),
    (
        "stage_required",
        r"choose a sales stage of the deal's pipeline",
        "Выберите стадию продаж воронки этой сделки.",
        "Choose a sales stage of the deal's pipeline.",
    ),
    (
        "same_manager",
        r"the deal cannot go back to the manager who leaked it",
        "Сделку нельзя вернуть менеджеру, который её слил: выберите другого.",
        "The deal cannot go back to the manager who leaked it: choose another one.",
    ),
    (
        "manager_required",
        r"choose an active sales manager",
        "Выберите работающего менеджера по продажам.",
        "Choose an active sales manager.",
    ),
    (
        "no_manager",
        r"there is no other active sales manager to give the deal to",
        "Нет другого работающего менеджера, которому можно передать сделку.",
        "There is no other active sales manager to give the deal to.",
    ),
    (
        "no_action",
        r"no action .*",
        "Такого действия нет. Обновите вкладку.",
        "There is no such action. Reload the tab.",
    ),
    # reports and task control
    (
        "bad_period",
        r"(dates must look like .*|'from' is after 'to'|from/to: expected .*)",
        "Проверьте даты периода: начало должно быть не позже конца.",
        "Check the period's dates: the start must not be after the end.",
    ),
    (
        "period_too_long",
        r"a period can be at most (?P<days>\d+) days long",
        "Период не может быть длиннее {days} дней.",
        "A period can be at most {days} days long.",
    ),
    (
        "bad_month",
        r"month: expected .*",
        "Выберите месяц.",
        "Choose a month.",
    ),
    (
        "department_required",
        r"department_id is required|expected \{department_id, days: .*",
        "Выберите отдел.",
        "Choose a department.",
    ),
    (
        "not_a_number",
        r"(?P<name>\w+): not a number",
        "Сумма должна быть числом, например 150000.",
        "The amount must be a number, e.g. 150000.",
    ),
)

# Messages about one field (marshmallow's and the domain's validators).
FIELD_MESSAGES = _rules(
    ("required", r"Missing data for required field\.", "Заполните поле.", "Fill in this field."),
    (
        "time_zone",
        r"Unknown time zone\.",
        "Неизвестный часовой пояс: укажите его как Europe/Moscow или Asia/Novosibirsk.",
        "Unknown time zone: write it as Europe/Moscow or Asia/Novosibirsk.",
    ),
    ("unknown_field", r"Unknown field\.", "Неизвестное поле.", "Unknown field."),
    (
        "range",
        r"Must be greater than or equal to (?P<min>[\d.]+) and less than or equal to (?P<max>[\d.]+)\.",
        "Допустимо от {min} до {max}.",
        "Allowed: {min} to {max}.",
    ),
    ("range", r"Must be greater than or equal to (?P<min>[\d.]+)\.", "Не меньше {min}.", "At least {min}."),
    (
        "range",
        r"(?P<min>\d+) \(Monday\) to (?P<max>\d+) \(Sunday\)",
        "От 1 (понедельник) до 7 (воскресенье).",
        "1 (Monday) to 7 (Sunday).",
    ),
    ("range", r"(?P<min>\d+) to (?P<max>\d+)", "От {min} до {max}.", "{min} to {max}."),
    (
        "length",
        r"Length must be (?P<n>\d+)\.",
        "Нужно ровно {n} символа, например RUB.",
        "Exactly {n} characters, e.g. RUB.",
    ),
    ("choice", r"Must be one of: .*", "Выберите значение из списка.", "Choose a value from the list."),
    ("required", r"Shorter than minimum length 1\.|Length must be .*", "Заполните поле.", "Fill in this field."),
    (
        "not_a_number",
        r"Not a valid (integer|number|decimal)\.|not an amount: .*",
        "Введите число, например 1500 или 1500,50.",
        "Enter a number, e.g. 1500 or 1500.50.",
    ),
    (
        "invalid",
        r"Not a valid .*|Invalid (type|input)\.|expected an object.*|either \"all\" or a list of .*",
        "Неверное значение.",
        "Invalid value.",
    ),
    (
        "pool_user_required",
        r"the pool user is required when the pipeline is routed",
        "Выберите пользователя «Биржа лидов»: без него воронка не раздаёт сделки.",
        "Choose the pool user: without one the pipeline cannot route deals.",
    ),
    (
        "duty_department_required",
        r"the duty department is required in duty mode",
        "Выберите отдел дежурных: без него некому назначать сделки.",
        "Choose the duty department: without one nobody gets the deals.",
    ),
    (
        "commercial_required",
        r"required together with the size threshold",
        "Выберите коммерческий отдел, раз задан порог крупной сделки.",
        "Choose the commercial department, since a large-deal threshold is set.",
    ),
    ("unknown_reason", r"unknown reasons: .*", "Неизвестная причина отказа.", "Unknown refusal reason."),
    (
        "not_on_portal",
        r"no such (lead source|pipeline) on the portal",
        "Такого значения в CRM нет.",
        "The CRM has no such value.",
    ),
    ("bad_date", r"not a date .*", "Неверная дата.", "Invalid date."),
    (
        "inactive_user",
        r"no active user .*",
        "Этот сотрудник уволен или отключён: выберите другого.",
        "This user is dismissed or deactivated: choose another.",
    ),
    ("invalid", r"must not contain a NUL character", "Неверное значение.", "Invalid value."),
)

# A sentence by HTTP status for a message no rule knows.
BY_STATUS = {
    400: (
        "bad_request",
        "Запрос не принят: проверьте введённые данные.",
        "The request was refused: check what you entered.",
    ),
    401: (
        "session_expired",
        "Сеанс истёк: откройте приложение из CRM заново.",
        "The session has expired: open the app from the CRM again.",
    ),
    403: ("forbidden", "Недостаточно прав для этого действия.", "You do not have the rights for this."),
    404: (
        "not_found",
        "Не найдено: возможно, запись удалена. Обновите страницу.",
        "Not found: it may have been deleted. Reload the page.",
    ),
    405: ("bad_request", "Запрос не принят.", "The request was refused."),
    409: (
        "conflict",
        "Не выполнено: данные уже изменились. Обновите страницу.",
        "Not done: the data has changed. Reload the page.",
    ),
    413: ("too_large", "Слишком большой запрос: сократите текст.", "The request is too large: shorten the text."),
    422: ("refused", "Запрос не выполнен.", "The request was not carried out."),
    502: (
        "crm_unavailable",
        "CRM не ответила. Ничего не изменено; попробуйте ещё раз через минуту.",
        "The CRM did not answer. Nothing was changed; try again in a minute.",
    ),
}
FALLBACK = ("server_error", "Что-то пошло не так. Попробуйте ещё раз.", "Something went wrong. Try again.")


def page_language() -> str:
    """The language of the page that called: its `X-RC-Lang` header, else the portal's, else Russian."""
    asked = (request.headers.get("X-RC-Lang") or "").strip().lower()[:2]
    if asked in LANGUAGES:
        return asked
    portal_language = g.get("rc_portal_language")
    return portal_language if portal_language in LANGUAGES else "ru"


def explain(message: str, status: int, language: str) -> tuple[str, str]:
    """The code and the sentence for an answer's English message."""
    for rule in MESSAGES:
        match = rule.pattern.fullmatch(message.strip())
        if match:
            return rule.code, rule.sentence(match, language)
    code, ru, en = BY_STATUS.get(status, FALLBACK)
    return code, en if language == "en" else ru


def explain_field(message: str, language: str) -> tuple[str, str]:
    """The code and the sentence for one field's English message."""
    for rule in FIELD_MESSAGES:
        match = rule.pattern.fullmatch(message.strip())
        if match:
            return rule.code, rule.sentence(match, language)
    return "invalid", "Invalid value." if language == "en" else "Неверное значение."


def _leaves(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, str]]:
    """(dotted path, message) for every message in marshmallow's nested error structure."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            inner = path if key in ("_schema", "value") else (*path, str(key))
            yield from _leaves(item, inner)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _leaves(item, path)
    elif value is not None:
        yield ".".join(path) or "_schema", str(value)


def field_errors(fields: Any, language: str) -> dict[str, dict[str, str]]:
    """Each wrong field's path with one code and sentence (its first message)."""
    explained: dict[str, dict[str, str]] = {}
    for path, message in _leaves(fields):
        if path not in explained:
            code, text = explain_field(message, language)
            explained[path] = {"code": code, "text": text}
    return explained


def translate_answer(response: Response) -> Response:
    """`after_request` of the pages' API blueprints: add `code`, `text` and `field_errors` to an error answer."""
    if response.status_code < 400 or not response.is_json:
        return response
    body = response.get_json(silent=True)
    if not isinstance(body, dict) or "text" in body:
        return response
    language = page_language()
    code, text = explain(str(body.get("message") or ""), response.status_code, language)
    body["code"] = code
    body["text"] = text
    if body.get("fields"):
        body["field_errors"] = field_errors(body["fields"], language)
    response.set_data(json.dumps(body, ensure_ascii=False))
    return response


def install(app: Flask, *blueprints: Blueprint) -> None:
    """Translate every error answer of these blueprints' routes (and of their 401/404 before a route ran)."""
    names = {blueprint.name for blueprint in blueprints}
    prefixes = tuple(f"{blueprint.url_prefix}/" for blueprint in blueprints if blueprint.url_prefix)

    @app.after_request
    def translate_page_api(response: Response) -> Response:
        if request.blueprint in names or request.path.startswith(prefixes):
            return translate_answer(response)
        return response
