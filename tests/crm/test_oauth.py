"""The shared token keeper (app.crm.oauth) on both CRMs: two concurrent refreshes reach the OAuth server
once, and on PostgreSQL the portal row is locked FOR UPDATE while a refresh runs (real Redis, SQLite
and PostgreSQL like the other tests here)."""

from __future__ import annotations

import pkgutil
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from app.core.db import db
from app.core.models import Portal
from app.crm.amocrm import AmoRest
from app.crm.bitrix24 import Bitrix24Rest
from app.crm.errors import PortalNeedsReinstall
from sandbox.amocrm import responses_amo
from tests.crm.conftest import B24Env
from tests.helpers import make_portal
from tests.integration.amo import Amo, make_amo


@pytest.fixture
def amo(app: Flask) -> Iterator[Amo]:
    """A sandbox amoCRM account behind `responses`, and our installed row for it (a valid pair)."""
    sandbox, account = make_amo(app)
    with responses_amo(sandbox):
        yield Amo(app=app, client=app.test_client(), sandbox=sandbox, account=account)


def amo_row(amo: Amo) -> Portal:
    tokens = amo.sandbox.issue_tokens(amo.account)
    return make_portal(
        str(amo.account.id),
        crm=Portal.AMOCRM,
        domain=amo.account.domain,
        rest_base=f"https://{amo.account.domain}",
        status="installed",
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
        token_expires_at=datetime.now(UTC) + timedelta(hours=20),
    )


def in_threads(app: Flask, work: Callable[[], object], count: int = 2) -> list[object]:
    """Run `work` in `count` threads released together; what each returned or raised."""
    barrier = threading.Barrier(count)
    outcomes: list[object] = [None] * count

    def run(index: int) -> None:
        with app.app_context():
            try:
                barrier.wait(timeout=10)
                outcomes[index] = work()
            except Exception as error:  # recorded and asserted by the test
                outcomes[index] = error
            finally:
                db.session.remove()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def stored(portal_id: int) -> Portal:
    db.session.expire_all()
    row = db.session.get(Portal, portal_id)
    assert row is not None
    return row


# ---- one refresh for two workers ----------------------------------------------------------------


def test_bitrix24_two_concurrent_refreshes_reach_the_oauth_server_once(b24_app: Flask, b24: B24Env):
    sandbox, portal_id = b24.sandbox, b24.row.id
    old_access, old_refresh = b24.row.access_token or "", b24.row.refresh_token
    sandbox.expire_access_tokens(b24.portal)
    sandbox.oauth_latency = 0.3  # the refresh takes a while: the other worker waits on the lock meanwhile

    def work() -> str:
        rest = Bitrix24Rest(portal_id)
        rest._refresh(old_access)
        return rest._current().access_token

    outcomes = in_threads(b24_app, work)

    row = stored(portal_id)
    assert outcomes == [row.access_token, row.access_token]
    assert sandbox.oauth_calls(b24.portal, "refresh_token") == 1
    assert row.refresh_token != old_refresh and row.status == "active"


def test_amocrm_two_concurrent_refreshes_reach_the_oauth_server_once(app: Flask, amo: Amo):
    row = amo_row(amo)
    portal_id, old_access, old_refresh = row.id, row.access_token or "", row.refresh_token or ""
    amo.sandbox.expire_access_tokens(amo.account)
    amo.sandbox.token_delay = 0.3

    def work() -> str:
        rest = AmoRest(portal_id)
        rest.refresh(old_access)
        return rest._current().access_token

    outcomes = in_threads(app, work)

    row = stored(portal_id)
    assert outcomes == [row.access_token, row.access_token]
    assert amo.sandbox.refresh_log == [(old_refresh, 200)], "one refresh, with the stored token"
    assert row.refresh_token != old_refresh and row.status == "installed"


