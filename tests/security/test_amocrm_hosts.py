"""amoCRM: our client secret and tokens go only to the verified account host, the account id comes from
that host, recordings are fetched from the address that was checked, and a captured uninstall URL is
harmless. Each test is one of the attacks of issue 16 and passed (the attack worked) before the fix."""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
import requests
import responses
import sqlalchemy as sa
from flask import Flask

from app.core.db import db
from app.core.models import AuditEntry, Portal
from app.crm import amocrm
from app.crm.amocrm import AmoRest
from app.crm.errors import CrmError, CrmUnavailable
from app.crm.hosts import ForeignHost
from sandbox.amocrm import mount_amo_responses
from sandbox.mount import make_tls_files
from tests.helpers import make_portal
from tests.integration.amo import APP_URL, Amo, make_amo

ANY_URL: re.Pattern[str] = re.compile(r".*")
PUBLIC_ADDRESS = "93.184.216.34"
TELEPHONY = "records.telephony.test"
# What the admin-only `GET /api/v4/users?limit=1` answers an administrator's token with (the OAuth check).
ADMINS_USERS_PAGE = {"_page": 1, "_embedded": {"users": [{"id": 1, "rights": {"is_admin": True}}]}}


def _catch_all(mock: responses.RequestsMock, pattern: re.Pattern[str] = ANY_URL) -> None:
    """Answer every request matching `pattern` (so an attack that sends one would get through) with a
    token-shaped body."""
    token = jwt.encode({"account_id": 1, "sub": "1"}, "k", algorithm="HS256")
    body = json.dumps({"access_token": token, "refresh_token": "r", "expires_in": 86400, "id": 1})
    for method in ("GET", "POST", "PATCH", "DELETE"):
        mock.add_callback(method, pattern, callback=lambda _request: (200, {}, body))


@pytest.fixture
def amo_mock(app: Flask) -> Iterator[tuple[Amo, responses.RequestsMock]]:
    """The sandbox account behind `responses`; anything else is answered by a catch-all; the mock counts."""
    sandbox, account = make_amo(app)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_amo_responses(sandbox, mock)
        served = "|".join(re.escape(host) for host in (account.domain, TELEPHONY))
        _catch_all(mock, re.compile(rf"^(?!https://(?:{served})(?:/|$)).*"))
        yield Amo(app=app, client=app.test_client(), sandbox=sandbox, account=account), mock


@pytest.fixture
def amo(amo_mock: tuple[Amo, responses.RequestsMock]) -> Amo:
    return amo_mock[0]


@pytest.fixture
def spy(app: Flask) -> Iterator[responses.RequestsMock]:
    """No CRM at all: every outbound request is recorded and answered as if it had worked."""
    app.config.update(AMO_CLIENT_ID="our-client", AMO_CLIENT_SECRET="our-secret", AMO_REDIRECT_URI=f"{APP_URL}/o")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        _catch_all(mock)
        yield mock


# ---- the OAuth redirect: a referer that is not a bare amoCRM host sends nothing ----------------------


@pytest.mark.parametrize(
    "referer",
    [
        "evil.example?.amocrm.ru",  # the review's attacks: the parsed host is evil.example
        "evil.example#.amocrm.ru",
        "evil.example\\.amocrm.ru",
        "evil.example/.amocrm.ru",
        "acme.amocrm.ru@evil.example",  # userinfo
        "evil.example@acme.amocrm.ru",
        "evil.example:443@acme.amocrm.ru",
        "evil.example。amocrm.ru",  # unicode dots fold into "." under IDNA
        "evil.example．amocrm.ru",
        "acme.amocrm.ru.",  # trailing dot
        "[::1].amocrm.ru",  # IPv6
        "[::ffff:7f00:1]",
        "127.0.0.1",
        "evil.example%2f.amocrm.ru",  # percent-encoding
        "evil.example%3f.amocrm.ru",
        "evil.example .amocrm.ru",  # whitespace
        "evil.example\t.amocrm.ru",
        "evil.example\x00.amocrm.ru",  # NUL
        "acme.amocrm.ru:8443",  # a port, where configuration does not allow one
        "amocrm.ru",
    ],
)
def test_oauth_with_a_referer_that_is_not_a_bare_amocrm_host_sends_nothing(
    spy: responses.RequestsMock, app: Flask, referer: str
) -> None:
    response = app.test_client().get("/amocrm/oauth", query_string={"code": "x", "referer": referer, "from_widget": 1})
    assert response.status_code == 400
    assert "referer" in response.get_json()["message"]
    assert len(spy.calls) == 0  # neither our client secret nor anything else left
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Portal)) == 0


