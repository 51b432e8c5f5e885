"""Reports on a fixed data set: every figure against a hand-computed expectation, in JSON, on the page and in CSV.

The portal is in Europe/Moscow (UTC+3). November 2026 in Moscow runs from 2026-10-31 21:00 UTC to
2026-11-30 21:00 UTC, so case 5 (23:30 UTC on 31 October) counts in November and case 4 (21:30 UTC on
30 November) does not.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa

from app.core.db import db
from app.core.models import AuditEntry, CaseEvent, Penalty, RefusalCase
from app.core.security import Identity, issue_token
from app.domain import penalties, reports, requirements
from app.domain.settings import update_guard_settings
from tests.helpers import make_portal

HEAD, MANAGER_A, MANAGER_B = "9", "2", "3"
NAMES = reports.Names(
    users={"2": "Иван Петров", "3": "Мария Сидорова", "9": "Ольга Руководитель"},
    sources={"WEB": "Веб-сайт", "CALL": "Звонок", "EMAIL": "Электронная почта"},
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def add_case(portal, number, manager, reason, source, opened, steps=(), state=None):
    case = RefusalCase(
        portal_id=portal.id,
        deal_id=str(100 + number),
        deal_title=f"Сделка {number}",
        pipeline_id="0",
        manager_id=manager,
        reason=reason,
        source_id=source,
        state=state or (steps[-1][1] if steps else RefusalCase.AWAITING_REVIEW),
        opened_at=at(opened),
    )
    db.session.add(case)
    db.session.flush()
    db.session.add(
        CaseEvent(
            portal_id=portal.id,
            case_id=case.id,
            actor=manager,
            action="opened",
            state_after="awaiting_review",
            created_at=at(opened),
        )
    )
    for moment, state_after in steps:
        db.session.add(
            CaseEvent(
                portal_id=portal.id,
                case_id=case.id,
                actor="7",
                action=state_after,
                state_after=state_after,
                created_at=at(moment),
            )
        )
    return case


def add_fine(portal, case, amount, created, reversed_at=None):
    fine = Penalty(
        portal_id=portal.id,
        manager_id=case.manager_id,
        case_id=case.id,
        deal_id=case.deal_id,
        kind=Penalty.PENALTY,
        amount=Decimal(amount),
        currency="RUB",
        rule="portal_default",
        reason="leaked client",
        created_by="7",
        created_at=at(created),
    )
    db.session.add(fine)
    db.session.flush()
    if reversed_at:
        db.session.add(
            Penalty(
                portal_id=portal.id,
                manager_id=case.manager_id,
                case_id=case.id,
                deal_id=case.deal_id,
                kind=Penalty.REVERSAL,
                amount=-Decimal(amount),
                currency="RUB",
                rule="portal_default",
                reverses_id=fine.id,
                reason="ошибка ОКК",
                created_by=HEAD,
                created_at=at(reversed_at),
            )
        )
    return fine


@pytest.fixture
def portal(app, monkeypatch):
    row = make_portal("member-r", timezone="Europe/Moscow", language="ru", status="installed")
    update_guard_settings(row, {"heads": [HEAD], "qa_users": ["7"]})
    penalties.update_cpl_settings(row, {"currency": "RUB", "default": "1000"})
    confirmed, callback, leaked = RefusalCase.CONFIRMED, RefusalCase.CALLBACK_SCHEDULED, RefusalCase.LEAKED
    # November (Moscow)
    add_case(
        row,
        1,
        MANAGER_A,
        "price",
        "WEB",
        "2026-11-02T10:00",
        [("2026-11-02T14:00", confirmed), ("2026-11-03T09:00", "closed_lost")],
    )
    c2 = add_case(
        row,
        2,
        MANAGER_A,
        "price",
        "CALL",
        "2026-11-03T09:00",
        [("2026-11-03T11:00", callback), ("2026-11-04T09:00", leaked)],
    )
    add_fine(row, c2, "1000", "2026-11-04T12:00")
    add_case(row, 3, MANAGER_B, "no_budget", "WEB", "2026-11-10T08:00", [("2026-11-10T14:00", confirmed)])
    c4 = add_case(row, 4, MANAGER_B, "price", "WEB", "2026-11-30T21:30", [("2026-11-30T21:45", leaked)])
    add_fine(row, c4, "500", "2026-11-30T22:00")
    add_case(row, 5, MANAGER_B, "price", "", "2026-10-31T23:30", [("2026-11-01T03:30", confirmed)])
    add_case(row, 6, MANAGER_A, "other", "WEB", "2026-11-20T10:00")
    c7 = add_case(row, 7, MANAGER_B, "price", "CALL", "2026-11-12T10:00", [("2026-11-13T10:00", leaked)])
    add_fine(row, c7, "2000", "2026-11-13T10:00", reversed_at="2026-12-02T10:00")
    add_case(row, 8, MANAGER_A, "price", "EMAIL", "2026-11-05T10:00", [("2026-11-05T11:00", "withdrawn")])
    # October 2-31 (the period before November, for the analytics)
    add_case(row, 9, MANAGER_A, "no_budget", "WEB", "2026-10-15T10:00", [("2026-10-15T12:00", confirmed)])
    add_case(row, 10, MANAGER_A, "price", "WEB", "2026-10-20T10:00", [("2026-10-20T12:00", confirmed)])
    add_case(row, 11, MANAGER_B, "no_budget", "WEB", "2026-10-21T10:00", [("2026-10-21T12:00", confirmed)])
    # moves refused for missing fields: the robot's (22:00 UTC on 31 Oct is 1 Nov in Moscow) counts for the
    # deal's manager; 21:30 UTC on 30 Nov is December
    for moment, actor in (
        ("2026-10-31T22:00", "automation"),
        ("2026-11-15T10:00", MANAGER_A),
        ("2026-11-30T21:30", MANAGER_A),
    ):
        db.session.add(
            AuditEntry(
                portal_id=row.id,
                deal_id="150",
                actor=actor,
                attempted=requirements.ATTEMPTED,
                outcome=requirements.OUTCOME,
                reason="required fields are not filled in",
                details={"manager_id": MANAGER_A, "stage_id": "C0:EXECUTING", "missing": ["OPPORTUNITY"]},
                created_at=at(moment),
            )
        )
    db.session.commit()
    monkeypatch.setattr(reports, "lookup_names", lambda portal: NAMES)
    return row


def headers(portal, user_id=HEAD, admin=False):
    return {"X-RC-Token": issue_token(Identity(portal_id=portal.id, user_id=user_id, is_admin=admin))}


NOVEMBER = "?from=2026-11-01&to=2026-11-30"


def test_every_figure_of_the_period_matches_the_hand_count(client, portal):
    response = client.get(f"/api/reports{NOVEMBER}", headers=headers(portal))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["period"] == {"from": "2026-11-01", "to": "2026-11-30", "timezone": "Europe/Moscow"}
    by_manager = {row["manager_id"]: row for row in body["managers"]}
    assert by_manager["2"] == {
        "manager_id": "2",
        "name": "Иван Петров",
        "cases": 4,
        "confirmed": 1,
        "leaks": 1,
        "leak_rate": "50.0",
        "penalties": {"RUB": "1000.00"},
        "turnaround_hours": "3.0",
        "deletions": 0,
        "missing_fields": 2,
    }
    assert by_manager["3"] == {
        "manager_id": "3",
        "name": "Мария Сидорова",
        "cases": 3,  # case 5 (23:30 UTC on 31 Oct) is 1 Nov in Moscow; case 4 (21:30 UTC on 30 Nov) is December
        "confirmed": 2,
        "leaks": 1,
        "leak_rate": "33.3",
        "penalties": {"RUB": "0.00"},  # the 2000 fine was cancelled (in December: it still leaves November)
        "turnaround_hours": "11.3",  # (6 + 4 + 24) / 3
        "deletions": 0,
        "missing_fields": 0,
    }
    assert body["totals"] == {
        "cases": 7,
        "confirmed": 3,
        "leaks": 2,
        "leak_rate": "40.0",
        "penalties": {"RUB": "1000.00"},
        "turnaround_hours": "8.0",  # (4 + 2 + 6 + 4 + 24) / 5
        "deletions": 0,
        "missing_fields": 2,
    }
    assert [
        (r["reason"], r["claimed"], r["confirmed"], r["confirm_rate"], r["share_of_confirmed"]) for r in body["reasons"]
    ] == [
        ("price", 5, 2, "40.0", "66.7"),
        ("no_budget", 1, 1, "100.0", "33.3"),
        ("other", 1, 0, "0.0", "0.0"),
    ]
    assert [(r["name"], r["cases"], r["confirmed"], r["leaks"], r["leak_rate"]) for r in body["sources"]] == [
        ("Веб-сайт", 3, 2, 0, "0.0"),
        ("Звонок", 2, 0, 2, "100.0"),
        ("Без источника", 1, 1, 0, "0.0"),
        ("Электронная почта", 1, 0, 0, None),
    ]
    assert [(w["week"], w["cases"], w["confirmed"], w["leaks"], w["penalties"]["RUB"]) for w in body["weeks"]] == [
        ("2026-11-01", 1, 1, 0, "0.00"),
        ("2026-11-02", 3, 1, 1, "1000.00"),
        ("2026-11-09", 2, 1, 1, "0.00"),
        ("2026-11-16", 1, 0, 0, "0.00"),
        ("2026-11-23", 0, 0, 0, "0.00"),
        ("2026-11-30", 0, 0, 0, "0.00"),
    ]
    analytics = body["analytics"]
    assert analytics["previous"] == {"from": "2026-10-02", "to": "2026-10-31", "timezone": "Europe/Moscow"}
    assert [
        (r["reason"], r["confirmed"], r["share"], r["confirmed_before"], r["share_before"], r["change_pp"])
        for r in analytics["rows"]
    ] == [
        ("price", 2, "66.7", 1, "33.3", "33.4"),
        ("no_budget", 1, "33.3", 2, "66.7", "-33.4"),
    ]
    assert analytics["headline"] == "66,7 % подтверждённых отказов — по причине «Дорого»."


def test_the_day_boundary_follows_the_portal_time_zone(client, portal):
    first_day = client.get("/api/reports?from=2026-11-01&to=2026-11-01", headers=headers(portal)).get_json()
    assert first_day["totals"]["cases"] == 1  # case 5 only
    december = client.get("/api/reports?from=2026-12-01&to=2026-12-01", headers=headers(portal)).get_json()
    assert december["totals"]["cases"] == 1 and december["totals"]["leaks"] == 1
    assert december["totals"]["penalties"] == {"RUB": "500.00"}
    portal.timezone = "UTC"
    db.session.commit()
    utc_first = client.get("/api/reports?from=2026-11-01&to=2026-11-01", headers=headers(portal)).get_json()
    assert utc_first["totals"]["cases"] == 0


def read_csv(response, delimiter):
    raw = response.get_data()
    assert raw.startswith(b"\xef\xbb\xbf"), "Excel needs the UTF-8 BOM"
    return list(csv.reader(io.StringIO(raw.decode("utf-8-sig")), delimiter=delimiter))


def test_csv_is_excel_ready_with_cyrillic_and_the_same_figures(client, portal):
    response = client.get(f"/api/reports/managers.csv{NOVEMBER}", headers=headers(portal))
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert 'filename="refusal-control-managers-2026-11-01-2026-11-30.csv"' in response.headers["Content-Disposition"]
    assert b";" in response.get_data()
    rows = read_csv(response, ";")
    assert rows == [
        [
            "Менеджер",
            "Отказов на проверке",
            "Подтверждено",
            "Утечки",
            "Доля утечек, %",
            "Штрафы, ₽",
            "Проверка ОКК, ч",
            "Удалено сделок",
            "Отклонено переходов: не заполнены поля",
        ],
        ["Иван Петров", "4", "1", "1", "50,0", "1000,00", "3,0", "0", "2"],
        ["Мария Сидорова", "3", "2", "1", "33,3", "0,00", "11,3", "0", "0"],
        ["Итого", "7", "3", "2", "40,0", "1000,00", "8,0", "0", "2"],
    ]
    reasons = read_csv(client.get(f"/api/reports/reasons.csv{NOVEMBER}", headers=headers(portal)), ";")
    assert reasons[1] == ["Дорого", "5", "2", "40,0", "66,7"]
    weeks = read_csv(client.get(f"/api/reports/weeks.csv{NOVEMBER}", headers=headers(portal)), ";")
    assert weeks[2] == ["02.11.2026", "3", "1", "1", "50,0", "1000,00"]
    analytics = read_csv(client.get(f"/api/reports/analytics.csv{NOVEMBER}", headers=headers(portal)), ";")
    assert analytics[1] == ["Дорого", "2", "66,7", "1", "33,3", "33,4"]
    ledger = read_csv(client.get(f"/api/reports/ledger.csv{NOVEMBER}", headers=headers(portal)), ";")
    assert ledger[1:] == [
        [
            "13.11.2026 13:00",
            "Мария Сидорова",
            "Сделка 7 (#107)",
            "Штраф",
            "2000,00",
            "RUB",
            "CPL портала по умолчанию",
        ],
        ["02.12.2026 13:00", "Мария Сидорова", "Сделка 7 (#107)", "Отмена штрафа", "-2000,00", "RUB", "ошибка ОКК"],
        ["04.11.2026 15:00", "Иван Петров", "Сделка 2 (#102)", "Штраф", "1000,00", "RUB", "CPL портала по умолчанию"],
    ]
    sources = read_csv(client.get(f"/api/reports/sources.csv{NOVEMBER}", headers=headers(portal)), ";")
    assert sources[-1] == ["Электронная почта", "1", "0", "0", ""]


def test_english_csv_uses_commas_and_decimal_points(client, portal):
    portal.language = "en"
    db.session.commit()
    rows = read_csv(client.get(f"/api/reports/managers.csv{NOVEMBER}", headers=headers(portal)), ",")
    assert rows[0][:2] == ["Manager", "Refusals reviewed"]
    assert rows[0][-1] == "Moves refused: fields missing"
    assert rows[1] == ["Иван Петров", "4", "1", "1", "50.0", "1000.00", "3.0", "0", "2"]


def test_the_page_fragment_shows_the_same_figures_and_the_charts(client, portal):
    response = client.get(f"/api/reports/view{NOVEMBER}", headers=headers(portal))
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert html.count("<svg") == 3
    assert 'data-chart="line"' in html and 'data-chart="bar"' in html
    assert "66,7 % подтверждённых отказов" in html
    assert '<td>Иван Петров</td><td class="rc-num">4</td>' in html
    assert '<td class="rc-num">11,3</td>' in html
    assert html.count('data-appeal="') == 1  # the cancelled fine offers no second cancellation


def test_non_heads_are_refused_and_bad_input_is_a_clear_400(client, portal):
    for path in ("/api/reports", "/api/reports/view", "/api/reports/managers.csv", "/api/reports/ledger"):
        refused = client.get(path, headers=headers(portal, user_id=MANAGER_A))
        assert refused.status_code == 403, path
        assert "heads of sales" in refused.get_json()["message"]
        assert client.get(path).status_code == 401
        # a portal administrator sees the reports too
        assert client.get(path, headers=headers(portal, user_id=MANAGER_A, admin=True)).status_code == 200, path
    bad = client.get("/api/reports?from=2026-13-01", headers=headers(portal))
    assert bad.status_code == 400 and "2026-11-30" in bad.get_json()["message"]
    backwards = client.get("/api/reports?from=2026-11-30&to=2026-11-01", headers=headers(portal))
    assert backwards.status_code == 400 and "after" in backwards.get_json()["message"]
    unknown = client.get("/api/reports/salaries.csv", headers=headers(portal))
    assert unknown.status_code == 404 and "managers" in unknown.get_json()["message"]
    appeal = client.post("/api/penalties/1/appeal", json={"reason": "x"}, headers=headers(portal, MANAGER_A))
    assert appeal.status_code == 403


def test_another_portal_sees_nothing_of_this_one(client, portal):
    other = make_portal("member-other", timezone="Europe/Moscow", status="installed")
    update_guard_settings(other, {"heads": [HEAD]})
    db.session.commit()
    body = client.get(f"/api/reports{NOVEMBER}", headers=headers(other)).get_json()
    assert body["managers"] == [] and body["totals"]["cases"] == 0
    assert client.get(f"/api/reports/ledger{NOVEMBER}", headers=headers(other)).get_json()["rows"] == []
    fine = db.session.scalar(sa.select(Penalty).where(Penalty.portal_id == portal.id, Penalty.deal_id == "102"))
    response = client.post(f"/api/penalties/{fine.id}/appeal", json={"reason": "чужой"}, headers=headers(other))
    assert response.status_code == 404
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Penalty).where(Penalty.reverses_id == fine.id)) == 0


def test_appeal_needs_a_reason_and_happens_once(client, portal):
    fine = db.session.scalar(sa.select(Penalty).where(Penalty.portal_id == portal.id, Penalty.deal_id == "102"))
    missing = client.post(f"/api/penalties/{fine.id}/appeal", json={"reason": "  "}, headers=headers(portal))
    assert missing.status_code == 400 and "reason" in missing.get_json()["message"]
    not_json = client.post(f"/api/penalties/{fine.id}/appeal", data="x", headers=headers(portal))
    assert not_json.status_code == 400
    done = client.post(f"/api/penalties/{fine.id}/appeal", json={"reason": "Клиент вернулся"}, headers=headers(portal))
    assert done.status_code == 201
    again = client.post(f"/api/penalties/{fine.id}/appeal", json={"reason": "ещё раз"}, headers=headers(portal))
    assert again.status_code == 409 and "already" in again.get_json()["message"]
    body = client.get(f"/api/reports{NOVEMBER}", headers=headers(portal)).get_json()
    assert body["totals"]["penalties"] == {"RUB": "0.00"}
    rows = db.session.scalars(sa.select(Penalty).where(Penalty.deal_id == "102").order_by(Penalty.id)).all()
    assert [(r.kind, r.amount) for r in rows] == [("penalty", Decimal("1000.00")), ("reversal", Decimal("-1000.00"))]
    missing_row = client.post("/api/penalties/999999/appeal", json={"reason": "x"}, headers=headers(portal))
    assert missing_row.status_code == 404
