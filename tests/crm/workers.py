"""Bodies of the processes the concurrency tests spawn (importable by a fresh interpreter).

Each one is a worker of ours talking to the sandbox served over TLS by the test process: the portal's
REST base and the OAuth server come from the app config and the portal row, the sandbox's CA from
REQUESTS_CA_BUNDLE.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from app.crm.bitrix24 import Bitrix24Rest
from tests.conftest import make_app


def _app(database_url: str, instance_path: str, config: dict[str, Any], ca_file: str) -> Any:
    os.environ["REQUESTS_CA_BUNDLE"] = ca_file
    return make_app(database_url, Path(instance_path), **config)


def refresh_worker(
    database_url: str,
    instance_path: str,
    config: dict[str, Any],
    ca_file: str,
    portal_id: int,
    deal_id: int,
    barrier: Any,
    out: Any,
) -> None:
    """Meet an expired token together with another process; report what happened here."""
    report: dict[str, Any] = {}
    try:
        app = _app(database_url, instance_path, config, ca_file)
        with app.app_context():
            rest = Bitrix24Rest(portal_id)
            barrier.wait(timeout=60)
            report["deal"] = rest.call("crm.deal.get", {"id": deal_id})["ID"]
            report["requests"] = rest.requests_sent
    except Exception as error:  # reported to the test, which fails on it
        report["error"] = repr(error)
    out.put(report)


def burst_worker(
    database_url: str,
    instance_path: str,
    config: dict[str, Any],
    ca_file: str,
    portal_id: int,
    calls: int,
    barrier: Any,
    out: Any,
) -> None:
    """Send `calls` requests as fast as the shared limiter allows."""
    report: dict[str, Any] = {}
    try:
        app = _app(database_url, instance_path, config, ca_file)
        with app.app_context():
            rest = Bitrix24Rest(portal_id)
            barrier.wait(timeout=60)
            for _ in range(calls):
                rest.call("app.info")
            report["requests"] = rest.requests_sent
    except Exception as error:  # reported to the test, which fails on it
        report["error"] = repr(error)
    out.put(report)