def test_the_token_request_checks_the_host_itself(spy: responses.RequestsMock, app: Flask) -> None:
    with pytest.raises(ForeignHost):
        amocrm.oauth_token_request("evil.example?.amocrm.ru", {"grant_type": "authorization_code", "code": "x"})
    assert len(spy.calls) == 0


def test_a_redirect_from_the_account_host_takes_neither_the_secret_nor_the_token_elsewhere(app: Flask) -> None:
    """amoCRM's own host answering 307 elsewhere: requests would re-POST the body (our client secret) there."""
    app.config.update(AMO_CLIENT_ID="our-client", AMO_CLIENT_SECRET="our-secret", AMO_REDIRECT_URI=f"{APP_URL}/o")
    portal = make_portal(
        "30441695",
        crm=Portal.AMOCRM,
        domain="acme.amocrm.ru",
        rest_base="https://acme.amocrm.ru",
        status="installed",
        access_token="our-token",
        token_expires_at=datetime.now(UTC) + timedelta(hours=20),
    )
    elsewhere = {"Location": "https://evil.example/steal"}
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.POST, "https://acme.amocrm.ru/oauth2/access_token", status=307, headers=elsewhere)
        mock.add(responses.GET, "https://acme.amocrm.ru/api/v4/account", status=307, headers=elsewhere)
        mock.add(responses.POST, "https://evil.example/steal", json={"access_token": "a", "refresh_token": "r"})
        mock.add(responses.GET, "https://evil.example/steal", json={"id": 1})
        with pytest.raises(CrmError):
            amocrm.oauth_token_request("acme.amocrm.ru", {"grant_type": "authorization_code", "code": "x"})
        with pytest.raises(CrmError):
            AmoRest(portal.id).get("/api/v4/account")
        assert [call.request.url for call in mock.calls if "evil.example" in call.request.url] == []


# ---- the account id comes from the verified host, not from the token's claims ----------------------


def test_a_forged_account_id_claim_does_not_take_over_another_account(amo: Amo) -> None:
    victim = amo.install()
    victim_tokens = (victim.access_token, victim.refresh_token)
    mallory_host = "mallory.amocrm.ru"
    forged = jwt.encode({"account_id": amo.account.id, "sub": "1"}, "any-key", algorithm="HS256")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mallory:
        # Mallory's own account on a genuine amoCRM host hands out a token whose unverified claims name
        # the victim; the host itself, asked with that token, tells the truth about which account it is.
        token = {"access_token": forged, "refresh_token": "mallory-refresh", "expires_in": 86400}
        mallory.add(responses.POST, f"https://{mallory_host}/oauth2/access_token", json=token)
        mallory.add(responses.GET, f"https://{mallory_host}/api/v4/account", json={"id": 666, "current_user_id": 5})
        mallory.add(responses.GET, f"https://{mallory_host}/api/v4/users", json=ADMINS_USERS_PAGE)  # she is its admin
        response = amo.client.get(
            "/amocrm/oauth", query_string={"code": "x", "referer": mallory_host, "from_widget": "1"}
        )
    assert response.status_code == 200
    after = amo.our_portal()
    assert after.domain == amo.account.domain and after.rest_base == f"https://{amo.account.domain}"
    assert (after.access_token, after.refresh_token) == victim_tokens
    own = db.session.scalar(sa.select(Portal).where(Portal.external_id == "666"))
    assert own is not None and own.domain == mallory_host and own.access_token == forged


