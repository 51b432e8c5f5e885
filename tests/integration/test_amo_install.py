"""Installing on an amoCRM account: OAuth, the installer's result, idempotent repair."""

import sqlalchemy as sa

from app.core.db import db
from app.core.models import Portal
from installers.amocrm import run_install
from tests.integration.amo import Amo


def test_install_creates_status_fields_and_webhook(amo: Amo):
    portal = amo.install()
    assert portal.domain == amo.account.domain
    assert portal.external_id == str(amo.account.id)
    stages = portal.settings["refusal_stages"]
    assert set(stages) == {str(pid) for pid in amo.account.pipelines}
    for pipeline_id, status_id in stages.items():
        status = amo.account.pipelines[int(pipeline_id)]["statuses"][int(status_id)]
        assert status["name"] == "Условный отказ"
        working = [
            s["sort"]
            for s in amo.account.pipelines[int(pipeline_id)]["statuses"].values()
            if (s["id"] < 142 or s["id"] > 143) and s["name"] != "Отложено"
        ]
        assert status["sort"] == max(working) and status["sort"] < 10000
        postponed = amo.account.pipelines[int(pipeline_id)]["statuses"][
            int(portal.settings["postpone_stages"][pipeline_id])
        ]
        assert postponed["name"] == "Отложено" and postponed["sort"] == status["sort"] + 10
    fields = portal.settings["amo_fields"]
    assert set(fields) == {
        "refusal_reason",
        "refusal_comment",
        "qa_verdict",
        "cpl",
        "postpone_reason",
        "postpone_date",
        "abc_need",
        "abc_budget",
        "abc_urgency",
        "abc_class",
    }
    types = {key: amo.account.custom_fields[spec["field"]]["type"] for key, spec in fields.items()}
    assert types == {
        "refusal_reason": "select",
        "refusal_comment": "textarea",
        "qa_verdict": "select",
        "cpl": "numeric",
        "postpone_reason": "select",
        "postpone_date": "date",
        "abc_need": "select",
        "abc_budget": "select",
        "abc_urgency": "select",
        "abc_class": "select",
    }
    assert len(fields["refusal_reason"]["enum"]) == 7
    assert set(fields["postpone_reason"]["enum"]) == {"no_money_now", "no_need_now", "not_relevant", "no_contact"}
    assert set(fields["abc_need"]["enum"]) == {"yes", "no"} and set(fields["abc_class"]["enum"]) == {"A", "B", "C"}
    [hook] = amo.account.webhooks.values()
    assert hook.destination.endswith("/amocrm/webhooks/" + portal.settings["amo_webhook_secret"])
    assert set(hook.settings) == {"add_lead", "update_lead", "status_lead", "responsible_lead", "delete_lead"}
    assert len(portal.settings["amo_dp_secret"]) >= 32  # the Digital Pipeline actions' secret


def test_rerunning_the_installer_creates_nothing(amo: Amo):
    portal = amo.install()
    before = (
        sum(len(p["statuses"]) for p in amo.account.pipelines.values()),
        len(amo.account.custom_fields),
        len(amo.account.webhooks),
    )
    posts = amo.sandbox.api_calls(amo.account, "POST")
    assert run_install(portal.id) == "installed"
    after = (
        sum(len(p["statuses"]) for p in amo.account.pipelines.values()),
        len(amo.account.custom_fields),
        len(amo.account.webhooks),
    )
    assert after == before
    assert amo.sandbox.api_calls(amo.account, "POST") == posts
    assert amo.our_portal().settings["amo_webhook_secret"] == portal.settings["amo_webhook_secret"]
    assert amo.our_portal().settings["amo_dp_secret"] == portal.settings["amo_dp_secret"]


def test_repair_adds_a_missing_option_and_reenables_the_webhook(amo: Amo):
    portal = amo.install()
    field_id = portal.settings["amo_fields"]["refusal_reason"]["field"]
    spec = amo.account.custom_fields[field_id]
    spec["enums"] = [e for e in spec["enums"] if e["value"] != "Дорого"]
    [hook] = amo.account.webhooks.values()
    hook.disabled = True
    run_install(portal.id)
    repaired = amo.our_portal().settings["amo_fields"]["refusal_reason"]["enum"]
    assert "price" in repaired and len(repaired) == 7
    assert not hook.disabled


def test_repair_subscribes_an_older_webhook_to_lead_deletions(amo: Amo):
    portal = amo.install()
    [hook] = amo.account.webhooks.values()
    hook.settings = [name for name in hook.settings if name != "delete_lead"]  # installed before issue #19
    run_install(portal.id)
    [hook] = amo.account.webhooks.values()
    assert "delete_lead" in hook.settings and not hook.disabled


def test_oauth_refuses_a_forged_state_a_foreign_host_and_a_bad_code(amo: Amo):
    code = amo.sandbox.authorization_code(amo.account)
    forged = amo.client.get(
        "/amocrm/oauth", query_string={"code": code, "state": "forged", "referer": amo.account.domain}
    )
    assert forged.status_code == 401
    foreign = amo.client.get(
        "/amocrm/oauth", query_string={"code": code, "state": amo.state(), "referer": "evil.example.com"}
    )
    assert foreign.status_code == 400 and "referer" in foreign.get_json()["message"]
    bad = amo.client.get(
        "/amocrm/oauth", query_string={"code": "nope", "state": amo.state(), "referer": amo.account.domain}
    )
    assert bad.status_code == 400 and bad.get_json()["message"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Portal)) == 0


def test_a_code_sent_after_a_widget_install_needs_no_state(amo: Amo):
    query = {"code": amo.sandbox.authorization_code(amo.account), "referer": amo.account.domain, "from_widget": "1"}
    assert amo.client.get("/amocrm/oauth", query_string=query).status_code == 200
    amo.work()
    assert amo.our_portal().status == "installed"


def test_install_takes_the_accounts_time_zone(amo: Amo):
    amo.account.timezone = "Asia/Yekaterinburg"
    portal = amo.install()
    assert portal.timezone == "Asia/Yekaterinburg"
    assert [step["step"] for step in portal.settings["install"]["steps"]] == [
        "account",
        "statuses",
        "postpone",
        "fields",
        "webhooks",
    ]
