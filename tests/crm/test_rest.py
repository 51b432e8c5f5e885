"""Bitrix24Rest against the fake portal: errors, retries, token refresh, reinstall flag, batch, listing."""

from __future__ import annotations

import time

import pytest
from flask import Flask

from app.crm import errors
from app.crm.bitrix24 import Bitrix24Rest, build_command
from app.db import db
from app.models import Portal
from tests.crm.fake_b24 import FakeBitrix24, deal_row

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


@pytest.mark.parametrize(("status", "code", "description", "expected"), ERROR_CASES)
def test_each_error_code_raises_its_class(portal: Portal, fake: FakeBitrix24, status, code, description, expected):
    fake.fail("crm.deal.get", status, code, description, times=10)
    with pytest.raises(expected) as caught:
        Bitrix24Rest(portal.id).call("crm.deal.get", {"id": 1})
    assert type(caught.value) is expected
    assert caught.value.code == code
    assert caught.value.description == description
    assert caught.value.http_status == status


@pytest.mark.parametrize(("status", "code", "description", "expected"), ERROR_CASES)
def test_error_registry(status, code, description, expected):
    assert type(errors.error_for(code, description, status)) is expected


def test_registry_knows_the_auth_codes():
    assert isinstance(errors.error_for("expired_token", "", 401), errors.ExpiredToken)
    assert isinstance(errors.error_for("invalid_token", "", 401), errors.InvalidToken)
    assert isinstance(errors.error_for("NO_AUTH_FOUND", "", 401), errors.NoAuthFound)
    assert isinstance(errors.error_for("invalid_grant", "", 400), errors.InvalidGrant)


def test_query_limit_is_retried_then_succeeds(portal: Portal, fake: FakeBitrix24):
    fake.add_deals([deal_row(5)])
    fake.fail("crm.deal.get", 503, "QUERY_LIMIT_EXCEEDED", "Too many requests", times=2)
    assert Bitrix24Rest(portal.id).call("crm.deal.get", {"id": 5})["ID"] == "5"
    assert fake.methods() == ["crm.deal.get"] * 3


def test_query_limit_gives_up_after_the_bound(portal: Portal, fake: FakeBitrix24):
    fake.fail("crm.deal.get", 503, "QUERY_LIMIT_EXCEEDED", "Too many requests", times=10)
    with pytest.raises(errors.QueryLimitExceeded):
        Bitrix24Rest(portal.id).call("crm.deal.get", {"id": 5})
    assert len(fake.calls) == 4  # B24_RETRY_ATTEMPTS


def test_operation_time_limit_waits_for_operating_reset_at(portal: Portal, fake: FakeBitrix24):
    fake.add_deals([deal_row(5)])
    reset_at = time.time() + 0.3
    fake.fail("crm.deal.get", 429, "OPERATION_TIME_LIMIT", "blocked", time={"operating_reset_at": reset_at})
    started = time.monotonic()
    assert Bitrix24Rest(portal.id).call("crm.deal.get", {"id": 5})["ID"] == "5"
    assert time.monotonic() - started >= 0.25
    assert len(fake.calls) == 2


def test_operation_time_limit_far_away_is_not_waited_for(portal: Portal, fake: FakeBitrix24):
    fake.fail("crm.deal.get", 429, "OPERATION_TIME_LIMIT", "blocked", time={"operating_reset_at": time.time() + 300})
    with pytest.raises(errors.OperationTimeLimit) as caught:
        Bitrix24Rest(portal.id).call("crm.deal.get", {"id": 5})
    assert caught.value.retry_after is not None and caught.value.retry_after > 200
    assert len(fake.calls) == 1