def test_a_known_account_on_a_new_host_moves_only_when_that_host_says_so_and_the_move_is_audited(amo: Amo) -> None:
    portal = amo.install()
    renamed = "acme-renamed.amocrm.ru"
    with responses.RequestsMock(assert_all_requests_are_fired=False) as amocrm_ru:
        token = {"access_token": "t2", "refresh_token": "r2", "expires_in": 86400}
        amocrm_ru.add(responses.POST, f"https://{renamed}/oauth2/access_token", json=token)
        amocrm_ru.add(responses.GET, f"https://{renamed}/api/v4/account", json={"id": amo.account.id})
        amocrm_ru.add(responses.GET, f"https://{renamed}/api/v4/users", json=ADMINS_USERS_PAGE)
        response = amo.client.get("/amocrm/oauth", query_string={"code": "x", "referer": renamed, "from_widget": "1"})
    assert response.status_code == 200
    moved = amo.our_portal()
    assert moved.id == portal.id and moved.domain == renamed and moved.rest_base == f"https://{renamed}"
    entry = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.attempted == "host_change"))
    assert entry is not None and amo.account.domain in entry.reason and renamed in entry.reason


# ---- a tampered portal row never gets a token --------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "rest_base"),
    [
        ("evil.example", "https://evil.example"),  # both rewritten to a foreign host
        ("evil.example?.amocrm.ru", "https://evil.example?.amocrm.ru"),
        ("beta.amocrm.ru", None),  # another account's host, the verified REST base unchanged
        ("acme.amocrm.ru", "https://evil.example"),  # the REST base alone rewritten
    ],
)
def test_a_tampered_account_host_gets_no_api_call_and_no_refresh(
    amo_mock: tuple[Amo, responses.RequestsMock], domain: str, rest_base: str | None
) -> None:
    amo, mock = amo_mock
    portal = amo.install()
    values: dict[str, Any] = {"domain": domain}
    if rest_base is not None:
        values["rest_base"] = rest_base
    db.session.execute(sa.update(Portal).where(Portal.id == portal.id).values(**values))
    db.session.commit()
    sent = len(amo.sandbox.account(amo.account).calls)
    before = len(mock.calls)
    with pytest.raises(ForeignHost):
        AmoRest(portal.id).get("/api/v4/account")
    rest = AmoRest(portal.id)
    with pytest.raises(ForeignHost):
        rest.refresh(portal.access_token or "")
    db.session.execute(
        sa.update(Portal).where(Portal.id == portal.id).values(token_expires_at=datetime.now(UTC) - timedelta(hours=1))
    )
    db.session.commit()
    with pytest.raises(ForeignHost):
        AmoRest(portal.id).get("/api/v4/leads")  # an expired token: the refresh is refused first
    assert len(mock.calls) == before
    assert len(amo.sandbox.account(amo.account).calls) == sent
    stored = amo.our_portal()
    assert stored.refresh_token == portal.refresh_token and stored.status == "installed"


# ---- recordings: the connection goes to the checked address ------------------------------------------


@pytest.fixture
def account_rest(app: Flask) -> AmoRest:
    portal = make_portal(
        "30441694",
        crm=Portal.AMOCRM,
        domain="acme.amocrm.ru",
        rest_base="https://acme.amocrm.ru",
        status="installed",
        access_token="our-token",
        token_expires_at=datetime.now(UTC) + timedelta(hours=20),
    )
    return AmoRest(portal.id)


