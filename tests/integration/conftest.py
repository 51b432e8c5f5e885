"""Fixtures that connect the app to the Bitrix24 sandbox through `responses` (no network)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from sandbox import Sandbox
from sandbox.amocrm import responses_amo
from sandbox.events import flask_client_transport
from sandbox.mount import responses_sandbox
from tests.integration.amo import Amo, make_amo
from tests.integration.b24 import APP_URL, B24


def make_b24(app: Flask, domain: str = "a.bitrix24.test", seed: int = 42) -> tuple[Sandbox, object]:
    sandbox = Sandbox(transport=flask_client_transport(app.test_client()))
    portal = sandbox.seed_portal(domain=domain, installed=False, app_url=APP_URL, seed=seed)
    sandbox.set_rate_limit(portal, rate=200, burst=200)
    app.config.update(
        B24_CLIENT_ID=portal.client_id,
        B24_CLIENT_SECRET=portal.client_secret,
        PUBLIC_URL=APP_URL,
        B24_RATE=150.0,
        B24_BURST=150,
    )
    return sandbox, portal


@pytest.fixture
def b24(app: Flask) -> Iterator[B24]:
    """A seeded sandbox portal (not yet installed) reachable by the app in-process."""
    sandbox, portal = make_b24(app)
    with responses_sandbox(sandbox):
        yield B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)


@pytest.fixture
def installed(b24: B24) -> B24:
    """The same portal with the app installed."""
    b24.install()
    return b24


@pytest.fixture
def amo(app: Flask) -> Iterator[Amo]:
    """A seeded amoCRM sandbox account (integration not yet authorised) reachable in-process."""
    sandbox, account = make_amo(app)
    with responses_amo(sandbox):
        yield Amo(app=app, client=app.test_client(), sandbox=sandbox, account=account)


@pytest.fixture
def amo_installed(amo: Amo) -> Amo:
    """The same account with the integration installed."""
    amo.install()
    return amo
