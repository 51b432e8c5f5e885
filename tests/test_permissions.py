"""Every JSON endpoint of the pages (each /api/ rule in the url map) goes through the one access check,
app.web.permissions.require_role: no token is a 401, an uninstalled portal's token a 401, a token whose
portal is not ours (gone) a 404, and another portal's row named in the path a 404 even for its admin."""

from __future__ import annotations

import tempfile
from decimal import Decimal

import pytest
from flask import Flask
from werkzeug.routing import IntegerConverter, Rule

from app import create_app
from app.core.db import db
from app.core.models import ExchangeLot, Penalty, Portal, RefusalCase
from app.core.security import Identity, issue_token
from app.web.permissions import ADMIN, Access, require_role
from tests.helpers import make_portal


def _api_routes() -> list[tuple[str, str]]:
    """(rule, method) of every /api/ endpoint, read from the url map of an app built without connecting."""
    app = create_app(
        {"TESTING": True, "INSTANCE_PATH": tempfile.mkdtemp(), "DATABASE_URL": "sqlite://", "SECRET_KEY": "k"}
    )
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            routes.extend((rule.rule, method) for method in sorted(rule.methods - {"HEAD", "OPTIONS"}))
    return sorted(routes)


ROUTES = _api_routes()
ROW_OF = {"case_id": RefusalCase, "lot_id": ExchangeLot, "penalty_id": Penalty}  # ids in paths: the model
TEXT_ARGS = {"action": "confirm", "call_id": "1", "name": "managers", "code": "price", "deal_id": "1"}
ID_ROUTES = [route for route in ROUTES if any(arg in route[0] for arg in ROW_OF)]
BODY = {"reason": "checking", "version": 1, "expected": {"stage_id": "NEW", "responsible_id": "2"}}
OTHER_ADMIN = "1"  # an administrator and a head of sales of the other portal


def test_the_url_map_has_the_page_endpoints():
    assert len(ROUTES) >= 29
    assert {rule.split("/")[2] for rule, _ in ROUTES} >= {
        "exchange", "penalties", "reports", "review", "settings", "taskcontrol",
    }  # fmt: skip
    assert len(ID_ROUTES) == 6


def _rule(app: Flask, path: str, method: str) -> Rule:
    return next(r for r in app.url_map.iter_rules() if r.rule == path and method in (r.methods or ()))


def _url(app: Flask, path: str, method: str, ids: dict[str, int]) -> str:
    rule = _rule(app, path, method)
    values: dict[str, object] = {}
    for arg, converter in rule._converters.items():
        if isinstance(converter, IntegerConverter):
            assert arg in ROW_OF, f"{path}: which model is {arg}? add it to ROW_OF"
            values[arg] = ids[arg]
        else:
            assert arg in TEXT_ARGS, f"{path}: add a value for {arg} to TEXT_ARGS"
            values[arg] = TEXT_ARGS[arg]
    with app.test_request_context():
        return app.url_for(rule.endpoint, **values)


def _call(app: Flask, path: str, method: str, headers: dict[str, str], ids: dict[str, int] | None = None):
    url = _url(app, path, method, ids or dict.fromkeys(ROW_OF, 1))
    return app.test_client().open(url, method=method, headers=headers, json=None if method == "GET" else BODY)


def _token(portal_id: int, user_id: str = OTHER_ADMIN, admin: bool = True) -> dict[str, str]:
    return {"X-RC-Token": issue_token(Identity(portal_id, user_id, is_admin=admin))}


def _portal(member: str, **fields: object) -> Portal:
    return make_portal(member, status=fields.pop("status", "installed"), settings={"guard": {"heads": [OTHER_ADMIN]}})


def _rows_of(portal: Portal) -> dict[str, int]:
    """One row of each tenant-owned model the paths name, on this portal."""
    case = RefusalCase(
        portal_id=portal.id, deal_id="501", pipeline_id="0", manager_id="2", reason="price",
        state=RefusalCase.LEAKED,
    )  # fmt: skip
    db.session.add(case)
    db.session.flush()
    fine = Penalty(
        portal_id=portal.id, manager_id="2", case_id=case.id, deal_id="501", kind=Penalty.PENALTY,
        amount=Decimal("100"), currency="RUB", rule="portal_default", created_by="7",
    )  # fmt: skip
    lot = ExchangeLot(portal_id=portal.id, deal_id="502", pipeline_id="0", status=ExchangeLot.TAKEN, holder_id="2")
    db.session.add_all([fine, lot])
    db.session.commit()
    return {"case_id": case.id, "lot_id": lot.id, "penalty_id": fine.id}


@pytest.mark.parametrize(("path", "method"), ROUTES, ids=[f"{m} {p}" for p, m in ROUTES])
def test_without_a_token_or_with_an_uninstalled_portals_token_it_is_401(app: Flask, path: str, method: str):
    uninstalled = _portal("member-gone", status="uninstalled")
    assert _call(app, path, method, {}).status_code == 401
    assert _call(app, path, method, {"X-RC-Token": "forged"}).status_code == 401
    answer = _call(app, path, method, _token(uninstalled.id))
    assert answer.status_code == 401
    assert "not installed" in answer.get_json()["message"]


@pytest.mark.parametrize(("path", "method"), ROUTES, ids=[f"{m} {p}" for p, m in ROUTES])
def test_a_token_of_a_portal_that_is_not_ours_is_404(app: Flask, path: str, method: str):
    ours = _portal("member-ours")
    ids = _rows_of(ours)
    missing = ours.id + 1000  # a signed token naming a portal we do not have (deleted, or never ours)
    answer = _call(app, path, method, _token(missing), ids)
    assert answer.status_code == 404
    assert answer.get_json()["message"] == "portal not found"


@pytest.mark.parametrize(("path", "method"), ID_ROUTES, ids=[f"{m} {p}" for p, m in ID_ROUTES])
def test_another_portals_row_is_404_even_for_its_admin_and_head(app: Flask, path: str, method: str):
    ours, theirs = _portal("member-ours"), _portal("member-theirs")
    ids = _rows_of(ours)
    answer = _call(app, path, method, _token(theirs.id), ids)
    assert answer.status_code == 404, answer.get_json()
    assert answer.get_json()["message"] in ("not found", "no such penalty")
    assert db.session.get(RefusalCase, ids["case_id"]).state == RefusalCase.LEAKED
    assert db.session.get(ExchangeLot, ids["lot_id"]).holder_id == "2"


def test_admin_rights_are_reread_and_roles_combine(app: Flask):
    portal = _portal("member-roles")
    with app.test_request_context(headers=_token(portal.id, "5", admin=False)):
        access = require_role()
        assert isinstance(access, Access) and access.portal.id == portal.id and not access.is_admin
        assert access.role == "manager" and not access.has(ADMIN, "head")
    with app.test_request_context(headers=_token(portal.id, OTHER_ADMIN)):
        access = require_role(ADMIN)
        assert access.is_admin and access.role == ADMIN
        assert access.has("head") and access.crm_role == "head"
