"""CPL settings and scheduled reports against the Bitrix24 sandbox. Fines, appeals and their notices on both CRMs
are in tests/scenarios/test_penalties.py."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from app.core.db import db
from app.core.models import RefusalCase, ReportDelivery
from app.core.queue import enqueue
from app.core.security import Identity, issue_token
from app.crm.port import Deal
from app.domain import ledger, penalties, reports
from tests.integration.b24 import B24, configure_guard

MANAGER, QA, HEAD, SECOND_HEAD, ADMIN = 2, 7, 9, 11, 1


def token(b24: B24, user_id: int, admin: bool = False) -> dict[str, str]:
    return {"X-RC-Token": issue_token(Identity(b24.our_portal().id, str(user_id), is_admin=admin))}


def messages(b24: B24, user_id: int) -> list[str]:
    return [
        notice.message.replace("\xa0", " ").replace("\u202f", " ")
        for notice in b24.sandbox.notifications(b24.portal, user_id)
    ]


def leaked_case(b24: B24, deal_id: str = "501", opened: datetime | None = None) -> RefusalCase:
    portal = b24.our_portal()
    case = RefusalCase(
        portal_id=portal.id,
        deal_id=deal_id,
        deal_title="Поставка станков",
        pipeline_id="0",
        manager_id=str(MANAGER),
        reason="price",
        source_id="WEB",
        state=RefusalCase.LEAKED,
        **({"opened_at": opened} if opened else {}),
    )
    db.session.add(case)
    db.session.commit()
    return case


def deal_of(case: RefusalCase) -> Deal:
    return Deal(
        id=case.deal_id,
        title=case.deal_title,
        pipeline_id="0",
        stage_id="NEW",
        stage_semantics="process",
        responsible_id=case.manager_id,
        modified_by_id=None,
        modified_at=None,
        source_id="WEB",
    )


@pytest.fixture
def guarded(installed: B24) -> B24:
    portal = installed.our_portal()
    configure_guard(portal, heads=[str(HEAD), str(SECOND_HEAD)])
    penalties.update_cpl_settings(portal, {"currency": "RUB", "default": "700", "by_source": {"WEB": "1500"}})
    db.session.commit()
    return installed


def test_cpl_settings_offer_the_portals_sources_and_pipelines_and_refuse_bad_input(guarded: B24):
    admin = token(guarded, ADMIN, admin=True)
    body = guarded.client.get("/api/settings/cpl", headers=admin).get_json()
    assert {"id": "WEB", "name": "Веб-сайт"} in body["sources"]
    assert {"id": "0", "name": "Общая"} in [{"id": p["id"], "name": p["name"]} for p in body["pipelines"]]
    assert body["settings"]["by_source"] == {"WEB": "1500.00"}

    unknown = guarded.client.put("/api/settings/cpl", json={"by_source": {"NOPE": "10"}}, headers=admin)
    assert unknown.status_code == 400
    assert unknown.get_json()["fields"] == {"by_source": {"NOPE": ["no such lead source on the portal"]}}
    not_amount = guarded.client.put("/api/settings/cpl", json={"by_pipeline": {"1": "дорого"}}, headers=admin)
    assert not_amount.status_code == 400 and "by_pipeline" in not_amount.get_json()["fields"]
    currency = guarded.client.put("/api/settings/cpl", json={"currency": "рубли"}, headers=admin)
    assert currency.status_code == 400 and "currency" in currency.get_json()["fields"]

    saved = guarded.client.put(
        "/api/settings/cpl",
        json={"currency": "usd", "default": "10", "by_source": {"CALL": "25,5"}, "by_pipeline": {"1": "30"}},
        headers=admin,
    )
    assert saved.status_code == 200, saved.get_json()
    assert saved.get_json()["settings"] == {
        "currency": "USD",
        "default": "10.00",
        "by_source": {"CALL": "25.50"},
        "by_pipeline": {"1": "30.00"},
    }
    assert guarded.client.get("/api/settings/cpl", headers=token(guarded, HEAD)).status_code == 403


def test_report_schedule_settings_are_validated(guarded: B24):
    admin = token(guarded, ADMIN, admin=True)
    assert guarded.client.get("/api/settings/reports", headers=admin).get_json()["settings"]["weekly"] == {
        "enabled": True,
        "weekday": 1,
        "day": 1,
        "hour": 9,
    }
    bad = guarded.client.put("/api/settings/reports", json={"weekly": {"hour": 24}}, headers=admin)
    assert bad.status_code == 400 and bad.get_json()["fields"] == {"weekly": {"hour": ["0 to 23"]}}
    typo = guarded.client.put("/api/settings/reports", json={"weekley": {}}, headers=admin)
    assert typo.status_code == 400 and "weekley" in typo.get_json()["fields"]
    ok = guarded.client.put("/api/settings/reports", json={"monthly": {"enabled": False, "day": 5}}, headers=admin)
    assert ok.get_json()["settings"]["monthly"] == {"enabled": False, "weekday": 1, "day": 5, "hour": 9}
    assert ok.get_json()["settings"]["weekly"]["enabled"] is True


@pytest.fixture
def scheduled(guarded: B24) -> B24:
    portal = guarded.our_portal()
    reports.update_report_schedule(
        portal, {"weekly": {"enabled": True, "weekday": 1, "hour": 9}, "monthly": {"enabled": False}}
    )
    portal.installed_at = datetime(2026, 1, 1, tzinfo=UTC)
    db.session.commit()
    # one leak in the week of 16-22 November (Moscow), fined 1500
    case = leaked_case(guarded, opened=datetime(2026, 11, 18, 9, 0, tzinfo=UTC))
    fine = penalties.issue_penalty(portal, case, deal_of(case), created_by=str(QA))
    fine.created_at = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)
    db.session.commit()
    ledger.sweep_notices()
    return guarded


def test_the_weekly_report_run_twice_notifies_each_head_once(scheduled: B24):
    before_the_hour = datetime(2026, 11, 23, 5, 59, tzinfo=UTC)  # Monday 08:59 in Moscow
    assert reports.send_scheduled_reports(before_the_hour) == 0
    monday = datetime(2026, 11, 23, 6, 30, tzinfo=UTC)  # Monday 09:30 in Moscow
    assert reports.send_scheduled_reports(monday) == 2
    assert reports.send_scheduled_reports(monday) == 0
    enqueue("default", "app.domain.reports.send_scheduled_reports", monday)
    enqueue("default", "app.domain.reports.send_scheduled_reports", monday)
    scheduled.work()
    for head in (HEAD, SECOND_HEAD):
        [summary] = messages(scheduled, head)
        assert "Еженедельный отчёт" in summary and "за 16.11.2026 – 22.11.2026" in summary
        assert "утечек — 1" in summary and "1 500 ₽" in summary
        assert f"https://{scheduled.portal.domain}/marketplace/app/17/" in summary  # app.info ID of the app
    keys = db.session.scalars(sa.select(ReportDelivery.period_key).distinct()).all()
    assert keys == ["weekly:2026-W47"]


def test_two_workers_at_once_send_one_report_per_head(scheduled: B24):
    app = scheduled.app
    monday = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
    barrier = threading.Barrier(2)
    results: list[int] = []

    def worker() -> None:
        with app.app_context():
            barrier.wait()
            results.append(reports.send_scheduled_reports(monday))
            db.session.remove()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == [0, 2] or sum(results) == 2
    for head in (HEAD, SECOND_HEAD):
        assert len(messages(scheduled, head)) == 1
    db.session.expire_all()
    rows = db.session.scalars(sa.select(ReportDelivery)).all()
    assert sorted((row.period_key, row.head_id, row.status) for row in rows) == [
        ("weekly:2026-W48", str(SECOND_HEAD), "sent"),
        ("weekly:2026-W48", str(HEAD), "sent"),
    ]


def test_a_failed_send_is_retried_by_the_next_run_and_then_never_again(scheduled: B24):
    scheduled.app.config["B24_RETRY_ATTEMPTS"] = 1
    scheduled.sandbox.force_operation_limit(scheduled.portal, "im.notify.system.add", times=-1)
    monday = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
    assert reports.send_scheduled_reports(monday) == 0
    assert {row.status for row in db.session.scalars(sa.select(ReportDelivery))} == {"failed"}
    scheduled.sandbox.force_operation_limit(scheduled.portal, "im.notify.system.add", times=0)
    assert reports.send_scheduled_reports(monday) == 2
    assert reports.send_scheduled_reports(monday) == 0
    for head in (HEAD, SECOND_HEAD):
        assert len(messages(scheduled, head)) == 1
