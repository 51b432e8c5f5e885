"""The interface's formats for Russia (issue #20): dd.MM.yyyy dates, dd.MM.yyyy HH:mm moments, money with a sign."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from app.core import i18n

NBSP = "\u00a0"


def test_money_in_russian_groups_with_spaces_and_shows_the_rouble_sign() -> None:
    assert i18n.money(Decimal("1200000.00"), "RUB", "ru") == f"1{NBSP}200{NBSP}000{NBSP}₽"
    assert i18n.money(Decimal("1500.5"), "RUB", "ru") == f"1{NBSP}500,50{NBSP}₽"


def test_money_in_english_uses_the_english_grouping() -> None:
    assert i18n.money(1200000, "RUB", "en") == f"1,200,000{NBSP}₽"
    assert i18n.money(Decimal("99.90"), "USD", "en") == f"99.90{NBSP}$"


def test_money_shows_dollar_and_euro_signs_and_other_currencies_by_code() -> None:
    assert i18n.money(300, "usd", "ru") == f"300{NBSP}$"
    assert i18n.money(300, "EUR", "ru") == f"300{NBSP}€"
    assert i18n.money(1500, "KZT", "ru") == f"1{NBSP}500{NBSP}KZT"
    assert i18n.money(1500, "", "en") == "1,500"
    assert i18n.money(None, "RUB", "ru") == "—"


def test_moments_are_day_first_without_seconds_in_both_languages() -> None:
    moment = datetime(2026, 12, 8, 15, 48, 30, tzinfo=UTC)
    assert i18n.when(moment, "ru", "Europe/Moscow") == "08.12.2026 18:48"
    assert i18n.when(moment, "en", "Europe/Moscow") == "08.12.2026 18:48"
    assert i18n.when(None, "ru", "Europe/Moscow") == "—"


def test_days_are_day_first_in_the_portals_time_zone() -> None:
    assert i18n.day(date(2026, 12, 1), "ru") == "01.12.2026"
    assert i18n.day(date(2026, 12, 1), "en") == "01.12.2026"
    late = datetime(2026, 12, 7, 22, 30, tzinfo=UTC)
    assert i18n.day(late, "ru", "Europe/Moscow") == "08.12.2026"
    assert i18n.day(None, "en") == "—"
