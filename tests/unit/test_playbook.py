"""Stage playbook rules on the in-memory CRM: the setting's shape, the next stage a deal moves on to (the app's
Conditional refusal skipped, won after the last working stage), and installing the preset twice."""

from __future__ import annotations

import pytest
from marshmallow import ValidationError

from app.core.models import Portal
from app.domain import directory, playbook
from tests.unit.conftest import MAIN
from tests.unit.fake_crm import InMemoryCrm


def test_the_setting_keeps_text_per_stage_and_names_each_wrong_stage():
    assert playbook.validate({"WORKING": {"steps": " Позвонить\r\nНаписать ", "criteria": None}, "LATE": {}}) == {
        "WORKING": {"steps": "Позвонить\nНаписать", "criteria": ""}
    }
    with pytest.raises(ValidationError) as error:
        playbook.validate({"WORKING": {"steps": 1}, "LATE": {"note": "x"}, "NEW": {"criteria": "x" * 2001}})
    assert set(error.value.messages["stage_playbook"]) == {"WORKING", "LATE", "NEW"}
    with pytest.raises(ValidationError):
        playbook.validate(["WORKING"])


def test_the_next_stage_skips_conditional_refusal_and_ends_with_won(portal: Portal, crm: InMemoryCrm):
    pipeline = directory.pipelines(portal.id, crm)[0]
    assert pipeline.id == MAIN
    assert playbook.next_stage(portal, pipeline, "NEW").id == "WORKING"
    assert playbook.next_stage(portal, pipeline, "LATE").id == "WON"  # REFUSAL, the app's own stage, is skipped
    assert playbook.next_stage(portal, pipeline, "REFUSAL") is None
    assert playbook.next_stage(portal, pipeline, "WON") is None


def test_the_preset_creates_its_working_stages_once_before_conditional_refusal(portal: Portal, crm: InMemoryCrm):
    first = playbook.install_preset(portal, crm, MAIN)
    assert len(first.created) == 8 and first.stage_ids["WON"] == "WON"
    order = [stage.id for stage in sorted(crm.pipelines[MAIN].stages, key=lambda stage: stage.sort)]
    working = [first.stage_ids[item.code] for item in playbook.PRESET if not item.won]
    assert order == ["NEW", "WORKING", "LATE", *working, "REFUSAL", "WON", "LOSE"]
    again = playbook.install_preset(portal, crm, MAIN)
    assert again.created == [] and again.stage_ids == first.stage_ids
    assert len(playbook.stage_playbook(portal)) == 9
    with pytest.raises(ValidationError):
        playbook.install_preset(portal, crm, "404")
