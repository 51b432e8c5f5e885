"""SSRF through events (issue 16, "medium"): a portal's REST base comes only from the OAuth server.

Before the fix an ONAPPINSTALL with the right application token set `rest_base` from
`auth[client_endpoint]`, so every later REST call, with our tokens, went to any https address
(internal ones included). Now the endpoint of an event is ignored (the event itself is processed),
and every request that carries the `auth` token goes to the verified portal origin.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from flask import Flask

from app.core.db import db
from app.crm.bitrix24 import Bitrix24Rest
from tests.helpers import make_portal
from tests.security.b24_env import (
    ADMIN,
    MANAGER,
    Env,
    guard_reverts_an_illegal_move,
    install_and_guard,
    sandbox_env,
    sent_token,
)

INTERNAL = ("https://169.254.169.254/rest/", "https://127.0.0.1:6379/")


@pytest.fixture
def env(app: Flask) -> Iterator[Env]:
    with sandbox_env(app) as opened:
        yield opened


@pytest.fixture
def guarded(env: Env) -> Env:
    return install_and_guard(env)


def _hosts_that_got_a_token(env: Env, start: int = 0) -> set[str]:
    return {urlsplit(call.request.url).netloc for call in list(env.transport.calls)[start:] if sent_token(call)}


@pytest.mark.parametrize("endpoint", INTERNAL)
def test_an_install_event_naming_an_internal_endpoint_changes_no_rest_base(guarded: Env, endpoint: str):
    verified = guarded.snapshot()["rest_base"]
    auth = {**guarded.auth_block(ADMIN), "client_endpoint": endpoint}
    answer = guarded.event("ONAPPINSTALL", auth, VERSION="1", INSTALLED="Y")
    assert answer.status_code == 200
    assert guarded.b24.our_portal().rest_base == verified
    # A deal event naming the endpoint is processed with the endpoint ignored.
    deal_auth = {**guarded.auth_block(MANAGER), "client_endpoint": endpoint}
    assert guarded.event("ONCRMDEALUPDATE", deal_auth, FIELDS={"ID": "1"}).status_code == 200
    guarded.b24.work()
    assert guarded.b24.our_portal().rest_base == verified
    start = len(guarded.transport.calls)
    guard_reverts_an_illegal_move(guarded.b24)
    assert _hosts_that_got_a_token(guarded, start) == {guarded.b24.portal.domain}


def test_a_first_install_takes_the_rest_base_app_info_confirmed_not_the_events(env: Env):
    """A brand-new portal: the frame stores what app.info said; the install event's endpoint is ignored."""
    b24 = env.b24
    assert b24.open_install_page().status_code == 200
    b24.work()
    b24.sandbox.install_app(b24.portal)  # no handler URL: we POST the event ourselves, with a planted endpoint
    auth = {**env.auth_block(ADMIN), "client_endpoint": INTERNAL[0]}
    assert env.event("ONAPPINSTALL", auth, VERSION="1", INSTALLED="Y").status_code == 200
    assert b24.our_portal().rest_base == b24.portal.client_endpoint


def test_every_request_carrying_our_token_goes_to_the_verified_portal(env: Env):
    """A transport-level spy over a whole install and guard flow, with the SSRF attempt in the middle: the
    `auth` token never leaves the portal's origin; the OAuth server gets only the token it is asked about."""
    b24 = env.b24
    install_and_guard(env)
    for endpoint in INTERNAL:
        env.event("ONAPPINSTALL", {**env.auth_block(ADMIN), "client_endpoint": endpoint}, VERSION="1")
    guard_reverts_an_illegal_move(b24)
    portal_host = urlsplit(b24.portal.client_endpoint).netloc
    oauth_host = b24.sandbox.oauth_host
    calls = list(env.transport.calls)
    assert calls, "the spy saw no request"
    for call in calls:
        token = sent_token(call)
        if token is None:
            continue
        url = urlsplit(call.request.url)
        assert url.scheme == "https"
        if url.netloc == oauth_host:
            assert url.path.rstrip("/").endswith("app.info"), call.request.url
        else:
            assert url.netloc == portal_host, call.request.url


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://evil.example@a.bitrix24.test/rest/",
        "https://a.bitrix24.test%2F@evil.example/rest/",
        " https://a.bitrix24.test/rest/",
        "https://a.bitrix24.test\\@evil.example/rest/",
    ],
)
def test_a_refresh_answer_with_an_unclean_endpoint_keeps_the_rest_base(app: Flask, endpoint: str):
    portal = make_portal("member-r", rest_base="https://member-r.bitrix24.test/rest/", status="installed")
    answer = {"access_token": "a", "refresh_token": "r", "expires_in": 3600, "client_endpoint": endpoint}
    Bitrix24Rest(portal.id)._store_tokens(portal, answer)
    assert portal.rest_base == "https://member-r.bitrix24.test/rest/"
    # The configured OAuth server is trusted (a portal's domain can change): a clean https origin moves it.
    answer = {"access_token": "a", "refresh_token": "r", "client_endpoint": "https://renamed.bitrix24.test/rest/"}
    Bitrix24Rest(portal.id)._store_tokens(portal, answer)
    assert (portal.rest_base, portal.domain) == ("https://renamed.bitrix24.test/rest/", "renamed.bitrix24.test")
    db.session.rollback()
