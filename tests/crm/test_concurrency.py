"""Several workers meeting an expired token: exactly one refresh, everyone continues with the new token."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest
from flask import Flask

from app.crm.bitrix24 import Bitrix24Rest
from app.db import db
from app.models import Portal
from tests.crm.fake_b24 import FakeBitrix24, deal_row
from tests.crm.workers import refresh_worker


def test_two_threads_meeting_an_expired_token_refresh_once(b24_app: Flask, portal: Portal, fake: FakeBitrix24):
    fake.add_deals([deal_row(5)])
    fake.token_filter = lambda token: (
        "expired" if token == "token-1" else ("ok" if token == "token-new-1" else "invalid")
    )
    fake.refresh_delay = 0.3
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}
    portal_id = portal.id  # the ORM object belongs to this thread's session

    def work(name: str) -> None:
        with b24_app.app_context():
            rest = Bitrix24Rest(portal_id)
            try:
                barrier.wait(timeout=10)
                outcomes[name] = rest.call("crm.deal.get", {"id": 5})["ID"]
            except Exception as error:  # recorded and asserted below
                outcomes[name] = error
            finally:
                db.session.remove()

    threads = [threading.Thread(target=work, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert outcomes == {"a": "5", "b": "5"}
    assert len(fake.refreshes) == 1
    assert sorted(fake.tokens_seen) == ["token-1", "token-1", "token-new-1", "token-new-1"]
    db.session.expire_all()
    stored = db.session.get(Portal, portal.id)
    assert (stored.access_token, stored.refresh_token) == ("token-new-1", "refresh-2")


@pytest.mark.slow
def test_two_processes_meeting_an_expired_token_refresh_once(
    b24_app: Flask, portal: Portal, database_url: str, tmp_path: Path
):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    out = ctx.Queue()
    processes = [
        ctx.Process(target=refresh_worker, args=(database_url, str(tmp_path), portal.id, tag, barrier, out))
        for tag in ("A", "B")
    ]
    for process in processes:
        process.start()
    reports = [out.get(timeout=90) for _ in processes]
    for process in processes:
        process.join(timeout=30)

    assert [r.get("error") for r in reports] == [None, None]
    assert [r["deal"] for r in reports] == ["5", "5"]
    assert sum(r["refreshes"] for r in reports) == 1
    refresher = next(r for r in reports if r["refreshes"] == 1)
    new_token = f"token-{refresher['tag']}-1"
    # Both met the expired token first, then both used the one new token.
    assert [r["tokens"] for r in reports] == [["token-1", new_token], ["token-1", new_token]]
    db.session.expire_all()
    stored = db.session.get(Portal, portal.id)
    assert (stored.access_token, stored.refresh_token) == (new_token, "refresh-2")
