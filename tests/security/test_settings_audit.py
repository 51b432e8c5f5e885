"""Settings and role changes are made by portal administrators only, and audited with who made them and
what changed (issue 16: "Settings and role changes are audited with who made them").

Identities come from the real frame flow: the portal itself says, through `user.admin`, whether the user
who opened the app is an administrator; the page token carries that.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from app.core.db import db
from app.core.models import AuditEntry
from tests.security.b24_env import ADMIN, MANAGER, Env, guard_reverts_an_illegal_move, install_and_guard, sandbox_env

# (endpoint, a valid change, the audit row's `attempted`, a key its `changed` names)
SAVES = [
    ("/api/settings", {"exempt_users": ["2"], "heads": ["9", "2"]}, "change settings", "guard.exempt_users"),
    ("/api/review/settings", {"callback_attempts": 2}, "change review settings", "review.callback_attempts"),
    ("/api/settings/reports", {"monthly": {"enabled": False, "day": 5}}, "change report schedule", "reports.monthly"),
]


@pytest.fixture
def env(app: Flask) -> Iterator[Env]:
    with sandbox_env(app) as opened:
        yield opened


@pytest.fixture
def guarded(env: Env) -> Env:
    return install_and_guard(env)


def page_token(env: Env, user_id: int) -> dict[str, str]:
    """The signed identity the app page of `user_id` gets after the portal confirmed who he is."""
    page = env.b24.client.post("/b24/app", data=env.b24.frame(user_id))
    assert page.status_code == 200
    match = re.search(r'"token": ("[^"]+")', page.get_data(as_text=True))
    assert match, "the app page carries no token"
    return {"X-RC-Token": json.loads(match.group(1))}


def audit_rows(attempted: str) -> list[AuditEntry]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(AuditEntry).where(AuditEntry.attempted == attempted)))


@pytest.mark.parametrize(("url", "change", "attempted", "key"), SAVES)
def test_an_admins_save_is_audited_with_his_id_the_section_and_the_change(
    guarded: Env, url: str, change: dict[str, Any], attempted: str, key: str
):
    before = guarded.snapshot()
    refused = guarded.b24.client.put(url, json=change, headers=page_token(guarded, MANAGER))
    assert refused.status_code == 403
    assert guarded.snapshot() == before
    assert audit_rows(attempted) == []
    answer = guarded.b24.client.put(url, json=change, headers=page_token(guarded, ADMIN))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    [row] = audit_rows(attempted)
    assert row.actor == str(ADMIN)
    changed = row.details["changed"]
    assert any(name.endswith("." + key.split(".", 1)[1]) for name in changed), changed
    assert all(set(value) == {"from", "to"} for value in changed.values())


def test_a_role_change_records_who_was_added_and_a_manager_cannot_make_one(guarded: Env):
    manager = page_token(guarded, MANAGER)
    answer = guarded.b24.client.put("/api/settings", json={"exempt_users": [str(MANAGER)]}, headers=manager)
    assert answer.status_code == 403
    guard_reverts_an_illegal_move(guarded.b24)
    admin = page_token(guarded, ADMIN)
    guarded.b24.client.put("/api/settings", json={"qa_users": ["7", "8", "3"]}, headers=admin)
    [row] = audit_rows("change settings")
    change = next(value for name, value in row.details["changed"].items() if name.endswith("qa_users"))
    assert "3" not in change["from"] and "3" in change["to"]
