"""What the app adds to a CRM, named in Russian and English: the stage, the reasons, the verdicts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Label:
    """A bilingual label."""

    ru: str
    en: str

    def in_language(self, language: str) -> str:
        """The label in the portal's language (Russian unless English is asked for)."""
        return self.en if language == "en" else self.ru


REFUSAL_STAGE = Label("Условный отказ", "Conditional refusal")
REFUSAL_STAGE_CODE = "RC_REFUSAL"
REFUSAL_STAGE_COLOR = "#FFA900"

REASONS: dict[str, Label] = {
    "not_interested": Label("Клиент не хочет", "Client does not want it"),
    "price": Label("Дорого", "Price too high"),
    "bought_elsewhere": Label("Купил в другом месте", "Bought elsewhere"),
    "unavailable": Label("Товар недоступен", "Product unavailable"),
    "no_budget": Label("Нет бюджета", "No budget"),
    "not_relevant": Label("Неактуально", "No longer relevant"),
    "other": Label("Другое", "Other"),
}

VERDICTS: dict[str, Label] = {
    "confirmed": Label("Отказ подтверждён", "Refusal confirmed"),
    "not_confirmed": Label("Отказ не подтверждён", "Refusal not confirmed"),
    "leaked": Label("Утечка: возвращено в продажи", "Leak: returned to sales"),
    "win_back": Label("Предложено повторно", "Offered again"),
    "unreachable": Label("Клиент недоступен", "Client unreachable"),
}

FIELD_LABELS: dict[str, Label] = {
    "refusal_reason": Label("Причина отказа", "Refusal reason"),
    "refusal_comment": Label("Комментарий к отказу", "Refusal comment"),
    "qa_verdict": Label("Вердикт ОКК", "QA verdict"),
    "cpl": Label("Стоимость лида (CPL)", "Lead cost (CPL)"),
    "postpone_reason": Label("Причина переноса", "Postpone reason"),
    "postpone_date": Label("Дата возврата к сделке", "Return date"),
    "abc_need": Label("Потребность", "Need"),
    "abc_budget": Label("Бюджет", "Budget"),
    "abc_urgency": Label("Срочность", "Urgency"),
    "abc_class": Label("Класс ABC", "ABC class"),
}

# ABC qualification (article 001): the three yes/no answers the manager records at first contact, and the class.
ABC_ANSWERS: dict[str, Label] = {"yes": Label("Да", "Yes"), "no": Label("Нет", "No")}
ABC_CLASSES: dict[str, Label] = {"A": Label("A", "A"), "B": Label("B", "B"), "C": Label("C", "C")}

DEAL_TAB = Label("Проверка отказа", "Refusal review")

POSTPONE_STAGE = Label("Отложено", "Postponed")
POSTPONE_STAGE_CODE = "RC_POSTPONED"
POSTPONE_STAGE_COLOR = "#A7B4C2"

POSTPONE_REASONS: dict[str, Label] = {
    "no_money_now": Label("Нет денег сейчас", "No money now"),
    "no_need_now": Label("Нет потребности сейчас", "No need now"),
    "not_relevant": Label("Неактуально", "Not relevant"),
    "no_contact": Label("Нет связи", "No contact"),
}