def test_expired_token_refreshes_once_and_persists_rotated_tokens(portal: Portal, fake: FakeBitrix24):
    fake.add_deals([deal_row(5)])
    fake.valid_tokens = set()
    fake.expired_tokens = {"token-1"}
    rest = Bitrix24Rest(portal.id)
    assert rest.call("crm.deal.get", {"id": 5})["ID"] == "5"
    assert len(fake.refreshes) == 1
    assert fake.refreshes[0] == {
        "grant_type": "refresh_token",
        "client_id": "app.test",
        "client_secret": "app-secret",
        "refresh_token": "refresh-1",
    }
    assert fake.methods() == ["crm.deal.get", "crm.deal.get"]
    db.session.expire_all()
    stored = db.session.get(Portal, portal.id)
    assert stored.access_token == "token-new-1"
    assert stored.refresh_token == "refresh-2"
    assert stored.token_expires_at is not None and stored.token_expires_at.timestamp() > time.time() + 3000
    # The next call uses the new token without refreshing again.
    rest.call("crm.deal.get", {"id": 5})
    assert len(fake.refreshes) == 1


def test_expired_after_refresh_is_not_refreshed_in_a_loop(portal: Portal, fake: FakeBitrix24):
    fake.token_filter = lambda token: "expired"
    with pytest.raises(errors.ExpiredToken):
        Bitrix24Rest(portal.id).call("crm.deal.get", {"id": 5})
    assert len(fake.refreshes) == 1
    assert len(fake.calls) == 2


@pytest.mark.parametrize("code", ["invalid_token", "NO_AUTH_FOUND"])
def test_invalid_token_flags_portal_and_stops_calling(portal: Portal, fake: FakeBitrix24, code):
    fake.fail("crm.deal.get", 401, code, "Unable to get application by token", times=5)
    with pytest.raises(errors.PortalNeedsReinstall):
        Bitrix24Rest(portal.id).call("crm.deal.get", {"id": 5})
    assert len(fake.calls) == 1
    assert fake.refreshes == []
    db.session.expire_all()
    stored = db.session.get(Portal, portal.id)
    assert stored.status == "needs_reinstall"
    assert code in stored.status_detail and "token-1" not in stored.status_detail
    with pytest.raises(errors.PortalNeedsReinstall):
        Bitrix24Rest(portal.id).call("crm.deal.list")
    assert len(fake.calls) == 1


def test_refresh_invalid_grant_flags_portal(portal: Portal, fake: FakeBitrix24):
    fake.expired_tokens = {"token-1"}
    fake.refresh_error = (400, {"error": "invalid_grant", "error_description": "Invalid grant"})
    with pytest.raises(errors.PortalNeedsReinstall):
        Bitrix24Rest(portal.id).call("crm.deal.get", {"id": 5})
    assert len(fake.refreshes) == 1 and len(fake.calls) == 1
    db.session.expire_all()
    assert db.session.get(Portal, portal.id).status == "needs_reinstall"


def test_http_endpoint_is_refused(b24_app: Flask, fake: FakeBitrix24):
    from tests.crm.conftest import portal_row

    portal = portal_row(rest_base="http://member-a.bitrix24.test/rest/")
    with pytest.raises(errors.CrmError, match="HTTPS"):
        Bitrix24Rest(portal.id).call("crm.deal.get", {"id": 1})
    assert fake.calls == []


def test_unreachable_portal_is_crm_unavailable(b24_app: Flask, fake: FakeBitrix24):
    from tests.crm.conftest import portal_row

    portal = portal_row(rest_base="https://other.bitrix24.test/rest/")  # not mocked: responses refuses
    with pytest.raises(errors.CrmUnavailable):
        Bitrix24Rest(portal.id).call("crm.deal.get", {"id": 1})


# ---------------------------------------------------------------- batch


def test_build_command_uses_php_brackets():
    command = build_command("crm.deal.list", {"filter": {">ID": 5, "@STAGE_ID": ["NEW", "WON"]}, "start": -1})
    assert command.startswith("crm.deal.list?")
    from urllib.parse import unquote

    assert unquote(command) == "crm.deal.list?filter[>ID]=5&filter[@STAGE_ID][0]=NEW&filter[@STAGE_ID][1]=WON&start=-1"


def test_batch_of_120_commands_is_three_requests(portal: Portal, fake: FakeBitrix24):
    fake.add_deals([deal_row(i) for i in range(1, 121)])
    commands = {f"d{i}": ("crm.deal.get", {"id": i}) for i in range(1, 121)}
    commands["missing"] = ("crm.deal.get", {"id": 999})
    result = Bitrix24Rest(portal.id).batch(commands)
    assert fake.methods() == ["batch"] * 3
    assert [len(params["cmd"]) for _, params, _ in fake.calls] == [50, 50, 21]
    assert result.get("d77")["TITLE"] == "Deal 77"
    assert len(result.result) == 120
    assert isinstance(result.error("missing"), errors.NotFound)
    with pytest.raises(errors.NotFound):
        result.get("missing")


