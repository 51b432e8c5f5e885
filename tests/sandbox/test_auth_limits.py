"""Tokens, the OAuth server and the leaky bucket."""

from __future__ import annotations

import requests

from sandbox import ManualClock, Sandbox

from .conftest import DOMAIN, call


def _refresh(portal, refresh_token: str, host: str = "oauth.bitrix.info") -> requests.Response:
    return requests.get(
        f"https://{host}/oauth/token/",
        params={
            "grant_type": "refresh_token",
            "client_id": portal.client_id,
            "client_secret": portal.client_secret,
            "refresh_token": refresh_token,
        },
        timeout=5,
    )


def test_expired_access_token_then_refresh_rotates(sandbox: Sandbox, portal, mounted, clock: ManualClock) -> None:
    tokens = sandbox.issue_tokens(portal, 3)
    clock.advance(3601)
    status, body = call(sandbox, tokens["access_token"], "user.current")
    assert (status, body["error"]) == (401, "expired_token")

    answer = _refresh(portal, tokens["refresh_token"])
    assert answer.status_code == 200
    fresh = answer.json()
    assert set(fresh) >= {
        "access_token", "refresh_token", "expires", "expires_in", "client_endpoint", "server_endpoint",
        "domain", "member_id", "scope", "status", "user_id",
    }  # fmt: skip
    assert fresh["expires_in"] == 3600
    assert fresh["client_endpoint"] == f"https://{DOMAIN}/rest/"
    assert fresh["server_endpoint"] == "https://oauth.bitrix.info/rest/"
    assert fresh["member_id"] == portal.member_id and fresh["user_id"] == 3
    assert fresh["refresh_token"] != tokens["refresh_token"]
    assert call(sandbox, fresh["access_token"], "user.current")[1]["result"]["ID"] == "3"

    reused = _refresh(portal, tokens["refresh_token"], host="oauth.bitrix24.tech")
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert sandbox.oauth_calls(portal, "refresh_token") == 2


def test_expire_switch_and_wrong_client(sandbox: Sandbox, portal, mounted) -> None:
    tokens = sandbox.issue_tokens(portal)
    sandbox.expire_access_tokens(portal)
    assert call(sandbox, tokens["access_token"], "profile")[1]["error"] == "expired_token"
    answer = requests.get(
        "https://oauth.bitrix.info/oauth/token/",
        params={"grant_type": "refresh_token", "client_id": portal.client_id, "client_secret": "wrong",
                "refresh_token": tokens["refresh_token"]},
        timeout=5,
    )  # fmt: skip
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_client"
    assert _refresh(portal, tokens["refresh_token"]).status_code == 200


def test_revoked_app(sandbox: Sandbox, portal, mounted) -> None:
    tokens = sandbox.issue_tokens(portal)
    sandbox.revoke(portal)
    status, body = call(sandbox, tokens["access_token"], "crm.deal.get", {"id": 1})
    assert (status, body["error"]) == (401, "invalid_token")
    answer = _refresh(portal, tokens["refresh_token"])
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"


def test_authorization_code_grant(sandbox: Sandbox, portal, mounted, clock: ManualClock) -> None:
    code = sandbox.authorization_code(portal, 9)
    params = {"grant_type": "authorization_code", "client_id": portal.client_id,
              "client_secret": portal.client_secret, "code": code}  # fmt: skip
    answer = requests.get("https://oauth.bitrix.info/oauth/token/", params=params, timeout=5)
    assert answer.status_code == 200 and answer.json()["user_id"] == 9
    again = requests.get("https://oauth.bitrix.info/oauth/token/", params=params, timeout=5)
    assert again.json()["error"] == "invalid_grant"
    late = sandbox.authorization_code(portal)
    clock.advance(31)
    params["code"] = late
    assert requests.get("https://oauth.bitrix.info/oauth/token/", params=params, timeout=5).status_code == 400


def test_oauth_server_app_info(sandbox: Sandbox, portal, mounted) -> None:
    tokens = sandbox.issue_tokens(portal)
    answer = requests.post("https://oauth.bitrix.info/rest/app.info", data={"auth": tokens["access_token"]}, timeout=5)
    info = answer.json()["result"]
    assert info["client_id"] == portal.client_id
    assert info["install"]["member_id"] == portal.member_id and info["install"]["domain"] == DOMAIN


def test_token_of_another_portal_is_refused(sandbox: Sandbox, portal) -> None:
    other = sandbox.seed_portal(domain="other.bitrix24.ru", seed=7)
    foreign = sandbox.issue_tokens(other)["access_token"]
    status, body = call(sandbox, foreign, "crm.deal.get", {"id": 1})
    assert (status, body["error"]) == (401, "invalid_token")
    assert call(sandbox, foreign, "crm.deal.get", {"id": 1}, host="other.bitrix24.ru")[0] == 200


def test_leaky_bucket_blocks_above_burst_and_recovers(sandbox: Sandbox, portal, token, clock: ManualClock) -> None:
    sandbox.set_rate_limit(portal, rate=2, burst=50)
    statuses = [call(sandbox, token, "user.current")[0] for _ in range(50)]
    assert statuses == [200] * 50
    status, body = call(sandbox, token, "user.current")
    assert (status, body["error"]) == (503, "QUERY_LIMIT_EXCEEDED")
    clock.advance(1.0)  # drains 2
    assert [call(sandbox, token, "user.current")[0] for _ in range(3)] == [200, 200, 503]
    clock.advance(25)
    batch = {"cmd": {str(i): "user.current" for i in range(50)}}
    assert call(sandbox, token, "batch", batch)[0] == 200  # a batch of 50 is one request
    assert call(sandbox, token, "user.current")[0] == 200


def test_bucket_can_be_switched_off(sandbox: Sandbox, portal, token) -> None:
    sandbox.set_rate_limit(portal, enabled=False)
    assert {call(sandbox, token, "user.current")[0] for _ in range(120)} == {200}
