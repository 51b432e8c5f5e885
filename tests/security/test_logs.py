"""No secret reaches a log or a stored body: gunicorn's access log (configured as the Procfile and `make run`
start it) writes paths without query strings and masks the amoCRM webhook secret; the app's log redaction
masks every credential shape; a stored Bitrix24 event keeps no token value."""

from __future__ import annotations

import shlex
import sys
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from flask import Flask
from gunicorn.app.wsgiapp import WSGIApplication

from app.core.db import db
from app.core.logs import redact_text
from app.core.models import InboxItem
from app.local import gunicorn_command
from handlers.b24_payloads import parse_event
from tests.security.conftest import installed_portal

ROOT = Path(__file__).resolve().parents[2]
WEBHOOK_SECRET = "wh-SECRET-4f9a2c"
OAUTH_CODE = "def50200OAUTHCODE"
SIGNATURE = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
REQUESTS = [
    ("POST", f"/amocrm/webhooks/{WEBHOOK_SECRET}", ""),
    ("GET", "/amocrm/oauth", f"code={OAUTH_CODE}&referer=acme.amocrm.ru&state=xyz"),
    ("GET", "/amocrm/uninstall", f"client_uuid=abc&account_id=1&signature={SIGNATURE}"),
    ("POST", "/api/settings", "auth[access_token]=ACCESSTOKEN&auth=PLAIN"),
]
SECRETS = [WEBHOOK_SECRET, OAUTH_CODE, SIGNATURE, "ACCESSTOKEN", "PLAIN", "Bearer-TOKEN-VALUE", "RC-TOKEN-VALUE"]


def procfile_web_args() -> list[str]:
    line = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:"))
    command = line.removeprefix("web:").replace("${PORT:-5000}", "5000").replace("${WEB_CONCURRENCY:-2}", "2")
    args = shlex.split(command)
    assert args[0] == "gunicorn"
    return args[1:]


def access_lines(args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run gunicorn's real access logging, configured by these command-line arguments, on the requests."""
    monkeypatch.setattr(sys, "argv", ["gunicorn", *args])
    monkeypatch.chdir(ROOT)
    application = WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]")
    log_file = tmp_path / "access.log"
    application.cfg.set("accesslog", str(log_file))
    logger = application.cfg.logger_class(application.cfg)
    for method, path, query in REQUESTS:
        raw_uri = f"{path}?{query}" if query else path
        environ = {
            "REQUEST_METHOD": method,
            "RAW_URI": raw_uri,
            "REQUEST_URI": raw_uri,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "203.0.113.5",
            "HTTP_REFERER": f"https://acme.amocrm.ru{raw_uri}",
            "HTTP_USER_AGENT": "amoCRM-Webhooks/3.0",
            "HTTP_AUTHORIZATION": "Bearer Bearer-TOKEN-VALUE",
            "HTTP_X_RC_TOKEN": "RC-TOKEN-VALUE",
        }
        request = SimpleNamespace(
            headers=[("AUTHORIZATION", "Bearer Bearer-TOKEN-VALUE"), ("X-RC-TOKEN", "RC-TOKEN-VALUE")]
        )
        response = SimpleNamespace(status="200 OK", sent=12, headers=[("Content-Type", "application/json")])
        logger.access(response, request, environ, timedelta(milliseconds=3))
    for handler in logger.access_log.handlers:
        handler.flush()
    return log_file.read_text()


@pytest.mark.parametrize("source", ["Procfile", "make run"])
def test_the_access_log_writes_no_secret_from_a_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str):
    if source == "Procfile":
        args = procfile_web_args()
    else:
        command = gunicorn_command("5000")
        args = command[command.index("gunicorn") + 1 :]
    text = access_lines(args, tmp_path, monkeypatch)
    assert len(text.splitlines()) == len(REQUESTS)
    for secret in SECRETS:
        assert secret not in text
    assert '"POST /amocrm/webhooks/*** HTTP/1.1" 200' in text
    assert '"GET /amocrm/oauth HTTP/1.1" 200' in text
    assert '"GET /amocrm/uninstall HTTP/1.1" 200' in text


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("exchange failed for /amocrm/oauth?code=CODE123&referer=x", "CODE123"),
        ("auth=AUTHVALUE&x=1", "AUTHVALUE"),
        ("body auth[application_token]=APPTOKEN&auth[member_id]=m", "APPTOKEN"),
        ("auth%5Baccess_token%5D=ENCODED", "ENCODED"),
        ("headers: Authorization: Bearer BEARERVALUE", "BEARERVALUE"),
        ("client_secret=CLIENTSECRET", "CLIENTSECRET"),
        ('{"refresh_token": "REFRESHVALUE"}', "REFRESHVALUE"),
        ("access_token=ACCESSVALUE", "ACCESSVALUE"),
        ("uninstall?signature=SIGVALUE", "SIGVALUE"),
        ("refused path=/amocrm/webhooks/HOOKSECRET", "HOOKSECRET"),
    ],
)
def test_the_log_redaction_masks_every_credential_shape(text: str, secret: str):
    redacted = redact_text(text)
    assert secret not in redacted
    assert "***" in redacted


def test_a_stored_bitrix24_event_keeps_no_token(app: Flask):
    portal = installed_portal(application_token="APPTOKEN-7f3e")
    common = {
        "event": "ONCRMDEALUPDATE",
        "data[FIELDS][ID]": "42",
        "auth[member_id]": portal.external_id,
        "auth[application_token]": "APPTOKEN-7f3e",
        "auth[domain]": portal.domain,
    }
    by_user = {**common, "ts": "1", "auth[access_token]": "ACCESS-9d1", "auth[refresh_token]": "REFRESH-3b2"}
    by_robot = {**common, "ts": "2"}
    for form in (by_user, by_robot):
        assert app.test_client().post("/b24/events", data=form).status_code == 200
    bodies = db.session.scalars(sa.select(InboxItem.body).order_by(InboxItem.id)).all()
    assert len(bodies) == 2
    for body in bodies:
        for secret in ("APPTOKEN-7f3e", "ACCESS-9d1", "REFRESH-3b2"):
            assert secret not in body
    # The job still tells a user's change from automation's.
    assert parse_event(bodies[0]).auth.has_user_token
    assert not parse_event(bodies[1]).auth.has_user_token
