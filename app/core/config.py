"""Every setting of the app, read from the environment, with embedded defaults."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.core.limits import MAX_BODY_BYTES

QUEUE_NAMES: tuple[str, ...] = ("events", "default", "callbacks", "reports")


def parse_bool(value: str | None, default: bool = False) -> bool:
    """Read a boolean the way people write it in environment files."""
    if value is None or value.strip() == "":
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on", "y"}:
        return True
    if lowered in {"0", "false", "no", "off", "n"}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def parse_int(value: str | None, default: int) -> int:
    """Read an integer setting; empty means the default."""
    if value is None or value.strip() == "":
        return default
    return int(value)


def parse_float(value: str | None, default: float) -> float:
    """Read a decimal setting; empty means the default."""
    if value is None or value.strip() == "":
        return default
    return float(value)


def _secret_key(instance_path: Path, env: Mapping[str, str]) -> str:
    """Use SECRET_KEY, else a random key kept in the instance folder across restarts."""
    if env.get("SECRET_KEY"):
        return env["SECRET_KEY"]
    key_file = instance_path / "secret_key"
    if key_file.exists():
        return key_file.read_text().strip()
    instance_path.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    key_file.write_text(key)
    key_file.chmod(0o600)
    return key


SQLITE_SYNCHRONOUS_MODES = ("NORMAL", "FULL")


def parse_sqlite_synchronous(value: str | None) -> str:
    """SQLite's `synchronous` under WAL: NORMAL (default) or FULL."""
    mode = (value or "NORMAL").strip().upper()
    if mode not in SQLITE_SYNCHRONOUS_MODES:
        raise ValueError(f"SQLITE_SYNCHRONOUS must be one of {', '.join(SQLITE_SYNCHRONOUS_MODES)}, not {value!r}")
    return mode


