"""Structured logging: one JSON line per event, with tenant and request/job ids, never secrets."""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

from flask import Flask, g, has_request_context, request
from gunicorn import glogging

SECRET_KEY_PATTERN = re.compile(
    r"(token|secret|password|passwd|auth_id|refresh_id|authorization|signature|^code$|^auth$)",
    re.IGNORECASE,
)
# Catches secrets embedded in free text: "access_token=abc", "auth[refresh_token]=abc", '"AUTH_ID": "abc"',
# "client_secret=abc", "signature=abc", "code=abc", "auth=abc", "auth[member_id]=abc" (any auth[...] value).
SECRET_IN_TEXT = re.compile(
    r"""(?P<key>(?:[\w\[\]]*(?:token|secret|password|AUTH_ID|REFRESH_ID|signature)[\w\]]*)"""
    r"""|(?<![\w\[])(?:code|auth)\b(?:(?:\[|%5B)[^\]\s=&]*(?:\]|%5D))*)"""
    r"""(?P<sep>["']?\s*(?:=|:)\s*["']?)(?P<value>[^\s&"',;}]+)""",
    re.IGNORECASE,
)
# "Authorization: Bearer abc", "bearer abc".
BEARER = re.compile(r"(?P<key>\bBearer\s+)(?P<value>[^\s\"',;}]+)", re.IGNORECASE)
# The amoCRM webhook URL carries the account's secret as its last segment.
WEBHOOK_PATH = re.compile(r"(?P<key>/amocrm/webhooks/)(?P<value>[^/?#\s\"']+)", re.IGNORECASE)
MASK = "***"
REQUEST_ID_KEY = "refusal_control.request_id"
RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


def redact_text(text: str) -> str:
    """Mask values that follow a secret-looking key inside free text, Bearer tokens and webhook secrets."""
    text = SECRET_IN_TEXT.sub(lambda m: f"{m.group('key')}{m.group('sep')}{MASK}", text)
    text = BEARER.sub(lambda m: f"{m.group('key')}{MASK}", text)
    return WEBHOOK_PATH.sub(lambda m: f"{m.group('key')}{MASK}", text)


def safe_path(path: str) -> str:
    """A request path fit for a log: no query string, the amoCRM webhook secret masked."""
    return WEBHOOK_PATH.sub(lambda m: f"{m.group('key')}{MASK}", path.split("?", 1)[0])


def redact(value: Any, key: str = "") -> Any:
    """Return a copy of a structure with secret-looking keys masked."""
    if key and SECRET_KEY_PATTERN.search(key) and not isinstance(value, dict | list):
        return MASK if value not in (None, "") else value
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def request_id() -> str:
    """The current request's id: X-Request-ID when the caller sent one, else a fresh one; fixed at first use.

    Given when a request first logs, not up front (most webhooks log nothing), and kept in the request's
    own environ, which no other request shares.
    """
    environ = request.environ
    current = environ.get(REQUEST_ID_KEY)
    if current is None:
        current = request.headers.get("X-Request-ID") or uuid.uuid4().hex
        environ[REQUEST_ID_KEY] = current
    return str(current)


def _current_job_id() -> str | None:
    try:
        from rq import get_current_job

        job = get_current_job()
    except Exception:  # noqa: BLE001 - logging must never fail because RQ is unavailable
        return None
    return job.id if job is not None else None


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": redact_text(record.getMessage()),
        }
        if has_request_context():
            payload["request_id"] = request_id()
            portal_id = getattr(g, "portal_id", None)
            if portal_id is not None:
                payload["portal_id"] = portal_id
        job_id = _current_job_id()
        if job_id:
            payload["job_id"] = job_id
        for key, value in record.__dict__.items():
            if key not in RESERVED and not key.startswith("_"):
                payload[key] = redact(value, key)
        if record.exc_info:
            payload["exc"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(payload, ensure_ascii=False, default=str)


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of the call (redirects and captures keep working)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def init_app(app: Flask) -> None:
    """Send the app's and RQ's logs to stderr as JSON lines."""
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not isinstance(h.formatter, JsonFormatter)]
    root.addHandler(handler)
    root.setLevel(app.config["LOG_LEVEL"])
    for noisy in ("urllib3", "b24pysdk"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# Atoms of gunicorn's access log that carry a request's credentials: headers ({name}i) and the environ ({name}e).
_SECRET_ATOMS = frozenset(
    {
        "{authorization}i",
        "{cookie}i",
        "{x-auth-token}i",
        "{x-rc-token}i",
        "{http_authorization}e",
        "{http_cookie}e",
        "{http_x_auth_token}e",
        "{http_x_rc_token}e",
    }
)


class AccessLogger(glogging.Logger):
    """gunicorn's logger, whose access log never writes a query string, a webhook secret or a credential.

    `%(r)s` (the request line), `%(U)s` and the RAW_URI/PATH_INFO environ atoms are the path as routed
    (PATH_INFO, so a percent-encoded path cannot hide the webhook secret) through `safe_path`; `%(q)s` and
    QUERY_STRING are empty; the referer keeps only its path; credential headers are masked.
    """

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        atoms = super().atoms(resp, req, environ, request_time)
        path = safe_path(str(environ.get("PATH_INFO") or "/"))
        referer = environ.get("HTTP_REFERER")
        atoms.update(
            {
                "r": f"{environ.get('REQUEST_METHOD', '-')} {path} {environ.get('SERVER_PROTOCOL', '-')}",
                "U": path,
                "q": "",
                "f": safe_path(str(referer)) if referer else "-",
                "{raw_uri}e": path,
                "{path_info}e": path,
                "{request_uri}e": path,
                "{query_string}e": "",
                "{http_referer}e": atoms["f"],
                "{referer}i": atoms["f"],
            }
        )
        for key in _SECRET_ATOMS & atoms.keys():
            atoms[key] = MASK
        return atoms
