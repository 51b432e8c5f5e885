"""Interface strings of the QA review (deal-card tab and QA queue), Russian first."""

from __future__ import annotations

import re
from collections.abc import Mapping

from app.core import i18n
from app.domain.catalog import REASONS

STRINGS: dict[str, tuple[str, str]] = {
    # case states
    "review_state_awaiting_review": ("Ожидает проверки", "Awaiting review"),
    "review_state_callback_scheduled": ("Назначен звонок клиенту", "Callback scheduled"),
    "review_state_confirmed": ("Отказ подтверждён", "Refusal confirmed"),
    "review_state_closed_lost": ("Закрыта как проигранная", "Closed as lost"),
    "review_state_win_back": ("Предложено повторно", "Offered again"),
    "review_state_leaked": ("Возвращена в продажи", "Returned to sales"),
    "review_state_unreachable": ("Клиент недоступен — решает руководитель", "Client unreachable — a head decides"),
    "review_state_withdrawn": ("Отозвана менеджером", "Withdrawn by the manager"),
    # timeline steps
    "review_event_opened": ("Открыта проверка", "Review opened"),
    "review_event_recordings_confirm": ("Записи подтверждают причину", "Recordings confirm the reason"),
    "review_event_recordings_not_confirmed": ("Записи не подтверждают причину", "Recordings do not confirm the reason"),
    "review_event_recordings_none": ("Записей нет", "No recordings"),
    "review_event_schedule_callback": ("Назначен звонок клиенту", "Callback scheduled"),
    "review_event_cancel_callback": ("Звонок клиенту отменён", "Callback cancelled"),
    "review_event_client_confirms": ("Клиент подтвердил отказ", "The client confirmed the refusal"),
    "review_event_client_denies": ("Клиент не отказывался", "The client did not refuse"),
    "review_event_no_answer": ("Клиент не ответил", "No answer"),
    "review_event_unreachable": ("Клиент недоступен", "Client unreachable"),
    "review_event_close_lost": ("Закрыта как проигранная", "Closed as lost"),
    "review_event_offer_again": ("Предложено повторно", "Offered again"),
    "review_event_return_to_sales": ("Возвращена в продажи другому менеджеру", "Returned to sales, another manager"),
    "review_event_withdrawn": ("Менеджер вернул сделку в работу", "The manager took the deal back"),
    "review_event_closed_lost_in_crm": ("Закрыта как проигранная в CRM", "Closed as lost in the CRM"),
    "review_event_returned_in_crm": ("Возвращена в работу в CRM", "Moved back to work in the CRM"),
    # the tab
    "review_title": ("Проверка отказа", "Refusal review"),
    "review_no_case": ("По этой сделке нет проверки отказа.", "There is no refusal review for this deal."),
    "review_read_only": (
        "Только просмотр: решения принимают сотрудники ОКК и руководители продаж.",
        "Read only: QA staff and heads of sales make the decisions.",
    ),
    "review_closed": ("Проверка завершена.", "The review is finished."),
    "review_next": ("Что дальше", "Next"),
    "review_state_needs_callback": (
        "Записи не подтвердили причину — нужен звонок клиенту",
        "Recordings did not confirm the reason — call the client",
    ),
    # the next step, by state (the status, the step and the buttons always agree)
    "next_listen": (
        "Шаг 1 из 2: прослушайте записи звонков ниже и отметьте, подтверждают ли они причину отказа.",
        "Step 1 of 2: listen to the call recordings below and record whether they confirm the reason.",
    ),
    "next_schedule": (
        "Шаг 2 из 2: назначьте звонок клиенту — записи причину не подтвердили.",
        "Step 2 of 2: schedule a call to the client — the recordings did not confirm the reason.",
    ),
    "next_call": (
        "Шаг 2 из 2: {when} {name} звонит клиенту и отмечает результат звонка.",
        "Step 2 of 2: {name} calls the client at {when} and records the result.",
    ),
    "next_decide": (
        "Отказ подтверждён: закройте сделку как проигранную или предложите клиенту снова.",
        "The refusal is confirmed: close the deal as lost or offer again.",
    ),
    "next_head_decides": (
        "Клиент не ответил на звонки: решение принимает руководитель отдела продаж.",
        "The client did not answer: a head of sales decides.",
    ),
    # what an action did (the answer to the button), and the summary of a finished review
    "did_recordings_confirm": (
        "Записи подтверждают причину — отказ подтверждён. Закройте сделку или предложите клиенту снова.",
        "The recordings confirm the reason — the refusal is confirmed. Close the deal or offer again.",
    ),
    "did_recordings_not_confirmed": (
        "Отмечено: записи не подтверждают причину. Назначьте звонок клиенту.",
        "Recorded: the recordings do not confirm the reason. Schedule a call to the client.",
    ),
    "did_recordings_none": (
        "Отмечено: записей нет. Назначьте звонок клиенту.",
        "Recorded: there are no recordings. Schedule a call to the client.",
    ),
    "did_schedule_callback": ("Перезвон назначен на {when}, {name}.", "Callback scheduled for {when}, {name}."),
    "did_cancel_callback": (
        "Звонок клиенту отменён. Назначьте новый, когда будет удобно.",
        "The callback is cancelled. Schedule a new one when convenient.",
    ),
    "did_client_confirms": (
        "Клиент подтвердил отказ. Закройте сделку как проигранную или предложите снова.",
        "The client confirmed the refusal. Close the deal as lost or offer again.",
    ),
    "did_no_answer": (
        "Клиент не ответил (попытка {attempt} из {attempts}). Следующий звонок — {when}, {name}.",
        "No answer (attempt {attempt} of {attempts}). Next call: {when}, {name}.",
    ),
    "did_unreachable": (
        "Клиент не ответил {attempts} раз(а): сделку решает руководитель отдела продаж, ему отправлено уведомление.",
        "The client did not answer {attempts} times: a head of sales decides and has been notified.",
    ),
    "summary_closed_lost": (
        "Итог: сделка закрыта как проигранная, причина — {reason}.",
        "Outcome: the deal is closed as lost, reason: {reason}.",
    ),
    "summary_win_back": (
        "Итог: клиенту предложено снова — сделка на стадии «{stage}» у менеджера {manager}.",
        "Outcome: offered again — the deal is at \u201c{stage}\u201d with {manager}.",
    ),
    "summary_leaked": (
        "Итог: клиент не отказывался — сделка возвращена в продажи на стадию «{stage}», новый менеджер — {manager}.",
        "Outcome: the client did not refuse — the deal is back in sales at \u201c{stage}\u201d, "
        "new manager: {manager}.",
    ),
    "summary_fine": ("Штраф менеджеру {leaker}: {amount}.", "Fine for {leaker}: {amount}."),
    "summary_fine_cancelled": (
        "Штраф менеджеру {leaker} ({amount}) отменён.",
        "The fine for {leaker} ({amount}) was cancelled.",
    ),
    "summary_withdrawn": (
        "Итог: менеджер вернул сделку в работу до конца проверки — проверка отозвана.",
        "Outcome: the manager took the deal back before the review ended — the review is withdrawn.",
    ),
    "summary_deleted": (
        "Итог: сделка удалена — проверка отозвана.",
        "Outcome: the deal was deleted — the review is withdrawn.",
    ),
    "summary_in_crm": (
        "Итог: сделку закрыли как проигранную прямо в CRM ({who}).",
        "Outcome: the deal was closed as lost directly in the CRM ({who}).",
    ),
    "summary_returned_in_crm": (
        "Итог: сделку вернули в работу прямо в CRM ({who}).",
        "Outcome: the deal was moved back to work directly in the CRM ({who}).",
    ),
    "review_loading": ("Загрузка…", "Loading…"),
    "review_load_failed": ("Не удалось загрузить проверку:", "Could not load the review:"),
    "review_manager": ("Менеджер", "Manager"),
    "review_reason": ("Причина", "Reason"),
    "review_comment": ("Комментарий менеджера", "Manager's comment"),
    "review_in_refusal": ("В «Условном отказе»", "In Conditional refusal"),
    "review_amount": ("Сумма", "Amount"),
    "review_source": ("Источник", "Source"),
    "review_cpl": ("CPL", "CPL"),
    "review_state": ("Статус", "Status"),
    "review_due": ("Срок проверки", "Review due"),
    "review_qa": ("Сотрудник ОКК", "QA"),
    "review_verdict": ("Вердикт ОКК", "QA verdict"),
    "review_next_callback": ("Звонок клиенту", "Client callback"),
    "review_unanswered": ("Без ответа", "Unanswered"),
    "review_recordings": ("Записи звонков", "Call recordings"),
    "review_no_calls": ("Звонков по сделке нет.", "No calls on this deal."),
    "review_play": ("Прослушать", "Play"),
    "review_no_recording": ("без записи", "no recording"),
    "review_incoming": ("входящий", "incoming"),
    "review_outgoing": ("исходящий", "outgoing"),
    "review_timeline": ("История проверки", "Review history"),
    "review_note": ("Комментарий", "Note"),
    "review_step1": ("Шаг 1. Записи звонков", "Step 1. Call recordings"),
    "review_callback": ("Звонок клиенту", "Client callback"),
    "review_callback_at": ("Дата и время (время портала)", "Date and time (portal time)"),
    "review_assignee": ("Кто звонит", "Who calls"),
    "review_step2": ("Шаг 2. Результат звонка клиенту", "Step 2. The client callback"),
    "review_if_denies": ("Если клиент не отказывался — куда вернуть сделку", "If the client did not refuse — where to"),
    "review_outcome": ("Решение", "Outcome"),
    "review_stage": ("Стадия", "Stage"),
    "review_new_manager": ("Новый менеджер", "New manager"),
    "review_round_robin": ("Автоматически, по очереди", "Automatically, in turn"),
    "review_confirmed_reason": ("Подтверждённая причина", "Confirmed reason"),
    "review_done": ("Готово.", "Done."),
    "review_failed": ("Не выполнено:", "Not done:"),
    "action_recordings_confirm": ("Записи подтверждают причину", "Recordings confirm the reason"),
    "action_recordings_not_confirmed": ("Записи не подтверждают", "Recordings do not confirm"),
    "action_recordings_none": ("Записей нет", "No recordings"),
    "action_schedule_callback": ("Назначить звонок", "Schedule the callback"),
    "action_cancel_callback": ("Отменить звонок", "Cancel the callback"),
    "action_client_confirms": ("Клиент подтвердил отказ", "Client confirms"),
    "action_client_denies": ("Клиент не отказывался", "Client denies"),
    "action_no_answer": ("Не ответил", "No answer"),
    "action_close_lost": ("Закрыть как проигранную", "Close as lost"),
    "action_offer_again": ("Предложить снова", "Offer again"),
    "action_return_to_sales": ("Вернуть в продажи другому менеджеру", "Return to sales, another manager"),
    # the queue
    "tab_queue": ("Очередь ОКК", "QA queue"),
    "queue_empty": ("Открытых проверок нет.", "No open reviews."),
    "queue_all": ("Все", "All"),
    "queue_pipeline": ("Воронка", "Pipeline"),
    "queue_manager": ("Менеджер", "Manager"),
    "queue_qa": ("Сотрудник ОКК", "QA"),
    "queue_state": ("Статус", "Status"),
    "queue_deal": ("Сделка", "Deal"),
    "queue_reason": ("Причина", "Reason"),
    "queue_sla": ("Срок", "Due"),
    "queue_overdue": ("просрочено на", "overdue by"),
    "queue_left": ("осталось", "left"),
    "queue_callback": ("звонок", "callback"),
    # settings
    "review_settings": ("Звонки клиентам", "Client callbacks"),
    "review_settings_interval": ("Интервал между попытками, минут", "Interval between attempts, minutes"),
    "review_settings_attempts": ("Попыток дозвона до «клиент недоступен»", "Attempts before «client unreachable»"),
    # names in place of codes (timeline notes, CPL rules)
    "review_note_qa": ("Сотрудник ОКК: {name}", "QA: {name}"),
    "review_note_no_qa": ("сотрудник ОКК не назначен", "no QA staff member assigned"),
    "review_note_attempt": ("попытка {attempt} из {attempts}", "attempt {attempt} of {attempts}"),
    "review_note_next_call": ("следующий звонок {when}", "next call {when}"),
    "review_note_by_role": ("роль: {role}", "role: {role}"),
    "review_note_left_refusal": (
        "сделка ушла из «Условного отказа» до конца проверки",
        "the deal left Conditional refusal before the review ended",
    ),
    "review_note_deleted": ("сделка удалена", "the deal was deleted"),
    "role_qa": ("сотрудник ОКК", "QA staff"),
    "role_head": ("руководитель отдела продаж", "head of sales"),
    "role_exempt": ("исключение из правил", "exempt"),
    "role_manager": ("менеджер", "manager"),
    "role_admin": ("администратор", "administrator"),
    "automation_actor": ("Робот / автоматизация", "Robot / automation"),
    "cpl_rule_deal_cpl": ("CPL из поля сделки", "the deal's CPL field"),
    "cpl_rule_source": ("CPL источника «{name}»", "CPL of the source \u201c{name}\u201d"),
    "cpl_rule_pipeline": ("CPL воронки «{name}»", "CPL of the pipeline \u201c{name}\u201d"),
    "cpl_rule_pipeline_unnamed": ("CPL воронки", "the pipeline's CPL"),
    "cpl_rule_portal_default": ("CPL портала по умолчанию", "the portal's default CPL"),
}

