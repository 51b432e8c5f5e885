"""The amoCRM adapter against the sandbox account: tokens, limits, errors, and every port method."""

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from app.core.db import db
from app.core.models import Portal
from app.crm.amocrm import AmoCrm
from app.crm.errors import AmoBlocked, AmoNotFound, AmoValidationError, PortalNeedsReinstall
from app.crm.port import DealChange, NewTask
from tests.integration.amo import MANAGER, QA, Amo, fill_refusal, new_lead

LOST = 143


def crm(amo: Amo) -> AmoCrm:
    return AmoCrm(amo.our_portal())


def test_two_workers_meeting_an_expired_token_refresh_once(amo_installed: Amo):
    amo = amo_installed
    lead_id = new_lead(amo)
    portal = amo.our_portal()
    old_refresh = portal.refresh_token
    amo.sandbox.expire_access_tokens(amo.account)
    amo.sandbox.token_delay = 0.3
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def work(name: str) -> None:
        with amo.app.app_context():
            try:
                barrier.wait(timeout=10)
                outcomes[name] = AmoCrm(db.session.get(Portal, portal.id)).get_deal(str(lead_id)).id
            except Exception as error:  # recorded and asserted below
                outcomes[name] = error
            finally:
                db.session.remove()

    threads = [threading.Thread(target=work, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert outcomes == {"a": str(lead_id), "b": str(lead_id)}
    assert amo.sandbox.refresh_log == [(old_refresh, 200)], "one refresh, with the stored token, never again"
    assert amo.sandbox.refresh_uses(old_refresh) == 1
    stored = amo.our_portal()
    assert stored.refresh_token != old_refresh and stored.status == "installed"
    # The new pair was used, so the old refresh token is dead now (amoCRM's rotation).
    status, _body = _refresh_directly(amo, old_refresh)
    assert status == 401


def _refresh_directly(amo: Amo, refresh_token: str) -> tuple[int, dict]:
    import requests

    response = requests.post(
        f"https://{amo.account.domain}/oauth2/access_token",
        json={
            "client_id": amo.account.client_id,
            "client_secret": amo.account.client_secret,
            "redirect_uri": amo.account.redirect_uri,
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
        },
        timeout=5,
    )
    return response.status_code, response.json()


def test_a_token_about_to_expire_is_refreshed_before_the_call(amo_installed: Amo):
    amo = amo_installed
    portal = amo.our_portal()
    portal.token_expires_at = datetime.now(UTC) + timedelta(minutes=1)
    db.session.commit()
    crm(amo).list_pipelines()
    assert [status for _token, status in amo.sandbox.refresh_log] == [200]
    assert amo.our_portal().token_expires_at > datetime.now(UTC) + timedelta(hours=23)


def test_a_revoked_refresh_token_marks_the_account_and_stops_calling(amo_installed: Amo):
    amo = amo_installed
    portal = amo.our_portal()
    dead = portal.refresh_token
    status, _ = _refresh_directly(amo, dead)  # someone else rotated it ...
    assert status == 200
    amo.sandbox.expire_access_tokens(amo.account)
    amo.sandbox.refresh_tokens[dead].state = "dead"  # ... and used the new pair
    with pytest.raises(PortalNeedsReinstall):
        crm(amo).list_pipelines()
    assert amo.our_portal().status == "needs_reinstall"
    calls, refreshes = len(amo.account.calls), len(amo.sandbox.refresh_log)
    with pytest.raises(PortalNeedsReinstall):
        crm(amo).list_pipelines()
    assert (len(amo.account.calls), len(amo.sandbox.refresh_log)) == (calls, refreshes), "no retries"
    assert amo.sandbox.refresh_log[-1] == (dead, 401)


def test_at_seven_requests_a_second_the_account_never_answers_429(amo_installed: Amo):
    amo = amo_installed
    amo.account.rate_limit = 7
    amo.app.config.update(AMO_RATE=7.0, AMO_BURST=7)
    client = crm(amo)
    for _ in range(16):
        client.list_departments()
    assert [c for c in amo.account.calls if c[2] == 429] == []


def test_a_429_is_backed_off_and_retried(amo_installed: Amo):
    amo = amo_installed
    amo.account.rate_limit = 3
    amo.app.config.update(AMO_RETRY_BASE_DELAY=0.3, AMO_RETRY_ATTEMPTS=6)
    client = crm(amo)
    for _ in range(8):
        client.list_departments()
    assert any(c[2] == 429 for c in amo.account.calls)
    assert sum(1 for c in amo.account.calls if c[2] == 200 and c[1] == "/api/v4/account") >= 8


def test_a_403_block_pauses_the_account_and_is_reported(amo_installed: Amo):
    amo = amo_installed
    amo.account.blocked = True
    with pytest.raises(AmoBlocked):
        crm(amo).list_pipelines()
    calls = len(amo.account.calls)
    with pytest.raises(AmoBlocked):
        crm(amo).list_pipelines()
    assert len(amo.account.calls) == calls, "not hammered"
    assert "403" in amo.our_portal().status_detail


def test_errors_empty_pages_and_missing_leads(amo_installed: Amo):
    amo = amo_installed
    client = crm(amo)
    with pytest.raises(AmoNotFound):
        client.get_deal("999999")
    assert list(client.iter_deals(modified_since=datetime.now(UTC) + timedelta(days=1))) == []
    lead_id = new_lead(amo)
    with pytest.raises(AmoValidationError) as caught:
        client.update_deal(str(lead_id), DealChange(stage_id="424242"))
    assert caught.value.errors[0]["path"] == "status_id"
    with pytest.raises(Exception, match="not installed"):
        client.update_deal(str(lead_id), DealChange(refusal_reason="no_such_reason"))


def test_lost_always_carries_the_pipeline(amo_installed: Amo):
    amo = amo_installed
    other = amo.pipelines()[1]
    lead_id = new_lead(amo, status="В работе", pipeline=other)
    crm(amo).update_deal(str(lead_id), DealChange(stage_id=str(LOST)))
    assert amo.sandbox.status_of(amo.account, lead_id) == (other, LOST)


def test_reading_and_writing_our_fields(amo_installed: Amo):
    amo = amo_installed
    lead_id = new_lead(amo)
    fill_refusal(amo, lead_id, MANAGER, "bought_elsewhere", "Купил у конкурента")
    client = crm(amo)
    deal = client.get_deal(str(lead_id))
    assert (deal.refusal_reason, deal.refusal_comment) == ("bought_elsewhere", "Купил у конкурента")
    assert deal.modified_by_id == str(MANAGER) and deal.amount == Decimal("150000")
    assert deal.stage_semantics == "process"
    client.update_deal(str(lead_id), DealChange(qa_verdict="confirmed", refusal_comment=""))
    deal = client.get_deal(str(lead_id))
    assert (deal.qa_verdict, deal.refusal_comment, deal.refusal_reason) == ("confirmed", "", "bought_elsewhere")
    assert list(client.get_deals([str(lead_id), "999999"])) == [str(lead_id)]
    assert client.deal_url(str(lead_id)) == f"https://{amo.account.domain}/leads/detail/{lead_id}"


def test_lead_values_and_the_field_list_with_labels(amo_installed: Amo):
    amo = amo_installed
    lead_id = new_lead(amo)
    fields = amo.our_portal().settings["amo_fields"]
    reason, comment = str(fields["refusal_reason"]["field"]), str(fields["refusal_comment"]["field"])
    fill_refusal(amo, lead_id, MANAGER, "bought_elsewhere", "Купил у конкурента")
    client = crm(amo)
    deal = client.get_deal(str(lead_id))
    assert deal.values["name"] == ("Поставка станков",) and deal.values["price"] == ("150000",)
    assert deal.values[comment] == ("Купил у конкурента",)
    assert deal.values[reason] == (str(fields["refusal_reason"]["enum"]["bought_elsewhere"]),), "a list item by id"
    assert str(fields["qa_verdict"]["field"]) not in deal.values

    listed = {field.code: field for field in client.list_deal_fields()}
    assert (listed["name"].label, listed["price"].label, listed["price"].kind) == ("Название сделки", "Бюджет", "money")
    assert listed[reason].kind == "enum" and listed[comment].kind == "string"
    assert listed[comment].label == amo.account.custom_fields[int(comment)]["name"]


def test_stage_history_people_tasks_and_calls(amo_installed: Amo):
    amo = amo_installed
    client = crm(amo)
    statuses = amo.statuses()
    lead_id = new_lead(amo, status="Переговоры")
    amo.sandbox.act(amo.account, MANAGER).move_lead(lead_id, statuses["Принимают решение"])
    amo.sandbox.act(amo.account, MANAGER).move_lead(lead_id, LOST)
    assert client.stage_before(str(lead_id), str(LOST)) == str(statuses["Принимают решение"])
    assert client.stage_before(str(lead_id), str(statuses["Принимают решение"])) == str(statuses["Переговоры"])
    users = {u.id: u for u in client.list_users()}
    assert users["7"].department_ids == ("2",) and users["1"].is_admin and not users["10"].active
    assert {d.name for d in client.list_departments()} >= {"Отдел контроля качества"}
    [main, _other] = client.list_pipelines()
    assert main.is_default and "Неразобранное" not in [s.name for s in main.stages]
    assert [s.semantics for s in main.stages][-2:] == ["success", "failure"]
    task_id = client.create_task(
        NewTask(title="Проверить", responsible_id=str(QA), deal_id=str(lead_id), deadline=datetime.now(UTC))
    )
    [task] = client.list_deal_tasks(str(lead_id))
    assert (task.id, task.responsible_id, task.is_open) == (task_id, str(QA), True)
    amo.sandbox.act(amo.account, MANAGER).make_call(lead_id, direction="in", duration=42)
    [call] = client.list_deal_calls(str(lead_id))
    assert (call.direction, call.duration_seconds, call.user_id) == ("in", 42, str(MANAGER))
    assert call.recording_url and call.recording_url.startswith(f"https://{amo.account.domain}/")
    client.notify(str(MANAGER), "Сообщение")
    assert [t["text"] for t in amo.sandbox.tasks_for(amo.account, user_id=MANAGER)] == ["Сообщение"]
