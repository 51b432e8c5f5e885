"""One body cap for every inbound route, enforced while the body is read: a 100 MB chunked POST is refused
with a JSON 413 after at most the cap was read, through the Flask test client and through a real gunicorn."""

from __future__ import annotations

import io
import os
import select
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import jwt
import pytest
from flask import Flask
from werkzeug.test import EnvironBuilder

from app.core.db import db
from app.core.limits import MAX_BODY_BYTES
from app.core.models import ExchangeLot, Penalty, Portal, RefusalCase
from tests.helpers import make_portal
from tests.security.conftest import ADMIN, MANAGER, gunicorn_env, headers, installed_portal

ROOT = Path(__file__).resolve().parents[2]
HUNDRED_MB = 100 * 1024 * 1024


class EndlessBody(io.RawIOBase):
    """A request body that produces `total` bytes on demand and counts what the app read."""

    def __init__(self, total: int, prefix: bytes = b"") -> None:
        super().__init__()
        self.total = total
        self.read_bytes = 0
        self._prefix = prefix

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        size = min(len(buffer), self.total - self.read_bytes)
        head = self._prefix[self.read_bytes : self.read_bytes + size]
        buffer[:size] = head + b"a" * (size - len(head))
        self.read_bytes += size
        return size


def chunked(app: Flask, method: str, path: str, body: EndlessBody, content_type: str, **extra: str):
    """Send `body` as a chunked request does arrive from gunicorn: no Content-Length, and the server marks
    the stream as ended by itself (`wsgi.input_terminated`; Werkzeug's own server does the same for chunked
    bodies)."""
    environ = EnvironBuilder(path=path, method=method, content_type=content_type, headers=extra).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ.update({"wsgi.input": body, "wsgi.input_terminated": True, "HTTP_TRANSFER_ENCODING": "chunked"})
    return app.response_class.from_app(app, environ, buffered=True)


ROUTES = [
    ("POST", "/b24/events", "application/x-www-form-urlencoded", b"event=ONCRMDEALUPDATE&auth[member_id]="),
    ("POST", "/b24/robots/refusal_check", "application/x-www-form-urlencoded", b"code=x&auth[member_id]="),
    ("POST", "/b24/app", "application/x-www-form-urlencoded", b"AUTH_ID=x&member_id="),
    ("POST", "/amocrm/webhooks/some-secret", "application/x-www-form-urlencoded", b"account[id]=1&leads="),
    ("POST", "/amocrm/dp/robots", "application/x-www-form-urlencoded", b"account_id=1&x="),
    ("PUT", "/api/settings", "application/json", b'{"qa_users": ["'),
]


@pytest.mark.parametrize(("method", "path", "content_type", "prefix"), ROUTES)
def test_a_100_mb_chunked_body_is_refused_after_reading_at_most_the_cap(
    app: Flask, method: str, path: str, content_type: str, prefix: bytes
):
    portal = installed_portal()
    body = EndlessBody(HUNDRED_MB, prefix)
    answer = chunked(app, method, path, body, content_type, **headers(portal, ADMIN, admin=True))
    assert answer.status_code == 413, answer.get_data(as_text=True)[:300]
    assert answer.get_json()["error"] == "too_large"
    assert str(MAX_BODY_BYTES) in answer.get_json()["message"]
    assert body.read_bytes <= MAX_BODY_BYTES + 64 * 1024


def test_an_announced_oversized_body_is_refused_before_reading_with_the_same_answer(app: Flask):
    answer = app.test_client().post(
        "/b24/events", data=b"a" * (MAX_BODY_BYTES + 1), content_type="application/x-www-form-urlencoded"
    )
    assert answer.status_code == 413
    assert answer.get_json()["error"] == "too_large"


def test_a_chunked_body_under_the_cap_is_read_whole_as_before(app: Flask):
    installed_portal()
    form = b"event=ONCRMDEALUPDATE&auth[member_id]=member-sec&auth[application_token]=wrong"
    body = EndlessBody(MAX_BODY_BYTES, form + b"&filler=")
    answer = chunked(app, "POST", "/b24/events", body, "application/x-www-form-urlencoded")
    # Exactly at the cap: read to the end and judged on its content (the token is wrong), not refused for size.
    assert answer.status_code == 401
    assert body.read_bytes == MAX_BODY_BYTES


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "gunicorn exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("gunicorn did not start")