i18n.register(STRINGS)


def cpl_rule_text(
    rule: str, language: str, sources: Mapping[str, str], pipelines: Mapping[str, str] | None = None
) -> str:
    """Where a fine's amount came from, by name: «CPL источника «Сайт»» for `source:WEB`."""
    t = lambda key, **values: i18n.translate(key, language).format(**values)  # noqa: E731
    kind, _, value = rule.partition(":")
    if kind == "source":
        return t("cpl_rule_source", name=sources.get(value, value))
    if kind == "pipeline":
        name = (pipelines or {}).get(value)
        return t("cpl_rule_pipeline", name=name) if name else t("cpl_rule_pipeline_unnamed")
    if rule in ("deal_cpl", "portal_default"):
        return t(f"cpl_rule_{rule}")
    return rule


def actor_name(actor: str, names: Mapping[str, str], language: str) -> str:
    """Who did a step: a person's name, «Робот / автоматизация» for automation."""
    if actor == "automation":
        return i18n.translate("automation_actor", language)
    return names.get(actor, actor or "—")


def _role(role: str, language: str) -> str:
    key = f"role_{role}"
    return i18n.translate(key, language) if key in i18n.STRINGS else role


def _reason(code: str, language: str) -> str:
    return REASONS[code].in_language(language) if code in REASONS else code


