"""The amoCRM sandbox account speaks the documented formats (reference/amocrm.md)."""

from collections.abc import Iterator
from urllib.parse import parse_qsl

import jwt
import pytest
import requests

from sandbox.amocrm import AmoSandbox, responses_amo


@pytest.fixture
def sandbox() -> Iterator[AmoSandbox]:
    amo = AmoSandbox(transport=lambda url, body: 200)
    amo.seed_account(subdomain="acme", account_id=777)
    with responses_amo(amo):
        yield amo


def api(sandbox: AmoSandbox, method: str, path: str, token: str, **kwargs) -> requests.Response:
    return requests.request(
        method, f"https://acme.amocrm.ru{path}", headers={"Authorization": f"Bearer {token}"}, timeout=5, **kwargs
    )


def token_request(sandbox: AmoSandbox, **body) -> requests.Response:
    account = sandbox.account("acme")
    payload = {
        "client_id": account.client_id,
        "client_secret": account.client_secret,
        "redirect_uri": account.redirect_uri,
        **body,
    }
    return requests.post("https://acme.amocrm.ru/oauth2/access_token", json=payload, timeout=5)


def test_code_exchange_gives_a_jwt_with_the_account_and_rotating_refresh_tokens(sandbox: AmoSandbox):
    code = sandbox.authorization_code("acme")
    first = token_request(sandbox, grant_type="authorization_code", code=code).json()
    assert first["token_type"] == "Bearer" and first["expires_in"] == 86400
    assert jwt.decode(first["access_token"], options={"verify_signature": False})["account_id"] == 777
    assert token_request(sandbox, grant_type="authorization_code", code=code).status_code == 400, "codes work once"
    second = token_request(sandbox, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert second.status_code == 200
    # Grace: the old refresh token still works until the new pair is used ...
    third = token_request(sandbox, grant_type="refresh_token", refresh_token=first["refresh_token"]).json()
    assert api(sandbox, "GET", "/api/v4/account", third["access_token"]).status_code == 200
    # ... after that it is revoked.
    dead = token_request(sandbox, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert dead.status_code == 401 and dead.json()["hint"] == "Token has been revoked"
    # and the unused second pair died when the third replaced it
    stale = token_request(sandbox, grant_type="refresh_token", refresh_token=second.json()["refresh_token"])
    assert stale.status_code == 401


def test_hal_bodies_empty_pages_and_problem_errors(sandbox: AmoSandbox):
    token = sandbox.issue_tokens("acme")["access_token"]
    pipelines = api(sandbox, "GET", "/api/v4/leads/pipelines", token)
    assert pipelines.headers["Content-Type"].startswith("application/hal+json")
    body = pipelines.json()
    statuses = body["_embedded"]["pipelines"][0]["_embedded"]["statuses"]
    assert [s["id"] for s in statuses][-2:] == [142, 143] and statuses[0]["type"] == 1
    assert "_links" in body
    empty = api(sandbox, "GET", "/api/v4/leads", token)
    assert empty.status_code == 204 and empty.content == b""
    bad = api(sandbox, "POST", "/api/v4/leads", token, json=[{"name": "x", "status_id": 1}])
    assert bad.status_code == 400 and bad.headers["Content-Type"].startswith("application/problem+json")
    problem = bad.json()
    assert problem["title"] == "Bad Request" and problem["detail"] == "Request validation failed"
    assert problem["validation-errors"][0]["errors"][0]["path"] == "0.status_id"
    assert api(sandbox, "GET", "/api/v4/account", "nope").status_code == 401


def test_lost_without_pipeline_goes_to_the_main_pipeline(sandbox: AmoSandbox):
    account = sandbox.account("acme")
    token = sandbox.issue_tokens(account)["access_token"]
    main, other = sorted(account.pipelines, key=lambda p: account.pipelines[p]["sort"])
    lead_id = sandbox.act(account, 2).create_lead("x", pipeline_id=other)
    api(sandbox, "PATCH", f"/api/v4/leads/{lead_id}", token, json={"status_id": 143})
    assert sandbox.status_of(account, lead_id) == (main, 143)
    api(sandbox, "PATCH", f"/api/v4/leads/{lead_id}", token, json={"status_id": 143, "pipeline_id": other})
    assert sandbox.status_of(account, lead_id) == (other, 143)


def test_seven_requests_a_second(sandbox: AmoSandbox):
    token = sandbox.issue_tokens("acme")["access_token"]
    statuses = [api(sandbox, "GET", "/api/v4/account", token).status_code for _ in range(9)]
    assert statuses[:7] == [200] * 7 and 429 in statuses[7:]


def test_webhooks_are_php_bracket_forms_with_several_leads_and_v2_fields(sandbox: AmoSandbox):
    account = sandbox.account("acme")
    token = sandbox.issue_tokens(account)["access_token"]
    field = api(
        sandbox,
        "POST",
        "/api/v4/leads/custom_fields",
        token,
        json=[{"name": "Why", "type": "select", "enums": [{"value": "A"}]}],
    ).json()["_embedded"]["custom_fields"][0]
    hook = api(
        sandbox,
        "POST",
        "/api/v4/webhooks",
        token,
        json={"destination": "https://app.example.test/hook", "settings": ["update_lead", "status_lead"]},
    )
    assert hook.status_code == 201
    first = sandbox.act(account, 2).create_lead("a")
    second = sandbox.act(account, 2).create_lead("b")
    sandbox.act(account, 2).set_fields(first, {field["id"]: {"enum_id": field["enums"][0]["id"]}})
    sandbox.act(account, 3).move_leads([(first, 143, None), (second, 143, None)])
    *_, fields_hook, move_hook = sandbox.pending_hooks()
    pairs = dict(parse_qsl(fields_hook.body))
    assert pairs["leads[update][0][custom_fields][0][values][0][enum]"] == str(field["enums"][0]["id"])
    assert pairs["account[id]"] == "777" and pairs["account[subdomain]"] == "acme"
    moved = dict(parse_qsl(move_hook.body))
    assert moved["leads[status][1][id]"] == str(second) and moved["leads[status][0][old_status_id]"]
    assert moved["leads[status][0][modified_user_id]"] == "3"
    events = api(sandbox, "GET", "/api/v4/events?filter[type]=lead_status_changed", token).json()["_embedded"]["events"]
    # Both moves happened in the same second: amoCRM orders events by time, ties in no set order.
    [second_event] = [event for event in events if event["entity_id"] == second]
    assert second_event["value_after"] == [
        {"lead_status": {"id": 143, "pipeline_id": sandbox.status_of(account, second)[0]}}
    ]
    assert {event["entity_id"] for event in events} >= {first, second}


def test_utm_source_is_a_built_in_tracking_field_and_leads_filter_by_responsible_and_statuses(sandbox: AmoSandbox):
    account = sandbox.account("acme")
    token = sandbox.issue_tokens("acme")["access_token"]
    fields = api(sandbox, "GET", "/api/v4/leads/custom_fields?filter[type][]=tracking_data", token).json()
    [utm] = fields["_embedded"]["custom_fields"]
    assert (utm["code"], utm["type"], utm["is_predefined"]) == ("UTM_SOURCE", "tracking_data", True)
    main = account.main_pipeline()
    working = sorted(s["id"] for s in account.pipelines[main]["statuses"].values() if s["type"] == 0)
    tagged = sandbox.act(account, 2).create_lead("С сайта", status_id=working[0], utm_source="yandex")
    sandbox.act(account, 2).create_lead("Второй", status_id=working[1])
    sandbox.act(account, 3).create_lead("Чужой", status_id=working[0])
    lead = api(sandbox, "GET", f"/api/v4/leads/{tagged}", token).json()
    [value] = [v for v in lead["custom_fields_values"] if v["field_code"] == "UTM_SOURCE"]
    assert value["field_type"] == "tracking_data" and value["values"] == [{"value": "yandex"}]
    query = (
        f"/api/v4/leads?filter[responsible_user_id][]=2&filter[statuses][0][pipeline_id]={main}"
        f"&filter[statuses][0][status_id]={working[0]}"
    )
    assert [lead["id"] for lead in api(sandbox, "GET", query, token).json()["_embedded"]["leads"]] == [tagged]
    bad = api(sandbox, "GET", "/api/v4/leads?filter[statuses][0][pipeline_id]=1", token)
    assert bad.status_code == 400 and bad.json()["validation-errors"][0]["errors"][0]["path"] == "filter.statuses.0"


def test_recordings_need_a_token_on_the_account_host_and_only_the_link_on_the_telephony_host(sandbox: AmoSandbox):
    from sandbox.amocrm.account import RECORDING_HOST

    account = sandbox.account("acme")
    token = sandbox.issue_tokens("acme")["access_token"]
    lead_id = sandbox.act(account, 2).create_lead("Звонок")
    own = sandbox.act(account, 2).make_call(lead_id)
    foreign = sandbox.act(account, 2).make_call(lead_id, recording_host=RECORDING_HOST)
    own_link, foreign_link = (account.notes[note]["params"]["link"] for note in (own, foreign))
    assert own_link.startswith("https://acme.amocrm.ru/recordings/")
    assert requests.get(own_link, timeout=5).status_code == 401
    served = requests.get(own_link, headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert served.status_code == 200 and served.headers["Content-Type"] == "audio/mpeg"
    assert served.content.startswith(b"ID3")
    assert foreign_link.startswith(f"https://{RECORDING_HOST}/recordings/")
    assert requests.get(foreign_link, timeout=5).content.startswith(b"ID3")
    assert requests.get(f"https://{RECORDING_HOST}/recordings/0.mp3", timeout=5).status_code == 404
