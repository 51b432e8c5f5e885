"""The rules of «Отложено» without a CRM: what keeps a deal out of the stage, the return day as each CRM writes it,
and the shape of the `postpone_return_stage` setting."""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from marshmallow import ValidationError

from app.crm.days import parse_day
from app.crm.port import Deal
from app.domain import postpone

MOSCOW = ZoneInfo("Europe/Moscow")
TODAY = date(2026, 12, 8)


def deal(**values: Any) -> Deal:
    return Deal(id="1", title="T", pipeline_id="0", stage_id="S", stage_semantics="process", responsible_id="2",
                modified_by_id=None, modified_at=None, **values)  # fmt: skip


def portal(language: str = "ru") -> Any:
    return SimpleNamespace(language=language)


@pytest.mark.parametrize(
    ("value", "day"),
    [
        ("2026-12-10T00:00:00+03:00", date(2026, 12, 10)),  # Bitrix24 REST
        ("2026-12-10", date(2026, 12, 10)),
        ("10.12.2026", date(2026, 12, 10)),  # Bitrix24's display format
        ("1796850000", date(2026, 12, 10)),  # amoCRM: unix time of midnight in Moscow
        (1796850000, date(2026, 12, 10)),
        ("", None),
        (None, None),
        ("soon", None),
        ("31.02.2026", None),
    ],
)
def test_the_return_day_is_read_whichever_way_the_crm_writes_it(value: Any, day: date | None):
    assert parse_day(value, MOSCOW) == day


def test_a_deal_needs_a_reason_and_a_day_not_past_to_be_postponed():
    assert postpone.missing(portal(), deal(postpone_reason="no_contact", postpone_date=TODAY), TODAY) == []
    assert postpone.missing(portal(), deal(), TODAY) == ["не указана причина переноса", "не указана дата возврата"]
    past = deal(postpone_reason="no_contact", postpone_date=date(2026, 12, 7))
    assert postpone.missing(portal(), past, TODAY) == ["дата возврата 07.12.2026 уже прошла"]
    assert postpone.missing(portal("en"), deal(postpone_date=TODAY), TODAY) == ["no postpone reason"]


def test_the_return_stage_setting_is_a_map_of_pipelines_to_stages():
    assert postpone.validate_return_stages({"0": "PREPARATION", "3": "", "4": None}) == {"0": "PREPARATION"}
    with pytest.raises(ValidationError) as error:
        postpone.validate_return_stages(["0"])
    assert "postpone_return_stage" in error.value.messages
    with pytest.raises(ValidationError) as error:
        postpone.validate_return_stages({"0": 5})
    assert error.value.messages == {
        "postpone_return_stage": {"0": ["a stage id must be a string of at most 100 characters"]}
    }
