"""The sandbox portal with the app installed (same harness as tests/integration), and quick job retries."""

from __future__ import annotations

import pytest
from rq import Retry

from app.core import inbox
from tests.integration.b24 import B24, configure_guard
from tests.integration.conftest import b24, installed  # noqa: F401 - fixtures shared with the integration tests


@pytest.fixture
def guarded(installed: B24, monkeypatch: pytest.MonkeyPatch) -> B24:  # noqa: F811 - the imported fixture
    """Guard configured (QA 7, 8; head 9); a failed job is retried at once instead of after 5 s, and
    throttled CRM calls back off for milliseconds (the schedules themselves are not under test)."""
    monkeypatch.setattr(inbox, "RETRY", Retry(max=inbox.RETRY.max, interval=0))
    installed.app.config.update(B24_RETRY_BASE_DELAY=0.01, B24_RETRY_MAX_DELAY=0.05)
    configure_guard(installed.our_portal())
    return installed
