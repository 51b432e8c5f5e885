"""Several workers meeting an expired token: exactly one refresh, everyone continues with the new token."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest
from flask import Flask

from app.core.db import db
from app.core.models import Portal
from app.crm.bitrix24 import Bitrix24Rest
from tests.crm.conftest import B24Env, TlsPortal
from tests.crm.workers import refresh_worker


def assert_rotated_once(sandbox, sb_portal, portal: Portal, old_refresh: str) -> None:
    """One refresh reached the OAuth server and our row holds the pair it issued."""
    assert sandbox.oauth_calls(sb_portal, "refresh_token") == 1
    db.session.expire_all()
    stored = db.session.get(Portal, portal.id)
    assert stored.refresh_token != old_refresh and stored.refresh_token in sandbox.refresh_tokens
    assert old_refresh not in sandbox.refresh_tokens
    token = sandbox.access_tokens[stored.access_token]
    assert token.member_id == sb_portal.member_id and token.expires_at > sandbox.clock.now()


def test_two_threads_meeting_an_expired_token_refresh_once(b24_app: Flask, b24: B24Env, portal: Portal):
    sandbox = b24.sandbox
    deal_id = sandbox.act(b24.portal, 7).create_deal(TITLE="Deal", STAGE_ID="NEW")
    sandbox.expire_access_tokens(b24.portal)
    sandbox.oauth_latency = 0.3  # the refresh takes a while: the other thread meets the expired token too
    old_refresh = portal.refresh_token
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}
    sent: dict[str, int] = {}
    portal_id = portal.id  # the ORM object belongs to this thread's session

    def work(name: str) -> None:
        with b24_app.app_context():
            rest = Bitrix24Rest(portal_id)
            try:
                barrier.wait(timeout=10)
                outcomes[name] = rest.call("crm.deal.get", {"id": deal_id})["ID"]
            except Exception as error:  # recorded and asserted below
                outcomes[name] = error
            finally:
                sent[name] = rest.requests_sent
                db.session.remove()

    threads = [threading.Thread(target=work, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert outcomes == {"a": str(deal_id), "b": str(deal_id)}
    # Both met the expired token, then both used the one new token.
    assert sent == {"a": 2, "b": 2}
    assert sorted(b24.rest_requests()) == ["crm.deal.get"] * 4
    assert b24.statuses("crm.deal.get") == [200, 200]
    assert_rotated_once(sandbox, b24.portal, portal, old_refresh)


@pytest.mark.slow
def test_two_processes_meeting_an_expired_token_refresh_once(tls_portal: TlsPortal, database_url: str, tmp_path: Path):
    sandbox, sb_portal, portal = tls_portal.sandbox, tls_portal.portal, tls_portal.row
    deal_id = sandbox.act(sb_portal, 7).create_deal(TITLE="Deal", STAGE_ID="NEW")
    sandbox.expire_access_tokens(sb_portal)
    sandbox.oauth_latency = 0.5
    old_refresh = portal.refresh_token
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: nothing inherited from this process
    barrier = ctx.Barrier(2)
    out = ctx.Queue()
    args = (database_url, str(tmp_path), tls_portal.config, tls_portal.server.ca_file, portal.id, deal_id)
    processes = [ctx.Process(target=refresh_worker, args=(*args, barrier, out)) for _ in range(2)]
    for process in processes:
        process.start()
    reports = [out.get(timeout=90) for _ in processes]
    for process in processes:
        process.join(timeout=30)

    assert [r.get("error") for r in reports] == [None, None]
    assert [r["deal"] for r in reports] == [str(deal_id)] * 2
    # Both met the expired token first, then both used the one new token.
    assert [r["requests"] for r in reports] == [2, 2]
    assert [c.status for c in sandbox.calls(sb_portal, "crm.deal.get")] == [200, 200]
    assert_rotated_once(sandbox, sb_portal, portal, old_refresh)