def test_amocrm_lock_lease_has_its_own_setting(app: Flask, amo: Amo):
    app.config.update(AMO_REFRESH_LOCK_SECONDS=12.0, B24_REFRESH_LOCK_SECONDS=99.0)
    rest = AmoRest(amo_row(amo).id)
    assert rest.tokens.lock_seconds == 12.0


def test_a_refused_refresh_flags_the_portal_once_and_later_calls_stay_offline(app: Flask, amo: Amo):
    row = amo_row(amo)
    db.session.execute(sa.update(Portal).where(Portal.id == row.id).values(refresh_token="dead"))
    db.session.commit()
    rest = AmoRest(row.id)
    with pytest.raises(PortalNeedsReinstall):
        rest.refresh(row.access_token or "")
    assert stored(row.id).status == "needs_reinstall"
    sent = len(amo.sandbox.refresh_log)
    with pytest.raises(PortalNeedsReinstall):
        AmoRest(row.id).refresh(row.access_token or "")
    assert len(amo.sandbox.refresh_log) == sent


# ---- the row is locked FOR UPDATE while a refresh runs (PostgreSQL) -------------------------------


def assert_row_locked_during_refresh(
    app: Flask, monkeypatch: pytest.MonkeyPatch, target: str, refresh: Callable[[], object], portal_id: int
) -> None:
    """Hold the refresh at its OAuth request (`target`, patched) and try to lock the row NOWAIT meanwhile."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite ignores FOR UPDATE")
    original = pkgutil.resolve_name(target)
    inside, go_on = threading.Event(), threading.Event()

    def held(*args: Any, **kwargs: Any) -> Any:
        inside.set()
        assert go_on.wait(timeout=20)
        return original(*args, **kwargs)

    monkeypatch.setattr(target, held)
    outcome: list[object] = []

    def run() -> None:
        with app.app_context():
            try:
                outcome.append(refresh())
            except Exception as error:  # asserted below
                outcome.append(error)
            finally:
                db.session.remove()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert inside.wait(timeout=20), "the refresh never reached the OAuth server"
        lock_row = sa.text("SELECT id FROM portals WHERE id = :id FOR UPDATE NOWAIT")
        with db.engine.connect() as connection, pytest.raises(sa.exc.OperationalError, match="could not obtain lock"):
            connection.execute(lock_row, {"id": portal_id})
        plain_read = sa.text("SELECT access_token FROM portals WHERE id = :id")
        with db.engine.connect() as connection:
            assert connection.execute(plain_read, {"id": portal_id}).scalar_one()  # reads are not blocked
    finally:
        go_on.set()
        thread.join(timeout=30)
    assert outcome and not isinstance(outcome[0], Exception), outcome
    with db.engine.connect() as connection, connection.begin():
        connection.execute(lock_row, {"id": portal_id})  # released with the refresh's commit


def test_bitrix24_refresh_locks_the_portal_row(b24_app: Flask, b24: B24Env, monkeypatch: pytest.MonkeyPatch):
    portal_id, old_access = b24.row.id, b24.row.access_token or ""
    b24.sandbox.expire_access_tokens(b24.portal)
    assert_row_locked_during_refresh(
        b24_app,
        monkeypatch,
        "app.crm.bitrix24.client.Bitrix24Rest._oauth_refresh",
        lambda: Bitrix24Rest(portal_id)._refresh(old_access),
        portal_id,
    )
    assert b24.sandbox.oauth_calls(b24.portal, "refresh_token") == 1


def test_amocrm_refresh_locks_the_portal_row(app: Flask, amo: Amo, monkeypatch: pytest.MonkeyPatch):
    row = amo_row(amo)
    portal_id, old_access = row.id, row.access_token or ""
    amo.sandbox.expire_access_tokens(amo.account)
    assert_row_locked_during_refresh(
        app,
        monkeypatch,
        "app.crm.amocrm.client.oauth_token_request",
        lambda: AmoRest(portal_id).refresh(old_access),
        portal_id,
    )
    assert len(amo.sandbox.refresh_log) == 1
