"""Connection reuse (app.crm.connections): one keep-alive session per portal and process, counted on a
real TLS server; what a reused session refuses to do; the Bitrix24 request is the SDK's own."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.cookiejar import Cookie
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3.util.connection
from b24pysdk.api.callers import call_method
from flask import Flask

from app.core.models import Portal
from app.crm.amocrm.client import AmoRest
from app.crm.bitrix24.client import Bitrix24Rest
from app.crm.connections import OriginSession, SessionRegistry, _NoCookies, sessions
from app.crm.errors import CrmUnavailable
from app.crm.hosts import ForeignHost
from sandbox import Sandbox, serve_tls
from sandbox.amocrm.server import create_amo_app
from tests.crm.conftest import TlsPortal, empty_portal
from tests.helpers import make_portal
from tests.integration.amo import make_amo

CALLS = 5


@pytest.fixture(autouse=True)
def fresh_sessions() -> Iterator[None]:
    sessions.clear()
    yield
    sessions.clear()


@pytest.fixture
def trust_sandbox(tls_portal: TlsPortal, monkeypatch: pytest.MonkeyPatch) -> TlsPortal:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tls_portal.server.ca_file)
    return tls_portal


# ---- Bitrix24 over real TLS


def test_sequential_calls_share_one_connection(app: Flask, trust_sandbox: TlsPortal) -> None:
    rest = Bitrix24Rest(trust_sandbox.row.id, app=app)
    for _ in range(CALLS):
        assert rest.call("profile")["ID"]
    assert trust_sandbox.server.connections == 1
    # a new client object for the same portal (the next job in this process) keeps the connection
    assert Bitrix24Rest(trust_sandbox.row.id, app=app).call("profile")
    assert trust_sandbox.server.connections == 1


def test_two_portals_two_connections(app: Flask, trust_sandbox: TlsPortal) -> None:
    other_sandbox = Sandbox()
    other_server = serve_tls(other_sandbox, trust_sandbox.server.tls.ca_cert.parent)  # the same CA
    try:
        other = empty_portal(other_sandbox, other_server.portal_domain)
        row = _other_row(other_sandbox, other)
        first, second = Bitrix24Rest(trust_sandbox.row.id, app=app), Bitrix24Rest(row.id, app=app)
        for _ in range(CALLS):
            assert first.call("profile") and second.call("profile")
        assert (trust_sandbox.server.connections, other_server.connections) == (1, 1)
        assert len(sessions) == 2
    finally:
        other_server.shutdown()


def _other_row(sandbox: Sandbox, portal: Any) -> Portal:
    tokens = sandbox.issue_tokens(portal, None)
    return make_portal(
        f"{portal.member_id}-2",
        domain=portal.client_endpoint.split("/")[2],
        rest_base=portal.client_endpoint,
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
        status="active",
    )


def test_a_connection_the_server_dropped_is_replaced(app: Flask, trust_sandbox: TlsPortal) -> None:
    rest = Bitrix24Rest(trust_sandbox.row.id, app=app)
    assert rest.call("profile") and rest.call("profile")
    trust_sandbox.server.drop_connections()
    time.sleep(0.1)
    for _ in range(3):
        assert rest.call("profile")
    assert trust_sandbox.server.connections == 2


def test_threads_of_one_process_share_the_portal_session(app: Flask, trust_sandbox: TlsPortal) -> None:
    """The web process serves pages from several threads: they all call through the one session."""
    portal_id = trust_sandbox.row.id
    errors: list[BaseException] = []

    def work() -> None:
        with app.app_context():
            try:
                rest = Bitrix24Rest(portal_id, app=app)
                for _ in range(CALLS):
                    assert rest.call("profile")["ID"]
            except BaseException as error:
                errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors and len(sessions) == 1
    assert 1 <= trust_sandbox.server.connections <= 4  # at most one per thread calling at the same moment


def test_a_transport_error_drops_the_session(app: Flask, trust_sandbox: TlsPortal) -> None:
    rest = Bitrix24Rest(trust_sandbox.row.id, app=app)
    assert rest.call("profile")
    broken = sessions.get("bitrix24", trust_sandbox.row.id, trust_sandbox.row.rest_base or "")
    trust_sandbox.server.shutdown()
    with pytest.raises(CrmUnavailable):
        rest.call("profile")
    assert sessions.get("bitrix24", trust_sandbox.row.id, trust_sandbox.row.rest_base or "") is not broken


def test_the_request_is_the_one_call_method_sends(app: Flask, portal: Portal, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same URL, method, body and headers (but the per-request id) as b24pysdk's call_method."""
    sent: list[requests.PreparedRequest] = []

    def answer(_adapter: Any, request: requests.PreparedRequest, **_kwargs: Any) -> requests.Response:
        sent.append(request)
        response = requests.Response()
        response.status_code, response._content, response.url = 200, b'{"result": {"ID": 1}}', request.url or ""
        response.headers["Content-Type"] = "application/json"
        return response

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", answer)
    params = {"id": 17, "fields": {"STAGE_ID": "NEW", "UF_X": ["a", "б"]}}
    assert Bitrix24Rest(portal.id, app=app).call("crm.deal.update", params) == {"ID": 1}
    call_method(
        domain=portal.domain, auth_token=portal.access_token or "", is_webhook=False,
        api_method="crm.deal.update", params=params, timeout=5, max_retries=1,
    )  # fmt: skip
    ours, sdk = sent
    assert (
        (ours.method, ours.url)
        == (sdk.method, sdk.url)
        == ("POST", f"https://{portal.domain}/rest/crm.deal.update.json")
    )
    assert json.loads(ours.body or b"") == json.loads(sdk.body or b"")
    skip = {"x-request-id"}
    assert {k.lower(): v for k, v in ours.headers.items() if k.lower() not in skip} == {
        k.lower(): v for k, v in sdk.headers.items() if k.lower() not in skip
    }


