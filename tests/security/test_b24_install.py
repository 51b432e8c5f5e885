"""A plain Bitrix24 manager cannot take the app over through the install frame (issue 16, "high").

The attack: the manager opens the app, takes the frame's AUTH_ID and APPLICATION_TOKEN (every user's frame
carries them), and POSTs them to /b24/install with a made-up application token. Before the fix he got an
admin page token, the stored application token was replaced (real events then got 401) and the installer
ran again. Now: 403 with a page saying why in Russian and English, and nothing changes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from flask import Flask

from app.core.db import db
from app.core.models import AuditEntry, Portal
from tests.security.b24_env import (
    ADMIN,
    MANAGER,
    Env,
    guard_reverts_an_illegal_move,
    install_and_guard,
    sandbox_env,
)


@pytest.fixture
def env(app: Flask) -> Iterator[Env]:
    with sandbox_env(app) as opened:
        yield opened


@pytest.fixture
def guarded(env: Env) -> Env:
    return install_and_guard(env)


@pytest.fixture
def enqueued(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Every job /b24/install queues (the installer), recorded instead of being lost in Redis."""
    import handlers.bitrix24

    jobs: list[tuple] = []
    real = handlers.bitrix24.enqueue

    def spy(*args: object, **kwargs: object) -> object:
        jobs.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(handlers.bitrix24, "enqueue", spy)
    return jobs


def _install_frame(env: Env, user_id: int, **extra: str):
    b24 = env.b24
    return b24.client.post(f"/b24/install?DOMAIN={b24.portal.domain}&LANG=ru", data=b24.frame(user_id, **extra))


def _audit(attempted: str) -> int:
    query = sa.select(sa.func.count()).select_from(AuditEntry).where(AuditEntry.attempted == attempted)
    return db.session.scalar(query)


def test_a_managers_install_frame_is_refused_and_nothing_changes(guarded: Env, enqueued: list[tuple]):
    before = guarded.snapshot()
    installs = _audit("install")
    answer = _install_frame(guarded, MANAGER, APPLICATION_TOKEN="the-managers-own-token")
    assert answer.status_code == 403
    page = answer.get_data(as_text=True)
    assert "только администратор портала" in page and "Only a portal administrator" in page
    assert '"token"' not in page and "X-RC-Token" not in page  # no page token, admin or otherwise
    assert guarded.snapshot() == before
    assert _audit("install") == installs
    assert enqueued == []
    # The other frame routes take no token from a frame either: a forged one is refused, a real one changes nothing.
    forged = guarded.b24.client.post("/b24/app", data=guarded.b24.frame(MANAGER, APPLICATION_TOKEN="forged"))
    assert forged.status_code == 401
    assert guarded.b24.client.post("/b24/app", data=guarded.b24.frame(MANAGER)).status_code == 200
    assert guarded.snapshot() == before


def test_after_the_attack_real_events_are_accepted_and_the_guard_still_works(guarded: Env):
    _install_frame(guarded, MANAGER, APPLICATION_TOKEN="the-managers-own-token")
    genuine = guarded.event("ONCRMDEALUPDATE", guarded.auth_block(MANAGER), FIELDS={"ID": "1"})
    assert genuine.status_code == 200
    guard_reverts_an_illegal_move(guarded.b24)


def test_a_managers_frame_on_a_brand_new_portal_creates_nothing(env: Env, enqueued: list[tuple]):
    """No row yet: the user is checked at the REST base app.info confirmed, before anything is stored."""
    answer = _install_frame(env, MANAGER)
    assert answer.status_code == 403
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Portal)) == 0
    assert enqueued == []


def test_an_admins_repair_runs_the_installer_but_keeps_the_stored_application_token(guarded: Env, enqueued: list):
    stored = guarded.snapshot()["application_token"]
    answer = _install_frame(guarded, ADMIN, APPLICATION_TOKEN="a-token-nobody-issued")
    assert answer.status_code == 200
    assert re.search(r'"token": "[^"]+"', answer.get_data(as_text=True))
    assert guarded.b24.our_portal().application_token == stored
    assert [job[1] for job in enqueued] == ["app.jobs.install_bitrix24"]
    guarded.b24.work()
    assert guarded.event("ONCRMDEALUPDATE", guarded.auth_block(MANAGER), FIELDS={"ID": "1"}).status_code == 200
    # Only after an uninstall (which clears it) does a reinstall bring a new application token.
    b24 = guarded.b24
    b24.sandbox.uninstall_app(b24.portal, clean=False)
    b24.deliver()
    b24.work()
    assert b24.our_portal().application_token is None
    reinstalled = b24.install()
    assert reinstalled.status == "installed"
    assert reinstalled.application_token == b24.portal.application_token
    guard_reverts_an_illegal_move(b24)


def test_an_install_event_carrying_a_managers_tokens_stores_none_of_them(guarded: Env):
    """ONAPPINSTALL with the right application token (every frame shows it) and the manager's own token
    pair, verified by app.info as issued for this portal: the app's tokens stay the admin's."""
    before = guarded.snapshot()
    answer = guarded.event("ONAPPINSTALL", guarded.auth_block(MANAGER), VERSION="1", INSTALLED="Y")
    assert answer.status_code == 200
    after = guarded.snapshot()
    assert (after["access_token"], after["refresh_token"]) == (before["access_token"], before["refresh_token"])
    another = {**guarded.auth_block(ADMIN), "application_token": "a-new-token-from-nowhere"}
    assert guarded.event("ONAPPINSTALL", another, VERSION="1", INSTALLED="Y").status_code == 401
    assert guarded.b24.our_portal().application_token == before["application_token"]
    guard_reverts_an_illegal_move(guarded.b24)