def timeline_note(action: str, note: str, names: Mapping[str, str], language: str) -> str:
    """A timeline step's note with names in place of the ids and codes it was written with.

    The notes are stored as the review wrote them (`QA: 7`, `08.12.2026 11:00; 8; text`, `В работе; 4`,
    `price → other`, `1/3; 08.12.2026 12:00`); the QA's own text after them is kept as it is.
    """
    t = lambda key, **values: i18n.translate(key, language).format(**values)  # noqa: E731
    if action == "opened":
        qa = note.removeprefix("QA: ").strip()
        if not qa or qa == "nobody configured":
            return t("review_note_no_qa")
        return t("review_note_qa", name=names.get(qa, qa))
    if action == "schedule_callback":
        parts = note.split("; ", 2)
        if len(parts) >= 2:
            rest = f"; {parts[2]}" if len(parts) == 3 else ""
            return f"{parts[0]}, {names.get(parts[1], parts[1])}{rest}"
    if action == "no_answer":
        match = re.fullmatch(r"(\d+)/(\d+)(?:; (\d\d\.\d\d\.\d{4} \d\d:\d\d))?(?:; (.*))?", note, re.DOTALL)
        if match:
            attempt, attempts, when, text = match.groups()
            said = [t("review_note_attempt", attempt=attempt, attempts=attempts)]
            if when:
                said.append(t("review_note_next_call", when=when))
            return "; ".join(said + ([text] if text else []))
    if action == "return_to_sales":
        parts = note.split("; ", 2)
        if len(parts) >= 2:
            rest = f"; {parts[2]}" if len(parts) == 3 else ""
            return f"{parts[0]}, {names.get(parts[1], parts[1])}{rest}"
    if action == "close_lost":
        match = re.fullmatch(r"(\w+) → (\w+)(; .*)?", note, re.DOTALL)
        if match:
            old, new, rest = match.groups()
            return f"{_reason(old, language)} → {_reason(new, language)}{rest or ''}"
    if action in ("closed_lost_in_crm", "returned_in_crm"):
        match = re.fullmatch(r".* by (\w+)", note)
        if match:
            return t("review_note_by_role", role=_role(match.group(1), language))
    if action == "withdrawn":
        if note == "deleted":
            return t("review_note_deleted")
        if note == "the deal left Conditional refusal before the review ended":
            return t("review_note_left_refusal")
    return note