def test_batch_empty_maps_become_dicts(portal: Portal, fake: FakeBitrix24):
    fake.add_deals([deal_row(1)])
    result = Bitrix24Rest(portal.id).batch({"a": ("crm.deal.get", {"id": 1})})
    assert result.result_error == {} and result.result_total == {} and result.result_next == {}
    assert result.errors() == {}


# ---------------------------------------------------------------- listing


def test_fast_listing_pages_by_id_and_stops_on_a_short_page(portal: Portal, fake: FakeBitrix24):
    fake.add_deals([deal_row(i * 3) for i in range(1, 121)])
    rows = list(Bitrix24Rest(portal.id).iter_list("crm.deal.list", {"select": ["ID", "TITLE"]}))
    assert [int(r["ID"]) for r in rows] == [i * 3 for i in range(1, 121)]
    assert len(fake.calls) == 3
    filters = [params["filter"][">ID"] for _, params, _ in fake.calls]
    assert filters == [0, 150, 300]
    assert all(params["start"] == -1 and params["order"] == {"ID": "ASC"} for _, params, _ in fake.calls)


def test_fast_listing_exact_multiple_needs_one_empty_page(portal: Portal, fake: FakeBitrix24):
    fake.add_deals([deal_row(i) for i in range(1, 101)])
    assert len(list(Bitrix24Rest(portal.id).iter_list("crm.deal.list"))) == 100
    assert len(fake.calls) == 3


def test_fast_listing_streams(portal: Portal, fake: FakeBitrix24):
    fake.add_deals([deal_row(i) for i in range(1, 1001)])
    iterator = Bitrix24Rest(portal.id).iter_list("crm.deal.list")
    assert next(iterator)["ID"] == "1"
    assert len(fake.calls) == 1


def test_batched_listing_packs_pages_near_the_floor(portal: Portal, fake: FakeBitrix24):
    ids = [i * 2 + 1 for i in range(50_000)]  # 1000 pages, with gaps in the ids
    fake.add_deals([{"ID": str(i), "TITLE": f"D{i}"} for i in ids])
    rows = Bitrix24Rest(portal.id).iter_list_batched("crm.deal.list", {"select": ["ID", "TITLE"]})
    assert [int(r["ID"]) for r in rows] == ids
    floor = 1000 / 50
    assert len(fake.calls) <= floor * 1.10
    assert fake.methods()[0] == "crm.deal.list" and set(fake.methods()[1:]) == {"batch"}


@pytest.mark.parametrize(("count", "requests"), [(0, 1), (30, 1), (50, 2), (120, 2), (2600, 3)])
def test_batched_listing_yields_every_row_once(portal: Portal, fake: FakeBitrix24, count, requests):
    fake.add_deals([deal_row(i * 7) for i in range(1, count + 1)])
    rows = list(Bitrix24Rest(portal.id).iter_list_batched("crm.deal.list", {"filter": {"CLOSED": "N"}}))
    assert [int(r["ID"]) for r in rows] == [i * 7 for i in range(1, count + 1)]
    assert len(fake.calls) == requests


def test_batched_listing_survives_a_short_page_mid_batch(portal: Portal, fake: FakeBitrix24):
    # The count says 200 rows, but 60 were deleted after it: the chain breaks after a short page,
    # the broken references resolve to garbage, and nothing is yielded twice or lost.
    fake.add_deals([deal_row(i) for i in range(1, 141)])
    original = fake._deal_list

    def stale_total(params):
        answer = original(params)
        if "total" in answer:
            answer["total"] = 200
        return answer

    fake._deal_list = stale_total
    rows = list(Bitrix24Rest(portal.id).iter_list_batched("crm.deal.list"))
    assert [int(r["ID"]) for r in rows] == list(range(1, 141))
