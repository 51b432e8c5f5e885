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

SECRET_KEY_PATTERN = re.compile(
    r"(token|secret|password|passwd|auth_id|refresh_id|authorization|signature|^code$|^auth$)",
    re.IGNORECASE,
)
# Catches secrets embedded in free text: "access_token=abc", "auth[refresh_token]=abc", '"AUTH_ID": "abc"'.
SECRET_IN_TEXT = re.compile(
    r"""(?P<key>[\w\[\]]*(?:token|secret|password|AUTH_ID|REFRESH_ID|client_secret|signature)[\w\]]*)"""
    r"""(?P<sep>["']?\s*[=:]\s*["']?)(?P<value>[^\s&"',;}]+)""",
    re.IGNORECASE,
)
MASK = "***"
REQUEST_ID_KEY = "refusal_control.request_id"
RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


def redact_text(text: str) -> str:
    """Mask values that follow a secret-looking key inside free text."""
    return SECRET_IN_TEXT.sub(lambda m: f"{m.group('key')}{m.group('sep')}{MASK}", text)


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


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time of the call (redirects and captures keep working)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
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
