"""Bitrix24Rest over HTTP against the sandbox portal: errors, retries, token refresh, reinstall flag, batch, listing."""

from __future__ import annotations

import time
from types import SimpleNamespace
from urllib.parse import unquote

import pytest

from app.core.db import db
from app.core.models import Portal
from app.crm import errors
from app.crm.bitrix24 import Bitrix24Rest, build_command
from sandbox import ManualClock, Sandbox, generate_bulk
from sandbox.state import Portal as SandboxPortal
from tests.crm.conftest import B24Env, portal_row

ERROR_CASES = [
    (401, "authorization_error", "", errors.AuthorizationError),
    (401, "PAYMENT_REQUIRED", "Payment required", errors.PaymentRequired),
    (403, "ACCESS_DENIED", "Access denied", errors.AccessDenied),
    (403, "insufficient_scope", "", errors.InsufficientScope),
    (403, "WRONG_AUTH_TYPE", "Current authorization type is denied", errors.WrongAuthType),
    (400, "INVALID_REQUEST", "Https required.", errors.InvalidRequest),
    (400, "INVALID_ARG_VALUE", "Invalid value", errors.InvalidArgValue),
    (503, "QUERY_LIMIT_EXCEEDED", "Too many requests", errors.QueryLimitExceeded),
    (429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.", errors.OperationTimeLimit),
    (503, "OVERLOAD_LIMIT", "REST API is blocked due to overload.", errors.OverloadLimit),
    (500, "INTERNAL_SERVER_ERROR", "Internal server error", errors.InternalServerError),
    (400, "", "Not found", errors.NotFound),
    (400, "", "Access denied.", errors.AccessDenied),
    (400, "ERROR_ACTIVITY_ALREADY_INSTALLED", "Activity or Robot already installed!", errors.ActivityAlreadyInstalled),
    (400, "ERROR_EVENT_NOT_FOUND", "Event not found", errors.EventNotFound),
    (400, "ERROR_PLACEMENT_NOT_FOUND", "Placement not found", errors.PlacementNotFound),
    (400, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL", errors.WrongHandlerUrl),
    (400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded", errors.BatchLengthExceeded),
    (404, "ERROR_METHOD_NOT_FOUND", "Method not found!", errors.MethodNotFound),
    (400, "SOMETHING_NEW", "An error nobody documented", errors.Bitrix24Error),
]


# Throttling has its own tests below: the sandbox produces both from its leaky bucket / operating time.
FORCED_CASES = [case for case in ERROR_CASES if case[1] not in ("QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT")]


def add_deals(sandbox: Sandbox, portal: SandboxPortal, count: int) -> list[int]:
    """Deals created by the admin in the portal's UI, titled "Deal <id>"; returns their ids."""
    actor = sandbox.act(portal, sandbox.admin_id(portal))
    ids = []
    for _ in range(count):
        deal_id = actor.create_deal(TITLE="Deal", STAGE_ID="NEW", ASSIGNED_BY_ID=sandbox.admin_id(portal))
        actor.update_deal(deal_id, {"TITLE": f"Deal {deal_id}"})
        ids.append(deal_id)
    return ids


@pytest.mark.parametrize(("status", "code", "description", "expected"), FORCED_CASES)
def test_each_error_code_raises_its_class(b24: B24Env, portal: Portal, status, code, description, expected):
    b24.sandbox.force_error(b24.portal, "crm.deal.get", status, code, description, times=10)
    with pytest.raises(expected) as caught:
        Bitrix24Rest(portal.id).call("crm.deal.get", {"id": 1})
    assert type(caught.value) is expected
    assert caught.value.code == code
    assert caught.value.description == description
    assert caught.value.http_status == status
    assert b24.rest_requests() == ["crm.deal.get"]  # none of these is retried


NATURAL_ERRORS = [
    ("crm.deal.get", {"id": 999999}, errors.NotFound, ""),
    ("crm.nothing.here", {}, errors.MethodNotFound, "ERROR_METHOD_NOT_FOUND"),
    (
        "batch",
        {"cmd": {f"c{i}": "app.info" for i in range(51)}},
        errors.BatchLengthExceeded,
        "ERROR_BATCH_LENGTH_EXCEEDED",
    ),
    (
        "event.bind",
        {"event": "ONNOSUCHEVENT", "handler": "https://app.example.test/b24/events"},
        errors.EventNotFound,
        "ERROR_EVENT_NOT_FOUND",
    ),
    (
        "placement.bind",
        {"PLACEMENT": "NO_SUCH_PLACE", "HANDLER": "https://app.example.test/b24/tab"},
        errors.PlacementNotFound,
        "ERROR_PLACEMENT_NOT_FOUND",
    ),
    (
        "placement.bind",
        {"PLACEMENT": "CRM_DEAL_DETAIL_TAB", "HANDLER": "not a url"},
        errors.WrongHandlerUrl,
        "ERROR_WRONG_HANDLER_URL",
    ),
]


@pytest.mark.parametrize(("method", "params", "expected", "code"), NATURAL_ERRORS)
def test_errors_the_portal_produces_raise_their_class(b24: B24Env, portal: Portal, method, params, expected, code):
    with pytest.raises(expected) as caught:
        Bitrix24Rest(portal.id).call(method, params)
    assert type(caught.value) is expected and caught.value.code == code
    assert b24.rest_requests() == [method]


def test_admin_method_as_a_manager_is_access_denied(b24: B24Env):
    sandbox, sb_portal = b24.sandbox, b24.portal
    manager = next(uid for uid, user in sorted(sb_portal.users.items()) if not user.get("IS_ADMIN"))
    db.session.delete(b24.row)
    db.session.commit()
    row = portal_row(sandbox, sb_portal, user_id=manager)
    with pytest.raises(errors.AccessDenied) as caught:
        Bitrix24Rest(row.id).call("crm.deal.userfield.add", {"fields": {"FIELD_NAME": "X", "USER_TYPE_ID": "string"}})
    assert caught.value.http_status == 403


def test_method_outside_the_app_scope_is_insufficient_scope(b24: B24Env, portal: Portal):
    with b24.sandbox.lock:
        b24.portal.scope = "crm"
    with pytest.raises(errors.InsufficientScope):
        Bitrix24Rest(portal.id).call("user.current")


@pytest.mark.parametrize(("status", "code", "description", "expected"), ERROR_CASES)
def test_error_registry(status, code, description, expected):
    assert type(errors.error_for(code, description, status)) is expected


def test_registry_knows_the_auth_codes():
    assert isinstance(errors.error_for("expired_token", "", 401), errors.ExpiredToken)
    assert isinstance(errors.error_for("invalid_token", "", 401), errors.InvalidToken)
    assert isinstance(errors.error_for("NO_AUTH_FOUND", "", 401), errors.NoAuthFound)
    assert isinstance(errors.error_for("invalid_grant", "", 400), errors.InvalidGrant)


# ---------------------------------------------------------------- throttling


def virtual_sleep(monkeypatch: pytest.MonkeyPatch, clock: ManualClock) -> list[float]:
    """The client's back-off sleeps advance the sandbox's clock instead of waiting; returns the delays."""
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    virtual_time = SimpleNamespace(time=time.time, monotonic=time.monotonic, sleep=sleep)
    monkeypatch.setattr("app.crm.bitrix24.client.time", virtual_time)
    return slept


def test_query_limit_is_retried_then_succeeds(b24: B24Env, portal: Portal, monkeypatch: pytest.MonkeyPatch):
    sandbox = b24.sandbox
    sandbox.clock = ManualClock(time.time())  # the bucket drains only when the client sleeps
    deal_id = add_deals(sandbox, b24.portal, 1)[0]
    # The bucket holds one request and drains 80 per second: full now, free again after 12.5 ms.
    # Back-off sleeps are 5-10 ms, then 10-20 ms: two refusals, then the call goes through.
    sandbox.set_rate_limit(b24.portal, rate=80, burst=1)
    assert sandbox.call(b24.portal, "app.info")[0] == 200
    slept = virtual_sleep(monkeypatch, sandbox.clock)
    assert Bitrix24Rest(portal.id).call("crm.deal.get", {"id": deal_id})["ID"] == str(deal_id)
    assert b24.rest_requests() == ["crm.deal.get"] * 3
    assert [call.status for call in sandbox.calls(b24.portal) if call.method == "crm.deal.get"] == [503, 503, 200]
    assert len(slept) == 2


def test_query_limit_gives_up_after_the_bound(b24: B24Env, portal: Portal):
    sandbox = b24.sandbox
    sandbox.set_rate_limit(b24.portal, rate=0.001, burst=1)  # one request, then blocked for 1000 s
    assert sandbox.call(b24.portal, "app.info")[0] == 200
    with pytest.raises(errors.QueryLimitExceeded) as caught:
        Bitrix24Rest(portal.id).call("crm.deal.get", {"id": 5})
    assert caught.value.http_status == 503
    assert b24.rest_requests() == ["crm.deal.get"] * 4  # B24_RETRY_ATTEMPTS
    assert b24.statuses("crm.deal.get") == [503] * 4


def test_operation_time_limit_waits_for_operating_reset_at(b24: B24Env, portal: Portal):
    deal_id = add_deals(b24.sandbox, b24.portal, 1)[0]
    b24.sandbox.force_operation_limit(b24.portal, "crm.deal.get", times=1, reset_in=0.3)
    started = time.monotonic()
    assert Bitrix24Rest(portal.id).call("crm.deal.get", {"id": deal_id})["ID"] == str(deal_id)
    assert time.monotonic() - started >= 0.25
    assert b24.statuses("crm.deal.get") == [429, 200]


def test_operation_time_limit_far_away_is_not_waited_for(b24: B24Env, portal: Portal):
    b24.sandbox.force_operation_limit(b24.portal, "crm.deal.get", times=-1, reset_in=300)
    with pytest.raises(errors.OperationTimeLimit) as caught:
        Bitrix24Rest(portal.id).call("crm.deal.get", {"id": 5})
    assert caught.value.retry_after is not None and caught.value.retry_after > 200
    assert b24.rest_requests() == ["crm.deal.get"]


# ---------------------------------------------------------------- tokens


def test_expired_token_refreshes_once_and_persists_rotated_tokens(b24: B24Env, portal: Portal):
    sandbox = b24.sandbox
    deal_id = add_deals(sandbox, b24.portal, 1)[0]
    old_access, old_refresh = portal.access_token, portal.refresh_token
    sandbox.expire_access_tokens(b24.portal)
    rest = Bitrix24Rest(portal.id)
    assert rest.call("crm.deal.get", {"id": deal_id})["ID"] == str(deal_id)
    # One refresh, with our client id and secret (the OAuth server checks both), then the retry.
    assert sandbox.oauth_calls(b24.portal, "refresh_token") == 1
    assert b24.requests_sent() == [
        f"{b24.portal.domain}/rest/crm.deal.get.json",
        f"{sandbox.oauth_host}/oauth/token/",
        f"{b24.portal.domain}/rest/crm.deal.get.json",
    ]
    assert b24.statuses("crm.deal.get") == [200]  # the refused call never got past authentication
    db.session.expire_all()
    stored = db.session.get(Portal, portal.id)
    assert stored.access_token not in (None, old_access) and stored.refresh_token not in (None, old_refresh)
    # The rotated refresh token is the one the OAuth server now honours; the old one is spent.
    assert stored.refresh_token in sandbox.refresh_tokens and old_refresh not in sandbox.refresh_tokens
    assert sandbox.access_tokens[stored.access_token].member_id == b24.portal.member_id
    assert stored.token_expires_at is not None and stored.token_expires_at.timestamp() > time.time() + 3000
    # The next call uses the new token without refreshing again.
    rest.call("crm.deal.get", {"id": deal_id})
    assert sandbox.oauth_calls(b24.portal, "refresh_token") == 1
    assert b24.statuses("crm.deal.get") == [200, 200]


def test_expired_after_refresh_is_not_refreshed_in_a_loop(b24: B24Env, portal: Portal):
    b24.sandbox.access_ttl = -10  # the OAuth server hands out tokens that are already expired
    b24.sandbox.expire_access_tokens(b24.portal)
    with pytest.raises(errors.ExpiredToken):
        Bitrix24Rest(portal.id).call("crm.deal.get", {"id": 5})
    assert b24.sandbox.oauth_calls(b24.portal, "refresh_token") == 1
    assert b24.rest_requests() == ["crm.deal.get", "crm.deal.get"]


@pytest.mark.parametrize("code", ["invalid_token", "NO_AUTH_FOUND"])
def test_invalid_token_flags_portal_and_stops_calling(b24: B24Env, portal: Portal, code):
    token = portal.access_token
    if code == "invalid_token":
        b24.sandbox.revoke(b24.portal)  # the app's access was taken away
    else:
        portal.access_token = ""  # nothing to authorise with
        db.session.commit()
    with pytest.raises(errors.PortalNeedsReinstall) as caught:
        Bitrix24Rest(portal.id).call("crm.deal.get", {"id": 5})
    assert caught.value.__cause__.code == code
    assert b24.rest_requests() == ["crm.deal.get"]
    assert b24.sandbox.oauth_calls(b24.portal) == 0
    db.session.expire_all()
    stored = db.session.get(Portal, portal.id)
    assert stored.status == "needs_reinstall"
    assert code in stored.status_detail and token not in stored.status_detail
    with pytest.raises(errors.PortalNeedsReinstall):
        Bitrix24Rest(portal.id).call("crm.deal.list")
    assert b24.rest_requests() == ["crm.deal.get"]


def test_refresh_invalid_grant_flags_portal(b24: B24Env, portal: Portal):
    sandbox = b24.sandbox
    # Someone else already used our refresh token (it works once), and the access token expired.
    status, _ = sandbox.handle_oauth(
        {
            "grant_type": "refresh_token",
            "client_id": b24.portal.client_id,
            "client_secret": b24.portal.client_secret,
            "refresh_token": portal.refresh_token,
        }
    )
    assert status == 200
    sandbox.expire_access_tokens(b24.portal)
    with pytest.raises(errors.PortalNeedsReinstall) as caught:
        Bitrix24Rest(portal.id).call("crm.deal.get", {"id": 5})
    assert caught.value.__cause__.code == "invalid_grant"
    assert sandbox.oauth_calls(b24.portal, "refresh_token") == 2  # the spend above plus ours
    assert b24.rest_requests() == ["crm.deal.get"]
    db.session.expire_all()
    assert db.session.get(Portal, portal.id).status == "needs_reinstall"


def test_http_endpoint_is_refused(b24: B24Env):
    db.session.delete(b24.row)
    db.session.commit()
    portal = portal_row(b24.sandbox, b24.portal, rest_base=f"http://{b24.portal.domain}/rest/")
    with pytest.raises(errors.CrmError, match="HTTPS"):
        Bitrix24Rest(portal.id).call("crm.deal.get", {"id": 1})
    assert b24.requests_sent() == []


def test_unreachable_portal_is_crm_unavailable(b24: B24Env):
    db.session.delete(b24.row)
    db.session.commit()
    portal = portal_row(b24.sandbox, b24.portal, rest_base="https://other.bitrix24.test/rest/")  # no such portal
    with pytest.raises(errors.CrmUnavailable):
        Bitrix24Rest(portal.id).call("crm.deal.get", {"id": 1})


# ---------------------------------------------------------------- batch


def test_build_command_uses_php_brackets():
    command = build_command("crm.deal.list", {"filter": {">ID": 5, "@STAGE_ID": ["NEW", "WON"]}, "start": -1})
    assert command.startswith("crm.deal.list?")
    assert unquote(command) == "crm.deal.list?filter[>ID]=5&filter[@STAGE_ID][0]=NEW&filter[@STAGE_ID][1]=WON&start=-1"


def test_batch_of_120_commands_is_three_requests(b24: B24Env, portal: Portal):
    sandbox = b24.sandbox
    ids = add_deals(sandbox, b24.portal, 120)
    commands = {f"d{i}": ("crm.deal.get", {"id": i}) for i in ids}
    commands["missing"] = ("crm.deal.get", {"id": 999999})
    before = sandbox.rest_calls(b24.portal)
    result = Bitrix24Rest(portal.id).batch(commands)
    assert sandbox.rest_calls(b24.portal) - before == 3
    assert b24.rest_requests() == ["batch"] * 3
    assert [len(call.params["cmd"]) for call in sandbox.calls(b24.portal, "batch")] == [50, 50, 21]
    assert sandbox.rest_calls(b24.portal, "crm.deal.get") == 121
    assert result.get(f"d{ids[76]}")["TITLE"] == f"Deal {ids[76]}"
    assert len(result.result) == 120
    assert isinstance(result.error("missing"), errors.NotFound)
    with pytest.raises(errors.NotFound):
        result.get("missing")


def test_batch_empty_maps_become_dicts(b24: B24Env, portal: Portal):
    deal_id = add_deals(b24.sandbox, b24.portal, 1)[0]
    result = Bitrix24Rest(portal.id).batch({"a": ("crm.deal.get", {"id": deal_id})})
    assert result.result_error == {} and result.result_total == {} and result.result_next == {}
    assert result.errors() == {}


# ---------------------------------------------------------------- listing


def list_filters(b24: B24Env) -> list[dict]:
    return [call.params for call in b24.sandbox.calls(b24.portal, "crm.deal.list")]


def test_fast_listing_pages_by_id_and_stops_on_a_short_page(b24: B24Env, portal: Portal):
    ids = add_deals(b24.sandbox, b24.portal, 120)
    rows = list(Bitrix24Rest(portal.id).iter_list("crm.deal.list", {"select": ["ID", "TITLE"]}))
    assert [int(r["ID"]) for r in rows] == ids
    assert rows[0] == {"ID": str(ids[0]), "TITLE": f"Deal {ids[0]}"}
    assert b24.rest_requests() == ["crm.deal.list"] * 3
    params = list_filters(b24)
    assert [p["filter"][">ID"] for p in params] == [0, ids[49], ids[99]]
    assert all(p["start"] == -1 and p["order"] == {"ID": "ASC"} for p in params)


def test_fast_listing_exact_multiple_needs_one_empty_page(b24: B24Env, portal: Portal):
    add_deals(b24.sandbox, b24.portal, 100)
    assert len(list(Bitrix24Rest(portal.id).iter_list("crm.deal.list"))) == 100
    assert b24.rest_requests() == ["crm.deal.list"] * 3


def test_fast_listing_streams(b24: B24Env, portal: Portal):
    generate_bulk(b24.portal, deals=1000)
    first_id = min(b24.portal.deals)
    iterator = Bitrix24Rest(portal.id).iter_list("crm.deal.list")
    assert next(iterator)["ID"] == str(first_id)
    assert b24.rest_requests() == ["crm.deal.list"]


def test_batched_listing_packs_pages_near_the_floor(b24: B24Env, portal: Portal):
    generate_bulk(b24.portal, deals=50_000)  # 1000 pages
    ids = sorted(b24.portal.deals)
    rows = Bitrix24Rest(portal.id).iter_list_batched("crm.deal.list", {"select": ["ID", "TITLE"]})
    assert [int(r["ID"]) for r in rows] == ids
    floor = 1000 / 50
    requests = b24.rest_requests()
    assert len(requests) <= floor * 1.10
    assert requests[0] == "crm.deal.list" and set(requests[1:]) == {"batch"}
    assert b24.sandbox.rest_calls(b24.portal) == len(requests)


@pytest.mark.parametrize(("count", "requests"), [(0, 1), (30, 1), (50, 2), (120, 2), (2600, 3)])
def test_batched_listing_yields_every_row_once(b24: B24Env, portal: Portal, count, requests):
    generate_bulk(b24.portal, deals=count + 10)
    with b24.sandbox.lock:
        ids = sorted(b24.portal.deals)
        for deal_id in ids:  # `count` open deals in the general funnel, every one after them won
            row = b24.portal.deals[deal_id]
            row.category_id, row.stage_id = 0, "NEW" if len(ids) - ids.index(deal_id) > 10 else "WON"
    expected = ids[:count]
    assert [b24.sandbox.deal(b24.portal, i)["CLOSED"] for i in ids] == ["N"] * count + ["Y"] * 10
    rows = list(Bitrix24Rest(portal.id).iter_list_batched("crm.deal.list", {"filter": {"CLOSED": "N"}}))
    assert [int(r["ID"]) for r in rows] == expected
    assert len(b24.rest_requests()) == requests


def test_batched_listing_survives_a_short_page_mid_batch(b24: B24Env, portal: Portal):
    # The count says 200 rows, but 60 are deleted after it: the chain breaks after a short page,
    # the broken references resolve to garbage, and nothing is yielded twice or lost.
    ids = add_deals(b24.sandbox, b24.portal, 200)
    rows = Bitrix24Rest(portal.id).iter_list_batched("crm.deal.list")
    seen = [int(next(rows)["ID"])]  # the first page (with the count of 200) has been read
    actor = b24.sandbox.act(b24.portal, b24.sandbox.admin_id(b24.portal))
    for deal_id in ids[140:]:
        actor.delete_deal(deal_id)
    seen += [int(r["ID"]) for r in rows]
    assert seen == ids[:140]
    assert b24.rest_requests() == ["crm.deal.list", "batch"]
