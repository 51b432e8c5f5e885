"""Fixtures for the CRM client tests: the sandbox portal behind `responses` and our row for it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
import responses
from flask import Flask

from app.core.models import Portal
from sandbox import Clock, Sandbox, TlsServer, responses_sandbox, serve_tls
from sandbox.state import Portal as SandboxPortal
from tests.helpers import make_portal

DOMAIN = "member-a.bitrix24.test"

B24_TEST_CONFIG: dict[str, Any] = {
    "B24_RETRY_BASE_DELAY": 0.01,
    "B24_RETRY_MAX_DELAY": 1.0,
    "B24_RETRY_ATTEMPTS": 4,
    "B24_REFRESH_LOCK_SECONDS": 15.0,
    "B24_RATE": 500.0,
    "B24_BURST": 500,
}


def sandbox_config(sandbox: Sandbox, portal: SandboxPortal, oauth_host: str | None = None) -> dict[str, Any]:
    """Our Bitrix24 settings for an app registered on a sandbox portal (fast retries, a roomy limiter)."""
    return {
        **B24_TEST_CONFIG,
        "B24_OAUTH_SERVER": f"https://{oauth_host or sandbox.oauth_host}",
        "B24_CLIENT_ID": portal.client_id,
        "B24_CLIENT_SECRET": portal.client_secret,
    }


def empty_portal(sandbox: Sandbox, domain: str = DOMAIN) -> SandboxPortal:
    """A seeded portal (users, funnels, stages) without deals, its leaky bucket switched off."""
    portal = sandbox.seed_portal(domain=domain, deals=0)
    sandbox.set_rate_limit(portal, enabled=False)
    return portal


def portal_row(sandbox: Sandbox, portal: SandboxPortal, *, user_id: int | None = None, **fields: Any) -> Portal:
    """Our committed row for a sandbox portal, holding a fresh token pair issued to `user_id` (an admin)."""
    tokens = sandbox.issue_tokens(portal, user_id)
    rest_base = fields.pop("rest_base", portal.client_endpoint)
    return make_portal(
        portal.member_id,
        domain=fields.pop("domain", urlsplit(rest_base).netloc),
        rest_base=rest_base,
        access_token=fields.pop("access_token", tokens["access_token"]),
        refresh_token=fields.pop("refresh_token", tokens["refresh_token"]),
        status=fields.pop("status", "active"),
        **fields,
    )


@dataclass
class B24Env:
    """The sandbox, its portal, the `responses` mock serving it, and our row."""

    sandbox: Sandbox
    portal: SandboxPortal
    mock: responses.RequestsMock
    row: Portal

    def requests_sent(self) -> list[str]:
        """Every HTTP request that left the app for the portal or the OAuth server, as `host/path`."""
        return [f"{urlsplit(c.request.url).netloc}{urlsplit(c.request.url).path}" for c in self.mock.calls]

    def rest_requests(self) -> list[str]:
        """The REST methods requested over HTTP, in order (auth failures included)."""
        return [
            urlsplit(c.request.url).path.removeprefix("/rest/").removesuffix(".json")
            for c in self.mock.calls
            if urlsplit(c.request.url).path.startswith("/rest/")
        ]

    def statuses(self, method: str) -> list[int]:
        """What the portal answered to each executed call of `method` (direct or inside a batch)."""
        return [call.status for call in self.sandbox.calls(self.portal, method)]


@dataclass
class TlsPortal:
    """The sandbox served over HTTPS on a local port, one portal on it, and our row for it."""

    sandbox: Sandbox
    server: TlsServer
    portal: SandboxPortal
    row: Portal
    config: dict[str, Any]


@pytest.fixture
def tls_portal(app: Flask, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsPortal]:
    """A sandbox portal reachable over real TLS (for other processes): its REST base is
    https://127.0.0.1:<port>/rest/, the OAuth server https://localhost:<port>."""
    sandbox = Sandbox()
    server = serve_tls(sandbox, tmp_path_factory.getbasetemp() / "sandbox-tls")
    try:
        portal = empty_portal(sandbox, server.portal_domain)
        config = sandbox_config(sandbox, portal, server.oauth_host)
        app.config.update(config)
        yield TlsPortal(sandbox, server, portal, portal_row(sandbox, portal), config)
    finally:
        server.shutdown()


@pytest.fixture
def clock() -> Clock:
    """The sandbox's clock (tests may override with a ManualClock)."""
    return Clock()


@pytest.fixture
def sandbox(clock: Clock) -> Sandbox:
    return Sandbox(clock=clock)


@pytest.fixture
def sb_portal(sandbox: Sandbox) -> SandboxPortal:
    return empty_portal(sandbox)


@pytest.fixture
def b24_app(app: Flask, sandbox: Sandbox, sb_portal: SandboxPortal) -> Flask:
    """The app registered on the sandbox portal, with fast retries."""
    app.config.update(sandbox_config(sandbox, sb_portal))
    return app


@pytest.fixture
def mock(sandbox: Sandbox, sb_portal: SandboxPortal) -> Iterator[responses.RequestsMock]:
    """requests to the portal and the OAuth server are served by the sandbox in-process."""
    with responses_sandbox(sandbox) as rsps:
        yield rsps


@pytest.fixture
def b24(b24_app: Flask, sandbox: Sandbox, sb_portal: SandboxPortal, mock: responses.RequestsMock) -> B24Env:
    """Everything wired: our row holds an admin's valid token pair."""
    return B24Env(sandbox, sb_portal, mock, portal_row(sandbox, sb_portal))


@pytest.fixture
def portal(b24: B24Env) -> Portal:
    """Our committed, active row with a valid access token."""
    return b24.row