# ---- what a reused session refuses


def test_a_session_talks_only_to_its_origin() -> None:
    session = OriginSession("https://member-a.bitrix24.test/rest/")
    for url in (
        "https://evil.example/rest/profile.json",
        "https://member-a.bitrix24.test:8443/rest/profile.json",
        "http://member-a.bitrix24.test/rest/profile.json",
        "https://member-a.bitrix24.test.evil.example/",
    ):
        with pytest.raises(ForeignHost):
            session.post(url, json={"auth": "secret"}, timeout=1)
    with pytest.raises(ForeignHost):
        OriginSession("http://member-a.bitrix24.test/")


def test_a_session_keeps_no_cookies() -> None:
    jar = _NoCookies()
    cookie = Cookie(0, "PHPSESSID", "x", None, False, "member-a.bitrix24.test", True, False, "/", True, True,
                    None, False, None, None, {})  # fmt: skip
    jar.set_cookie(cookie)
    assert len(jar) == 0
    assert isinstance(OriginSession("https://member-a.bitrix24.test/").cookies, _NoCookies)


def test_the_registry_is_bounded_and_replaces_idle_or_moved_sessions() -> None:
    registry = SessionRegistry(limit=2, idle_seconds=60)
    first = registry.get("bitrix24", 1, "https://a.bitrix24.test/rest/")
    assert registry.get("bitrix24", 1, "https://a.bitrix24.test/rest/") is first
    registry.get("bitrix24", 2, "https://b.bitrix24.test/rest/")
    registry.get("bitrix24", 3, "https://c.bitrix24.test/rest/")
    assert len(registry) == 2 and registry.get("bitrix24", 1, "https://a.bitrix24.test/rest/") is not first
    moved = registry.get("bitrix24", 1, "https://new.bitrix24.test/rest/")
    assert moved.origin == ("https", "new.bitrix24.test", 443)
    idle = SessionRegistry(idle_seconds=0.0)
    once = idle.get("amocrm", 1, "https://acme.amocrm.ru/")
    time.sleep(0.01)
    assert idle.get("amocrm", 1, "https://acme.amocrm.ru/") is not once


def test_a_forked_child_makes_its_own_session() -> None:
    parent = sessions.get("bitrix24", 1, "https://a.bitrix24.test/rest/")
    pid = os.fork()
    if pid == 0:  # the child: the parent's session is forgotten and refuses to send from here
        code = 0
        try:
            if len(sessions) != 0 or sessions.get("bitrix24", 1, "https://a.bitrix24.test/rest/") is parent:
                code = 1
            try:
                parent.get("https://a.bitrix24.test/rest/profile.json", timeout=1)
                code = 2
            except RuntimeError:
                pass
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert sessions.get("bitrix24", 1, "https://a.bitrix24.test/rest/") is parent


# ---- amoCRM over real TLS (the account's name resolved to the local server)

AMO_HOST = "acme.amocrm.ru"


def _without_port(app: Any) -> Any:
    """The amoCRM sandbox picks the account by Host; the local server's port is not part of its name."""

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        environ["HTTP_HOST"] = environ.get("HTTP_HOST", "").split(":", 1)[0]
        return app(environ, start_response)

    return wsgi


def test_amocrm_calls_share_one_connection(app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox, account = make_amo(app, subdomain="acme")
    assert account.domain == AMO_HOST
    server = serve_tls(
        sandbox, tmp_path / "amo-tls", wsgi_app=_without_port(create_amo_app(sandbox)), names=(AMO_HOST,)
    )
    connect = urllib3.util.connection.create_connection

    def local(address: tuple[str, int], *args: Any, **kwargs: Any) -> Any:
        host, port = address
        return connect(("127.0.0.1" if host == AMO_HOST else host, port), *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", local)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", server.ca_file)
    app.config["AMO_ALLOW_HOST_PORT"] = True
    try:
        host = f"{AMO_HOST}:{server.port}"
        tokens = sandbox.issue_tokens(account)
        row = make_portal(
            str(account.id), crm=Portal.AMOCRM, domain=host, rest_base=f"https://{host}", status="installed",
            access_token=tokens["access_token"], refresh_token=tokens["refresh_token"],
            token_expires_at=datetime.now(UTC) + timedelta(hours=20),
        )  # fmt: skip
        rest = AmoRest(row.id, app=app)
        for _ in range(CALLS):
            assert rest.get("/api/v4/account")["id"] == account.id
        assert server.connections == 1
        server.drop_connections()
        time.sleep(0.1)
        assert AmoRest(row.id, app=app).get("/api/v4/account")["id"] == account.id
        assert server.connections == 2
    finally:
        server.shutdown()
