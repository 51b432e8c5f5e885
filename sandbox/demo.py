"""The demo behind `make run`: a sandbox Bitrix24 portal in the launcher's process, with the app installed in it.

The launcher (app.local) owns the sandbox: its state lives in memory in that one process, so the
portal's REST API, its OAuth server and its kanban (/sandbox) are all served there, over TLS on a
local port with a generated certificate. The web and worker processes reach the portal like a real
one (REQUESTS_CA_BUNDLE trusts the sandbox CA); the sandbox's events go to the app over HTTP from a
background delivery thread; the app forwards /sandbox on its own address to the sandbox.

The app is installed the way Bitrix24 does it: the install frame is POSTed to /b24/install, the
worker runs the installer job, then `install_app` (BX24.installFinish) fires ONAPPINSTALL.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import certifi
import requests
import sqlalchemy as sa
from flask import Flask

from app.core.db import db
from app.core.models import Portal
from app.domain import audit, exchange
from app.domain.exchange import set_rota, update_exchange_settings
from app.domain.penalties import update_cpl_settings
from app.domain.settings import update_guard_settings
from sandbox import Sandbox, TlsServer, requests_transport
from sandbox.seed import HEAD_OF_SALES, QA_USERS, SALES_MANAGERS
from sandbox.state import Portal as SandboxPortal

log = logging.getLogger(__name__)

DEMO_GUARD = {"qa_users": [str(user) for user in QA_USERS], "heads": [str(HEAD_OF_SALES)]}
# The lead exchange's pool: a portal user who holds the leads nobody has taken yet (demo only; the seeded
# portal of the tests keeps its 11 people).
POOL_USER = 12
SALES_DEPARTMENT = 2
# Lead costs by source, so a fine is never «0 ₽» in the demo.
DEMO_CPL = {
    "currency": "RUB",
    "default": "3000",
    "by_source": {"CALL": "4500", "WEB": "2500", "ADVERTISING": "3500", "EMAIL": "1500", "WEBFORM": "2000"},
}
# «Повторные продажи» routes new web leads to the lead exchange; «Тендеры» to the sales manager on duty
# (a rota of the sales department for the next two weeks). «Общая» stays the guard's story.
DEMO_EXCHANGE = {
    "pipelines": {
        "1": {"mode": "exchange", "pool_user": str(POOL_USER), "incoming_sources": ["WEB"], "cap": 20},
        "2": {"mode": "duty", "pool_user": str(POOL_USER), "duty_department": str(SALES_DEPARTMENT)},
    }
}


class DemoError(RuntimeError):
    """The demo could not be brought up; the message says what to do."""


@dataclass
class Demo:
    """The running sandbox portal and how the app's processes must be configured to reach it."""

    sandbox: Sandbox
    server: TlsServer
    portal: SandboxPortal
    ca_bundle: Path
    public_url: str

    @property
    def url(self) -> str:
        """The sandbox's own base URL (REST, OAuth and the kanban)."""
        return f"https://{self.server.portal_domain}"

    def child_env(self) -> dict[str, str]:
        """Settings for the web and worker processes: this portal's app credentials, its OAuth server, its CA."""
        return {
            "REQUESTS_CA_BUNDLE": str(self.ca_bundle),
            "B24_OAUTH_SERVER": f"https://{self.server.oauth_host}",
            "B24_CLIENT_ID": self.portal.client_id,
            "B24_CLIENT_SECRET": self.portal.client_secret,
            "PUBLIC_URL": self.public_url,
            "SANDBOX_URL": self.url,
            "B24_JS_URL": f"{self.public_url}/sandbox/api/v1/",
        }

    def stop(self) -> None:
        """Stop delivering events and serving."""
        self.sandbox.stop_delivery_thread()
        self.server.shutdown()


def _ca_bundle(cert_dir: Path, sandbox_ca: Path) -> Path:
    """The public CAs plus the sandbox CA, so the app still trusts real hosts while trusting the sandbox."""
    bundle = cert_dir / "ca-bundle.pem"
    bundle.write_bytes(Path(certifi.where()).read_bytes() + b"\n" + sandbox_ca.read_bytes())
    return bundle


def start(instance: Path, public_url: str, port: int = 0, deals: int = 30) -> Demo:
    """Seed a fresh portal (new member_id and app credentials every run) and serve it over TLS."""
    sandbox = Sandbox()
    try:
        server = TlsServer(sandbox, instance / "sandbox-tls", "127.0.0.1", port)
    except OSError as error:
        raise DemoError(f"the sandbox cannot listen on port {port}: {error}; set SANDBOX_PORT") from error
    portal = sandbox.seed_portal(
        domain=server.portal_domain,
        member_id=secrets.token_hex(16),
        application_token=secrets.token_hex(16),
        client_id=f"local.{secrets.token_hex(7)}.{secrets.randbelow(90_000_000) + 10_000_000}",
        client_secret=secrets.token_urlsafe(37)[:50],
        installed=False,
        app_url=public_url,
        deals=deals,
    )
    portal.users[POOL_USER] = {
        **portal.users[2],
        "ID": POOL_USER,
        "NAME": "Биржа",
        "LAST_NAME": "лидов",
        "WORK_POSITION": "Пул лидов (биржа)",
        "EMAIL": "pool@sandbox.local",
        "UF_DEPARTMENT": [1],
        "IS_ADMIN": False,
        "ACTIVE": True,
    }
    server.start()
    sandbox.start_delivery_thread(transport=requests_transport(timeout=30))
    return Demo(sandbox, server, portal, _ca_bundle(Path(server.tls.ca_cert.parent), server.tls.ca_cert), public_url)


