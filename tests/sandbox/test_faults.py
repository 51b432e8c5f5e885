"""Faults the portal can be told to answer: forced errors and the operating-time block with its reset time."""

from __future__ import annotations

from sandbox import ManualClock, Sandbox

from .conftest import call


def test_forced_error_has_the_documented_shape_and_runs_out(sandbox: Sandbox, portal, token) -> None:
    sandbox.force_error(portal, "crm.deal.list", 500, "INTERNAL_SERVER_ERROR", "Internal server error", times=2)
    answers = [call(sandbox, token, "crm.deal.list") for _ in range(3)]
    assert [status for status, _ in answers] == [500, 500, 200]
    assert answers[0][1] == {"error": "INTERNAL_SERVER_ERROR", "error_description": "Internal server error"}
    assert "result" in answers[2][1]
    # Other methods are not affected.
    assert call(sandbox, token, "user.current")[0] == 200


def test_forced_errors_queue_in_order_and_apply_inside_batch(sandbox: Sandbox, portal, token) -> None:
    sandbox.force_error(portal, "user.current", 401, "PAYMENT_REQUIRED", "Payment required")
    sandbox.force_error(portal, "user.current", 503, "OVERLOAD_LIMIT", "REST API is blocked due to overload.")
    status, body = call(sandbox, token, "batch", {"cmd": {"a": "user.current", "b": "user.current", "c": "app.info"}})
    assert status == 200
    assert body["result"]["result_error"] == {
        "a": {"error": "PAYMENT_REQUIRED", "error_description": "Payment required"},
        "b": {"error": "OVERLOAD_LIMIT", "error_description": "REST API is blocked due to overload."},
    }
    assert set(body["result"]["result"]) == {"c"}
    assert call(sandbox, token, "user.current")[0] == 200


def test_forced_error_until_cleared(sandbox: Sandbox, portal, token) -> None:
    sandbox.force_error(portal, "app.info", 403, "WRONG_AUTH_TYPE", "Current authorization type is denied", times=-1)
    assert {call(sandbox, token, "app.info")[0] for _ in range(5)} == {403}
    sandbox.force_error(portal, "app.info", 0, "", times=0)
    assert call(sandbox, token, "app.info")[0] == 200


def test_operation_time_limit_answer_tells_when_it_resets(sandbox: Sandbox, portal, token, clock: ManualClock) -> None:
    sandbox.force_operation_limit(portal, "crm.deal.list", times=1, reset_in=42.5)
    status, body = call(sandbox, token, "crm.deal.list")
    assert (status, body["error"]) == (429, "OPERATION_TIME_LIMIT")
    assert body["time"]["operating_reset_at"] == clock.now() + 42.5
    assert call(sandbox, token, "crm.deal.list")[0] == 200
    # In a batch the command fails with the plain error shape.
    sandbox.force_operation_limit(portal, "crm.deal.list", times=1)
    status, body = call(sandbox, token, "batch", {"cmd": {"a": "crm.deal.list"}})
    assert body["result"]["result_error"]["a"] == {
        "error": "OPERATION_TIME_LIMIT",
        "error_description": "Method is blocked due to operation time limit.",
    }


def test_oauth_latency_delays_token_answers_only(sandbox: Sandbox, portal, mounted) -> None:
    import time

    import requests

    tokens = sandbox.issue_tokens(portal)
    sandbox.oauth_latency = 0.2
    started = time.monotonic()
    answer = requests.get(
        f"https://{sandbox.oauth_host}/oauth/token/",
        params={
            "grant_type": "refresh_token",
            "client_id": portal.client_id,
            "client_secret": portal.client_secret,
            "refresh_token": tokens["refresh_token"],
        },
        timeout=5,
    )
    assert answer.status_code == 200 and time.monotonic() - started >= 0.2
    started = time.monotonic()
    assert (
        requests.post(
            f"https://{portal.domain}/rest/app.info.json", json={"auth": tokens["access_token"]}, timeout=5
        ).status_code
        == 200
    )  # REST answers are not delayed (the old access token is valid until it expires)
    assert time.monotonic() - started < 0.2