def test_dns_rebinding_cannot_move_the_recording_fetch_to_our_network(
    account_rest: AmoRest, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_getaddrinfo = socket.getaddrinfo
    answers = iter([PUBLIC_ADDRESS, "127.0.0.1", "127.0.0.1", "127.0.0.1"])

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == TELEPHONY:  # first a public address for the check, then loopback for anyone asking again
            address = next(answers)
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port or 443))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    targets: list[Any] = []
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and address[1] == 443:
            targets.append(address[0])
            raise ConnectionRefusedError("test: recorded, not connected")
        real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr(socket.socket, "connect", connect)
    with pytest.raises(CrmUnavailable):
        account_rest.download(f"https://{TELEPHONY}/recordings/1.mp3")
    assert targets and set(targets) == {PUBLIC_ADDRESS}


class _Recording(BaseHTTPRequestHandler):
    hosts: list[str] = []

    def do_GET(self) -> None:
        _Recording.hosts.append(self.headers.get("Host", ""))
        body = b"ID3-audio"
        self.send_response(200)
        self.send_header("Content-Type", "audio/mpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        return


@pytest.fixture
def tls_recording_server(tmp_path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """An HTTPS server on 127.0.0.1 whose certificate names only TELEPHONY; yields (port, CA file, SNI seen)."""
    files = make_tls_files(tmp_path / "tls", hosts=(TELEPHONY,))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(files.cert), str(files.key))
    sni: list[str] = []
    context.sni_callback = lambda _sock, name, _ctx: sni.append(name or "")  # type: ignore[assignment,misc]
    server = HTTPServer(("127.0.0.1", 0), _Recording)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Recording.hosts = []
    try:
        yield server.server_port, str(files.ca_cert), sni
    finally:
        server.shutdown()
        server.server_close()


def test_a_pinned_connection_keeps_sni_and_certificate_checks_against_the_host_name(
    tls_recording_server: tuple[int, str, list[str]],
) -> None:
    port, ca_file, sni = tls_recording_server
    session = requests.Session()
    session.mount("https://", amocrm.PinnedAdapter(TELEPHONY, "127.0.0.1"))
    answer = session.get(f"https://{TELEPHONY}:{port}/recordings/1.mp3", verify=ca_file, timeout=5)
    assert answer.status_code == 200 and answer.content == b"ID3-audio"
    assert sni == [TELEPHONY] and _Recording.hosts == [f"{TELEPHONY}:{port}"]
    # the same address under a name its certificate does not carry: refused by TLS verification
    other = requests.Session()
    other.mount("https://", amocrm.PinnedAdapter("other.telephony.test", "127.0.0.1"))
    with pytest.raises(requests.exceptions.SSLError):
        other.get(f"https://other.telephony.test:{port}/recordings/1.mp3", verify=ca_file, timeout=5)
    # and a pinned transport is never used for another host
    with pytest.raises(ForeignHost):
        session.get(f"https://evil.example:{port}/", verify=ca_file, timeout=5)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v4/users",
        "/api/v4/account",
        "/oauth2/access_token",
        "/recordings/../api/v4/users",
        "/recordings/%2e%2e/api/v4/users",
        "/recordings/..%2fapi/v4/users",
        "/recordings%2f../api/v4/users",
    ],
)
def test_our_token_goes_to_the_account_host_only_for_recording_paths(
    spy: responses.RequestsMock, account_rest: AmoRest, path: str
) -> None:
    with pytest.raises(CrmError) as refused:
        account_rest.download(f"https://acme.amocrm.ru{path}")
    assert refused.value.code == "FOREIGN_URL"
    assert len(spy.calls) == 0


@pytest.mark.parametrize("content_type", ["text/html", "application/json", "application/ogg", "video/mp4", ""])
def test_only_audio_is_streamed_back(account_rest: AmoRest, monkeypatch: pytest.MonkeyPatch, content_type: str) -> None:
    monkeypatch.setattr("app.crm.amocrm.client.resolve_addresses", lambda host: {PUBLIC_ADDRESS})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        headers = {"Content-Type": content_type} if content_type else {}
        mock.add(responses.GET, f"https://{TELEPHONY}/recordings/1.mp3", body=b"<html>", headers=headers)
        with pytest.raises(CrmError) as refused:
            account_rest.download(f"https://{TELEPHONY}/recordings/1.mp3")
    assert refused.value.code == "FOREIGN_URL"


