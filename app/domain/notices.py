"""The messages the guard sends to people in the CRM, in Russian and English."""

from __future__ import annotations

from app.domain.catalog import REFUSAL_STAGE, Label

TEMPLATES: dict[str, Label] = {
    "lost_to_refusal": Label(
        "Сделку «{title}» нельзя закрыть как проигранную: отказ проверяет отдел контроля качества. "
        "Сделка переведена в стадию «{stage}» с вашей причиной «{reason}». {link}",
        'The deal "{title}" cannot be closed as lost: refusals are reviewed by QA. '
        'It was moved to "{stage}" with your reason "{reason}". {link}',
    ),
    "lost_reverted": Label(
        "Сделку «{title}» нельзя закрыть как проигранную. Она возвращена на прежнюю стадию. "
        "Чтобы оформить отказ, заполните поля «Причина отказа» и «Комментарий к отказу» "
        "и переведите сделку в стадию «{stage}». {link}",
        'The deal "{title}" cannot be closed as lost. It was returned to its previous stage. '
        'To record a refusal, fill in "Refusal reason" and "Refusal comment" and move the deal to "{stage}". {link}',
    ),
    "refusal_incomplete": Label(
        "Сделка «{title}» возвращена на прежнюю стадию: для стадии «{stage}» нужны причина отказа и комментарий. "
        "Заполните оба поля и переведите сделку снова. {link}",
        'The deal "{title}" was returned to its previous stage: "{stage}" needs a refusal reason and a comment. '
        "Fill in both fields and move the deal again. {link}",
    ),
    "reason_retired": Label(
        "Сделка «{title}» возвращена на прежнюю стадию: причина «{reason}» больше не используется. "
        "Выберите другую причину отказа и переведите сделку снова. {link}",
        'The deal "{title}" was returned to its previous stage: the reason "{reason}" is no longer used. '
        "Pick another refusal reason and move the deal again. {link}",
    ),
    "case_ended_result": Label(
        "Проверка отказа завершена: {outcome}.",
        "The refusal review has ended: {outcome}.",
    ),
    "case_withdrawn": Label(
        "Проверка отказа по сделке «{title}» отменена: менеджер вернул сделку в работу. {link}",
        'The refusal review of "{title}" was withdrawn: the manager took the deal back to work. {link}',
    ),
    "deal_deleted": Label(
        "{who} удалил(а) сделку «{title}» ({amount}). Удалять сделки могут только ОКК и руководители: "
        "отказ должен пройти проверку. Удаление записано в отчёт.",
        '{who} deleted the deal "{title}" ({amount}). Only QA and heads may delete deals: '
        "a refusal has to be reviewed. The deletion is in the report.",
    ),
    "deleted_by_unknown": Label("Неизвестный пользователь", "An unknown user"),
    "deleted_by_automation": Label("Робот или интеграция", "A robot or an integration"),
    "qa_task_title": Label("Проверить отказ по сделке «{title}»", 'Review the refusal of "{title}"'),
    "qa_task_description": Label(
        "Менеджер перевёл сделку в «{stage}». Причина: {reason}. Комментарий: {comment}. "
        "Прослушайте записи звонков и вынесите вердикт во вкладке «Проверка отказа».",
        'The manager moved the deal to "{stage}". Reason: {reason}. Comment: {comment}. '
        'Listen to the call recordings and record a verdict in the "Refusal review" tab.',
    ),
}


def unknown_author(language: str, who: str) -> str:
    """Who deleted a deal when the CRM gave no user we know."""
    key = "deleted_by_automation" if who == "automation" else "deleted_by_unknown"
    return TEMPLATES[key].in_language(language) + ("" if who in ("automation", "unknown") else f" #{who}")


def render(key: str, language: str, **values: str) -> str:
    """A message in the portal's language with the values filled in."""
    return TEMPLATES[key].in_language(language).format(stage=REFUSAL_STAGE.in_language(language), **values)
