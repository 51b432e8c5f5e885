"""Fixtures for the CRM client tests: a fake portal behind `responses` and a portal row."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import responses
from flask import Flask

from app.models import Portal
from tests.crm.fake_b24 import DOMAIN, OAUTH, FakeBitrix24
from tests.helpers import make_portal

B24_TEST_CONFIG: dict[str, Any] = {
    "B24_OAUTH_SERVER": OAUTH,
    "B24_CLIENT_ID": "app.test",
    "B24_CLIENT_SECRET": "app-secret",
    "B24_RETRY_BASE_DELAY": 0.01,
    "B24_RETRY_MAX_DELAY": 1.0,
    "B24_RETRY_ATTEMPTS": 4,
    "B24_REFRESH_LOCK_SECONDS": 15.0,
}


@pytest.fixture
def b24_app(app: Flask) -> Flask:
    """The app with Bitrix24 settings pointing at the fakes and fast retries."""
    app.config.update(B24_TEST_CONFIG)
    return app


@pytest.fixture
def fake() -> Iterator[FakeBitrix24]:
    """The fake portal and OAuth server, installed into `responses`."""
    portal = FakeBitrix24()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        portal.install(rsps)
        yield portal


def portal_row(**fields: Any) -> Portal:
    """A Bitrix24 portal whose REST base is the fake portal."""
    return make_portal(
        "member-a",
        domain=DOMAIN,
        rest_base=fields.pop("rest_base", f"https://{DOMAIN}/rest/"),
        access_token=fields.pop("access_token", "token-1"),
        refresh_token=fields.pop("refresh_token", "refresh-1"),
        status=fields.pop("status", "active"),
        **fields,
    )


@pytest.fixture
def portal(b24_app: Flask) -> Portal:
    """A committed, active portal with a valid access token."""
    return portal_row()
