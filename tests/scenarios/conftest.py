"""The `crm` fixture: every scenario in this folder runs once on Bitrix24 and once on amoCRM."""

from __future__ import annotations

import pytest
from flask import Flask

from app.core.db import db
from app.domain.penalties import update_cpl_settings
from tests.integration.b24 import configure_guard
from tests.integration.conftest import amo, b24  # noqa: F401 - the harness fixtures the drivers wrap
from tests.scenarios.driver import HEAD, CrmDriver, make_driver

CRMS = ["bitrix24", "amocrm"]


@pytest.fixture(params=CRMS)
def bare_crm(request: pytest.FixtureRequest, app: Flask) -> CrmDriver:
    """A seeded CRM (Bitrix24 portal or amoCRM account) with the app (on each database) not yet installed."""
    harness = request.getfixturevalue("b24" if request.param == "bitrix24" else "amo")
    return make_driver(request.param, harness)


@pytest.fixture
def crm(bare_crm: CrmDriver) -> CrmDriver:
    """The app installed and the guard configured as an admin would: QA 7 and 8, head 9; a lead costs
    1500 RUB from the WEB source."""
    bare_crm.install()
    portal = bare_crm.portal()
    configure_guard(portal, heads=[str(HEAD)])
    update_cpl_settings(portal, {"currency": "RUB", "default": "700", "by_source": {"WEB": "1500"}})
    db.session.commit()
    return bare_crm