def normalise_database_url(url: str) -> str:
    """Point plain PostgreSQL URLs at psycopg 3 explicitly."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def load_config(instance_path: Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Build the Flask config mapping from the environment."""
    env = os.environ if env is None else env
    database_url = env.get("DATABASE_URL") or f"sqlite:///{instance_path / 'refusal_control.sqlite3'}"
    return {
        "SECRET_KEY": _secret_key(instance_path, env),
        "DATABASE_URL": normalise_database_url(database_url),
        # WAL + NORMAL: no fsync per commit, never corrupt; a power cut may undo the last commits (README).
        "SQLITE_SYNCHRONOUS": parse_sqlite_synchronous(env.get("SQLITE_SYNCHRONOUS")),
        # None means: connect to the embedded Redis started by the run command.
        "REDIS_URL": env.get("REDIS_URL") or None,
        "EMBEDDED_REDIS_SOCKET": str(instance_path / "redis.sock"),
        "PUBLIC_URL": (env.get("PUBLIC_URL") or "http://127.0.0.1:5000").rstrip("/"),
        "B24_CLIENT_ID": env.get("B24_CLIENT_ID", ""),
        "B24_CLIENT_SECRET": env.get("B24_CLIENT_SECRET", ""),
        "B24_OAUTH_SERVER": (env.get("B24_OAUTH_SERVER") or "https://oauth.bitrix.info").rstrip("/"),
        # The BX24 JS library the Bitrix24 pages load (the demo points it at the sandbox's compatible shim).
        "B24_JS_URL": env.get("B24_JS_URL") or "https://api.bitrix24.com/api/v1/",
        # Bitrix24 REST: per-portal rate limit (leaky bucket, reference/bitrix24.md section 12) and
        # the share of it we hold back so network jitter never trips QUERY_LIMIT_EXCEEDED.
        "B24_RATE": parse_float(env.get("B24_RATE"), 2.0),
        "B24_BURST": parse_int(env.get("B24_BURST"), 50),
        "B24_RATE_HEADROOM": parse_float(env.get("B24_RATE_HEADROOM"), 0.05),
        "B24_RATE_JITTER_SECONDS": parse_float(env.get("B24_RATE_JITTER_SECONDS"), 1.0),
        "B24_RATE_MAX_WAIT_SECONDS": parse_float(env.get("B24_RATE_MAX_WAIT_SECONDS"), 120.0),
        "B24_HTTP_TIMEOUT": parse_float(env.get("B24_HTTP_TIMEOUT"), 60.0),
        "B24_RETRY_ATTEMPTS": parse_int(env.get("B24_RETRY_ATTEMPTS"), 4),
        "B24_RETRY_BASE_DELAY": parse_float(env.get("B24_RETRY_BASE_DELAY"), 1.0),
        "B24_RETRY_MAX_DELAY": parse_float(env.get("B24_RETRY_MAX_DELAY"), 30.0),
        "B24_REFRESH_LOCK_SECONDS": parse_float(env.get("B24_REFRESH_LOCK_SECONDS"), 30.0),
        "AMO_CLIENT_ID": env.get("AMO_CLIENT_ID", ""),
        "AMO_CLIENT_SECRET": env.get("AMO_CLIENT_SECRET", ""),
        "AMO_REDIRECT_URI": env.get("AMO_REDIRECT_URI", ""),
        # Hosts we accept as an account's `referer`: our client secret is sent there on the code exchange.
        "AMO_HOST_SUFFIXES": tuple(
            s.strip().lower()
            for s in (env.get("AMO_HOST_SUFFIXES") or ".amocrm.ru,.amocrm.com,.kommo.com").split(",")
            if s.strip()
        ),
        # A port after an account host (acme.amocrm.ru:8443) only where this is set: never in production.
        "AMO_ALLOW_HOST_PORT": parse_bool(env.get("AMO_ALLOW_HOST_PORT"), False),
        "AMO_AUTHORIZE_URL": env.get("AMO_AUTHORIZE_URL") or "https://www.amocrm.ru/oauth",
        # amoCRM allows 7 req/s per integration (reference/amocrm.md section 9).
        "AMO_RATE": parse_float(env.get("AMO_RATE"), 7.0),
        "AMO_BURST": parse_int(env.get("AMO_BURST"), 7),
        "AMO_HTTP_TIMEOUT": parse_float(env.get("AMO_HTTP_TIMEOUT"), 30.0),
        "AMO_RETRY_ATTEMPTS": parse_int(env.get("AMO_RETRY_ATTEMPTS"), 4),
        "AMO_RETRY_BASE_DELAY": parse_float(env.get("AMO_RETRY_BASE_DELAY"), 1.0),
        "AMO_RETRY_MAX_DELAY": parse_float(env.get("AMO_RETRY_MAX_DELAY"), 30.0),
        "AMO_BLOCK_PAUSE_SECONDS": parse_int(env.get("AMO_BLOCK_PAUSE_SECONDS"), 900),
        "AMO_REFRESH_LOCK_SECONDS": parse_float(env.get("AMO_REFRESH_LOCK_SECONDS"), 30.0),
        # Hosts (suffixes) a call note's recording link may point to besides the account's own host; empty
        # means any public host. Links are fetched without credentials and never to private addresses.
        "AMO_RECORDING_HOSTS": tuple(
            s.strip().lower() for s in (env.get("AMO_RECORDING_HOSTS") or "").split(",") if s.strip()
        ),
        "LOG_LEVEL": (env.get("LOG_LEVEL") or "INFO").upper(),
        "JOB_TIMEOUT_SECONDS": parse_int(env.get("JOB_TIMEOUT_SECONDS"), 180),
        # Recovery from a worker killed mid-job (README, Deploying): a running job is reported alive every
        # JOB_HEARTBEAT_SECONDS and counts as abandoned JOB_HEARTBEAT_GRACE_SECONDS after its last report;
        # every WORKER_MAINTENANCE_SECONDS a worker looks for abandoned jobs and runs them again.
        "JOB_HEARTBEAT_SECONDS": parse_int(env.get("JOB_HEARTBEAT_SECONDS"), 5),
        "JOB_HEARTBEAT_GRACE_SECONDS": parse_int(env.get("JOB_HEARTBEAT_GRACE_SECONDS"), 10),
        "WORKER_MAINTENANCE_SECONDS": parse_int(env.get("WORKER_MAINTENANCE_SECONDS"), 10),
        # `flask worker` runs the events queue's jobs in-process in a supervised child (no fork per job) and
        # the other queues in a forking RQ worker; 0 runs one forking RQ worker for every queue (as before).
        "WORKER_IN_PROCESS": parse_bool(env.get("WORKER_IN_PROCESS"), True),
        # The in-process child is replaced after this many jobs (bounded memory growth).
        "WORKER_MAX_JOBS": parse_int(env.get("WORKER_MAX_JOBS"), 1000),
        # A job of the in-process child that would wait longer than this for its portal's CRM rate-limiter
        # slot is put back for when the slot frees, instead of holding the worker asleep.
        "WORKER_LIMITER_WAIT_SECONDS": parse_float(env.get("WORKER_LIMITER_WAIT_SECONDS"), 1.0),
        # The per-deal lock: a lease renewed every third of DEAL_LOCK_SECONDS while its holder runs, so a
        # dead holder blocks the deal for at most that long; a decision waits up to DEAL_LOCK_WAIT_SECONDS.
        "DEAL_LOCK_SECONDS": parse_float(env.get("DEAL_LOCK_SECONDS"), 15.0),
        "DEAL_LOCK_WAIT_SECONDS": parse_float(env.get("DEAL_LOCK_WAIT_SECONDS"), 120.0),
        # Processed inbox rows (each a whole webhook body) are deleted after this many days; 0 keeps them all.
        "INBOX_RETENTION_DAYS": parse_int(env.get("INBOX_RETENTION_DAYS"), 30),
        # How long a web process trusts a Bitrix24 portal's application token once it matched (handlers/bitrix24.py).
        "TENANT_CACHE_SECONDS": parse_float(env.get("TENANT_CACHE_SECONDS"), 10.0),
        # Every inbound body, chunked or not, is refused with 413 past this many bytes (app/core/limits.py).
        "MAX_CONTENT_LENGTH": parse_int(env.get("MAX_BODY_BYTES"), MAX_BODY_BYTES),
        "SANDBOX_ENABLED": parse_bool(env.get("SANDBOX_ENABLED"), default=False),
        # Where the demo's sandbox portal runs (set by `make run`); /sandbox is forwarded there.
        "SANDBOX_URL": (env.get("SANDBOX_URL") or "").rstrip("/"),
        "QUEUE_NAMES": QUEUE_NAMES,
        "TESTING": False,
    }