def _send_chunked(port: int, path: str, total: int) -> tuple[bytes, int]:
    """POST `total` bytes as chunks of 64 KB; stop as soon as the server answers. (answer, bytes sent)."""
    chunk = b"a" * 65536
    frame = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n\r\n".encode()
        )
        try:
            while sent < total:
                readable, _, _ = select.select([connection], [], [], 0)
                if readable:
                    break
                connection.sendall(frame)
                sent += len(chunk)
            else:
                connection.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while not answer.endswith(b"}") and len(answer) < 65536:
                data = connection.recv(65536)
                if not data:
                    break
                answer += data
        except ConnectionResetError:
            pass
    return answer, sent


@pytest.mark.slow
def test_a_real_gunicorn_refuses_a_100_mb_chunked_post_without_reading_it(app: Flask):
    installed_portal()
    port = _free_port()
    env = {**os.environ, **gunicorn_env(app)}
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1", "wsgi:app"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, process)
        answer, sent = _send_chunked(port, "/b24/events", HUNDRED_MB)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"too_large"' in answer
    # The server answered while the client was still sending: what was sent is the cap plus socket buffers.
    assert sent < 16 * 1024 * 1024


# -- JSON nested too deep ----------------------------------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000
JSON_ROUTES = [
    ("PUT", "/api/settings"),
    ("PUT", "/api/settings/cpl"),
    ("PUT", "/api/settings/reports"),
    ("POST", "/api/penalties/{penalty}/appeal"),
    ("PUT", "/api/exchange/settings"),
    ("PUT", "/api/exchange/rota"),
    ("POST", "/api/exchange/lots/{lot}/return"),
    ("PUT", "/api/review/settings"),
    ("POST", "/api/review/cases/{case}/actions/confirm"),
    ("PUT", "/api/taskcontrol/settings"),
]


def _rows(portal) -> dict[str, int]:
    case = RefusalCase(portal_id=portal.id, deal_id="5", pipeline_id="0", manager_id=MANAGER, reason="price")
    lot = ExchangeLot(portal_id=portal.id, deal_id="6", pipeline_id="0", status="taken", holder_id=ADMIN)
    db.session.add_all([case, lot])
    db.session.flush()
    fine = Penalty(
        portal_id=portal.id,
        manager_id=MANAGER,
        case_id=case.id,
        deal_id="5",
        kind=Penalty.PENALTY,
        amount=Decimal("500"),
        currency="RUB",
        rule="portal_default",
        reason="leaked client",
        created_by="guard",
    )
    db.session.add(fine)
    db.session.commit()
    return {"case": case.id, "lot": lot.id, "penalty": fine.id}


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
def test_json_nested_100_000_deep_is_a_400_on_every_json_route(app: Flask, method: str, path: str):
    portal = installed_portal(settings={"guard": {"heads": [ADMIN], "qa_users": [ADMIN]}})
    url = path.format(**_rows(portal))
    answer = app.test_client().open(
        url, method=method, data=DEEP, content_type="application/json", headers=headers(portal, ADMIN, admin=True)
    )
    assert answer.status_code == 400, answer.get_data(as_text=True)[:300]
    body = answer.get_json()
    assert body == {"error": "bad_request", "message": body["message"], "code": "bad_json", "text": body["text"]}
    assert "nested" in body["message"]
    assert body["text"] == "Страница отправила неверный запрос. Обновите страницу и повторите."


def test_json_nested_100_000_deep_is_a_400_on_the_amocrm_widget_session(app: Flask):
    app.config.update(
        AMO_CLIENT_ID="client-uuid",
        AMO_CLIENT_SECRET="client-secret-that-is-long-enough-for-hs256",
        PUBLIC_URL="https://app.test",
    )
    portal = make_portal("30441694", crm=Portal.AMOCRM, domain="acme.amocrm.ru", status="installed")
    claims = {
        "account_id": int(portal.external_id),
        "client_uuid": "client-uuid",
        "jti": "jti-deep-json",
        "user_id": 1,
        "is_admin": True,
        "aud": "https://app.test",
        "exp": int(time.time()) + 600,
    }
    answer = app.test_client().post(
        "/amocrm/widget/session",
        data=DEEP,
        content_type="application/json",
        headers={"X-Auth-Token": jwt.encode(claims, "client-secret-that-is-long-enough-for-hs256", algorithm="HS256")},
    )
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "bad_request"