# ---- the uninstall hook: a captured URL is harmless after a reinstall --------------------------------


def test_a_replayed_uninstall_url_does_not_uninstall_a_reinstalled_account(amo: Amo) -> None:
    amo.install()
    captured = amo.sandbox.uninstall(amo.account, f"{APP_URL}/amocrm/uninstall")
    assert amo.client.get(captured).status_code == 200
    assert amo.our_portal().status == "uninstalled"
    amo.install()  # the admin installs the integration again
    reinstalled = amo.our_portal()
    replay = amo.client.get(captured)
    assert replay.status_code == 409 and replay.get_json()["message"]
    after = amo.our_portal()
    assert after.status == "installed" and after.access_token and after.refresh_token == reinstalled.refresh_token
    refused = db.session.scalar(
        sa.select(AuditEntry).where(AuditEntry.attempted == "uninstall", AuditEntry.outcome == "refused")
    )
    assert refused is not None
    # the genuine second removal (amoCRM signs exactly the same string) is still honoured
    genuine = amo.sandbox.uninstall(amo.account, f"{APP_URL}/amocrm/uninstall")
    assert genuine == captured
    assert amo.client.get(genuine).status_code == 200
    assert amo.our_portal().status == "uninstalled"


def test_an_uninstall_amocrm_cannot_confirm_changes_nothing(amo: Amo) -> None:
    portal = amo.install()
    url = amo.sandbox.uninstall(amo.account, f"{APP_URL}/amocrm/uninstall")
    amo.sandbox.account(amo.account).installed = True  # still installed, but amoCRM does not answer
    with responses.RequestsMock(assert_all_requests_are_fired=False) as down:
        down.add(responses.GET, re.compile(r"https://acme\.amocrm\.ru/.*"), body=requests.ConnectionError("down"))
        response = amo.client.get(url)
    assert response.status_code == 503 and response.get_json()["message"]
    after = amo.our_portal()
    assert after.status == "installed" and after.refresh_token == portal.refresh_token


# ---- a whole flow through a transport spy: our credentials reach the account host and nothing else -----


def _carries_credentials(request: Any) -> bool:
    body = request.body.decode() if isinstance(request.body, bytes) else str(request.body or "")
    return "Authorization" in request.headers or "client_secret" in body or "refresh_token" in body


def test_every_request_with_our_secret_or_token_in_a_whole_flow_goes_to_the_account_host(
    amo_mock: tuple[Amo, responses.RequestsMock],
) -> None:
    """Install, a guarded move (read, revert, notice) and a token refresh after expiry: every request carrying
    the client secret, a refresh token or a bearer token went to the account's own host over https."""
    from tests.integration.amo import MANAGER, new_lead
    from tests.integration.b24 import configure_guard

    amo, mock = amo_mock
    portal = amo.install()
    configure_guard(portal)
    lead_id = new_lead(amo)
    amo.sandbox.act(amo.account, MANAGER).move_lead(lead_id, 143)
    amo.settle()
    assert amo.status(lead_id) != 143  # the guard worked: the move was reverted
    db.session.execute(
        sa.update(Portal).where(Portal.id == portal.id).values(token_expires_at=datetime.now(UTC) - timedelta(hours=1))
    )
    db.session.commit()
    AmoRest(portal.id).get("/api/v4/account")  # refreshes first
    with_credentials = [call.request for call in mock.calls if _carries_credentials(call.request)]
    assert len(with_credentials) >= 5
    for request in with_credentials:
        url = urlsplit(request.url)
        assert (url.scheme, url.netloc) == ("https", amo.account.domain), request.url