def forget_previous_portals(app: Flask, demo: Demo) -> int:
    """Sandbox portals of earlier runs are gone with their process: mark them uninstalled so no job calls them."""
    with app.app_context():
        rows = db.session.scalars(
            sa.select(Portal).where(
                Portal.crm == Portal.BITRIX24,
                Portal.external_id != demo.portal.member_id,
                Portal.status != "uninstalled",
                sa.or_(Portal.rest_base.like("https://127.0.0.1:%"), Portal.rest_base.like("https://localhost:%")),
            )
        ).all()
        for row in rows:
            row.status = "uninstalled"
            row.uninstalled_at = datetime.now(UTC)
            row.access_token = None
            row.refresh_token = None
            audit.record(row.id, "launcher", "uninstall", "uninstalled", "sandbox portal of an earlier run")
        db.session.commit()
        return len(rows)


def _wait(what: str, check: Callable[[], bool], timeout: float, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise DemoError(f"stopped while waiting for {what}")
        if check():
            return
        time.sleep(0.2)
    raise DemoError(f"timed out waiting for {what}")


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code < 500
    except requests.RequestException:
        return False


def install(app: Flask, demo: Demo, alive: Callable[[], bool], timeout: float = 120.0) -> int:
    """Install the app into the sandbox portal as an admin would, and set up the guard for the demo.
    Returns our portal id. `alive()` turning false (Ctrl+C, a child died) aborts the wait."""
    sandbox, portal, public_url = demo.sandbox, demo.portal, demo.public_url
    _wait("the web server", lambda: _answers(f"{public_url}/healthz"), 60, alive)
    tokens = sandbox.issue_tokens(portal)
    frame = {
        "AUTH_ID": tokens["access_token"],
        "AUTH_EXPIRES": "3600",
        "REFRESH_ID": tokens["refresh_token"],
        "SERVER_ENDPOINT": tokens["server_endpoint"],
        "member_id": portal.member_id,
        "APPLICATION_TOKEN": portal.application_token,
        "status": portal.status,
        "PLACEMENT": "DEFAULT",
    }
    page = requests.post(
        f"{public_url}/b24/install",
        params={"DOMAIN": portal.domain, "PROTOCOL": "1", "LANG": portal.language, "APP_SID": secrets.token_hex(8)},
        data=frame,
        timeout=30,
    )
    if page.status_code != 200:
        raise DemoError(f"the install page answered {page.status_code}: {page.text[:300]}")

    state: dict[str, str] = {}

    def installed() -> bool:
        with app.app_context():
            row = db.session.scalar(sa.select(Portal).where(Portal.external_id == portal.member_id))
            state.update(status=row.status if row else "", detail=row.status_detail if row else "")
            db.session.remove()
        if state["status"] == "install_failed":
            raise DemoError(f"the installer failed: {state['detail']}")
        return state["status"] == "installed"

    _wait("the installer job", installed, timeout, alive)
    sandbox.install_app(portal, install_url=f"{public_url}/b24/events")  # BX24.installFinish(): ONAPPINSTALL
    with app.app_context():
        row = db.session.scalar(sa.select(Portal).where(Portal.external_id == portal.member_id))
        assert row is not None
        update_guard_settings(row, DEMO_GUARD)
        update_cpl_settings(row, DEMO_CPL)
        update_exchange_settings(row, DEMO_EXCHANGE)
        today = exchange.portal_day(row, datetime.now(UTC))
        set_rota(
            row.id,
            str(SALES_DEPARTMENT),
            {today + timedelta(days=n): str(SALES_MANAGERS[n % len(SALES_MANAGERS)]) for n in range(14)},
        )
        audit.record(row.id, "launcher", "settings", "demo exchange", "pipeline 1: exchange; pipeline 2: duty rota")
        audit.record(row.id, "launcher", "settings", "demo guard settings", "QA 7, 8; head of sales 9")
        audit.record(row.id, "launcher", "settings", "demo CPL table", "by source, default 3000 RUB")
        db.session.commit()
        portal_id = row.id
        db.session.remove()
    _wait("the install event", lambda: bool(sandbox.deliveries) and not sandbox.pending_events(), 30, alive)
    return portal_id
