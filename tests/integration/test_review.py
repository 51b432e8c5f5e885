"""The QA review through the deal tab's endpoints, a real worker and the sandbox portal."""

from __future__ import annotations

import pytest

from app.models import RefusalCase
from tests.integration.b24 import B24, configure_guard
from tests.integration.review_helpers import (
    HEAD,
    MANAGER,
    QA,
    Reviewer,
    case_in_review,
    deal_field,
    open_tab,
    the_case,
)


@pytest.fixture
def guarded(installed: B24) -> B24:
    configure_guard(installed.our_portal())
    return installed


def test_recordings_confirm_then_close_as_lost(guarded: B24):
    deal_id, case = case_in_review(guarded)
    qa = Reviewer(guarded, QA, deal_id)
    assert qa.view["actions"] == ["recordings_confirm", "recordings_not_confirmed", "recordings_none"]
    qa.act("recordings_confirm", "На записи клиент говорит про цену")
    assert qa.view["case"]["state"] == RefusalCase.CONFIRMED
    assert qa.view["actions"] == ["close_lost", "offer_again"]
    qa.act("close_lost")
    assert guarded.stage(deal_id) == "LOSE"
    assert deal_field(guarded, deal_id, "qa_verdict") == "confirmed"
    assert the_case(deal_id).state == RefusalCase.CLOSED_LOST
    assert [step["action"] for step in qa.view["timeline"]][-2:] == ["recordings_confirm", "close_lost"]
    assert qa.view["actions"] == []
