"""Bodies of the processes the concurrency tests spawn (importable by a fresh interpreter)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import responses

from app.crm.bitrix24 import Bitrix24Rest
from tests.conftest import make_app
from tests.crm.conftest import B24_TEST_CONFIG
from tests.crm.fake_b24 import FakeBitrix24, deal_row


def refresh_worker(database_url: str, instance_path: str, portal_id: int, tag: str, barrier: Any, out: Any) -> None:
    """Meet an expired token together with another process; report what happened here."""
    app = make_app(database_url, Path(instance_path), **B24_TEST_CONFIG)
    fake = FakeBitrix24()
    fake.token_filter = lambda token: "expired" if token == "token-1" else "ok"
    fake.issue_prefix = f"token-{tag}"
    fake.refresh_delay = 0.5
    fake.add_deals([deal_row(5)])
    report: dict[str, Any] = {"tag": tag}
    try:
        with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps, app.app_context():
            fake.install(rsps)
            rest = Bitrix24Rest(portal_id)
            barrier.wait(timeout=60)
            report["deal"] = rest.call("crm.deal.get", {"id": 5})["ID"]
    except Exception as error:  # reported to the test, which fails on it
        report["error"] = repr(error)
    report["refreshes"] = len(fake.refreshes)
    report["tokens"] = fake.tokens_seen
    out.put(report)


def burst_worker(
    database_url: str, instance_path: str, portal_id: int, calls: int, overrides: dict[str, Any], barrier: Any, out: Any
) -> None:
    """Send `calls` requests as fast as the shared limiter allows; report when each reached the portal."""
    app = make_app(database_url, Path(instance_path), **B24_TEST_CONFIG, **overrides)
    fake = FakeBitrix24()
    fake.results["app.info"] = {"ID": "1", "INSTALLED": True}
    report: dict[str, Any] = {}
    try:
        with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps, app.app_context():
            fake.install(rsps)
            rest = Bitrix24Rest(portal_id)
            barrier.wait(timeout=60)
            for _ in range(calls):
                rest.call("app.info")
    except Exception as error:  # reported to the test, which fails on it
        report["error"] = repr(error)
    report["times"] = [at for _, _, at in fake.calls]
    out.put(report)
