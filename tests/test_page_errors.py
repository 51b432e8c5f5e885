"""The pages' JSON API answers every error with a code and a sentence in the page's language (X-RC-Lang,
else the portal's), and a 400 that names wrong fields with each field's code and sentence: no English on a
Russian page, no raw JSON for a page to show."""

from __future__ import annotations

import pytest
from flask import Flask

from tests.security.conftest import ADMIN, HEAD, MANAGER, headers, installed_portal


def ask(app: Flask, method: str, url: str, hdrs: dict[str, str], language: str | None, **kwargs: object):
    if language:
        hdrs = {**hdrs, "X-RC-Lang": language}
    return app.test_client().open(url, method=method, headers=hdrs, **kwargs)


@pytest.mark.parametrize(
    ("language", "expected"),
    [("ru", "Это может сделать только администратор портала."), ("en", "Only a portal administrator can do this.")],
)
def test_a_manager_opening_the_settings_gets_a_sentence_in_his_language(app: Flask, language: str, expected: str):
    portal = installed_portal()
    answer = ask(app, "GET", "/api/settings", headers(portal, MANAGER), language)
    body = answer.get_json()
    assert answer.status_code == 403
    assert body["code"] == "admin_only" and body["text"] == expected
    assert "only a portal administrator" in body["message"]  # the English message stays for API callers


def test_without_the_header_the_portal_language_is_used(app: Flask):
    portal = installed_portal(language="en")
    body = ask(app, "GET", "/api/settings", headers(portal, MANAGER), None).get_json()
    assert body["text"] == "Only a portal administrator can do this."


@pytest.mark.parametrize("language", ["ru", "en"])
def test_no_token_is_a_session_sentence(app: Flask, language: str):
    answer = ask(app, "GET", "/api/exchange/lots", {}, language)
    body = answer.get_json()
    assert answer.status_code == 401 and body["code"] == "session_expired"
    assert (
        body["text"]
        == {
            "ru": "Сеанс истёк: откройте приложение из CRM заново.",
            "en": "The session has expired: open the app from the CRM again.",
        }[language]
    )


def test_guard_settings_name_each_wrong_field_with_a_code_and_a_sentence(app: Flask):
    portal = installed_portal()
    answer = ask(
        app,
        "PUT",
        "/api/settings",
        headers(portal, ADMIN, admin=True),
        "ru",
        json={"review_sla_hours": 0, "reasons": ["nonsense"], "typo": 1},
    )
    body = answer.get_json()
    assert answer.status_code == 400 and body["code"] == "invalid_fields"
    assert body["text"] == "Проверьте отмеченные поля."
    fields = body["field_errors"]
    assert fields["review_sla_hours"] == {"code": "range", "text": "Допустимо от 1 до 720."}
    assert fields["reasons"]["code"] == "unknown_field"  # reasons are edited in their own section (/api/reasons)
    assert fields["typo"]["code"] == "unknown_field"


def test_exchange_settings_say_the_pool_user_is_missing_per_pipeline(app: Flask):
    portal = installed_portal()
    for language, sentence in (
        ("ru", "Выберите пользователя «Биржа лидов»: без него воронка не раздаёт сделки."),
        ("en", "Choose the pool user: without one the pipeline cannot route deals."),
    ):
        answer = ask(
            app,
            "PUT",
            "/api/exchange/settings",
            headers(portal, ADMIN, admin=True),
            language,
            json={"pipelines": {"0": {"mode": "exchange"}}},
        )
        assert answer.status_code == 400
        assert answer.get_json()["field_errors"] == {
            "pipelines.0.pool_user": {"code": "pool_user_required", "text": sentence}
        }
    cap = ask(
        app,
        "PUT",
        "/api/exchange/settings",
        headers(portal, ADMIN, admin=True),
        "ru",
        json={"pipelines": {"0": {"cap": 0}}},
    )
    assert cap.get_json()["field_errors"]["pipelines.0.cap"] == {"code": "range", "text": "Допустимо от 1 до 10000."}


def test_review_settings_and_report_periods_in_russian(app: Flask):
    portal = installed_portal()
    bad = ask(
        app, "PUT", "/api/review/settings", headers(portal, ADMIN, admin=True), "ru", json={"callback_attempts": 99}
    ).get_json()
    assert bad["field_errors"]["callback_attempts"]["text"] == "Допустимо от 1 до 10."
    period = ask(app, "GET", "/api/reports?from=2026-12-31&to=2026-12-01", headers(portal, HEAD), "ru")
    assert period.status_code == 400 and period.get_json()["code"] == "bad_period"
    assert period.get_json()["text"].startswith("Проверьте даты периода")
    appeal = ask(app, "POST", "/api/penalties/1/appeal", headers(portal, HEAD), "ru", json={"reason": " "})
    assert appeal.status_code == 400 and appeal.get_json()["text"] == "Укажите, почему штраф отменяется."


def test_an_unknown_message_still_gets_a_sentence_by_its_status(app: Flask):
    from app.web.errors import explain

    assert explain("something nobody wrote down", 409, "ru") == (
        "conflict",
        "Не выполнено: данные уже изменились. Обновите страницу.",
    )
    assert explain("the CRM did not answer: QUERY_LIMIT_EXCEEDED", 502, "ru")[1].startswith(
        "CRM не ответила (QUERY_LIMIT_EXCEEDED)"
    )
