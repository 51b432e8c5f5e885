"""Stage playbook rules on the in-memory CRM: the setting's shape, the next stage a deal moves on to (the app's
Conditional refusal skipped, won after the last working stage), and installing the preset twice."""

from __future__ import annotations

import pytest
from marshmallow import ValidationError

from app.core.models import Portal
from app.domain import directory, playbook, postpone
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
    assert len(first.created) == 7 and first.stage_ids["WON"] == "WON"
    assert "RC_POSTPONED" not in first.stage_ids  # the portal has no «Отложено»: none is created
    order = [stage.id for stage in sorted(crm.pipelines[MAIN].stages, key=lambda stage: stage.sort)]
    working = [first.stage_ids[item.code] for item in playbook.PRESET if not item.won and not item.postponed]
    assert order == ["NEW", "WORKING", "LATE", *working, "REFUSAL", "WON", "LOSE"]
    again = playbook.install_preset(portal, crm, MAIN)
    assert again.created == [] and again.stage_ids == first.stage_ids
    assert len(playbook.stage_playbook(portal)) == 8
    with pytest.raises(ValidationError):
        playbook.install_preset(portal, crm, "404")


def test_the_preset_fills_in_the_apps_postponed_stage_and_never_leads_a_deal_there(portal: Portal, crm: InMemoryCrm):
    postpone.ensure_stages(portal, crm)
    postponed = postpone.known_stage(portal, MAIN)
    installed = playbook.install_preset(portal, crm, MAIN)
    assert installed.stage_ids["RC_POSTPONED"] == postponed and postponed not in installed.created
    order = [stage.id for stage in sorted(crm.pipelines[MAIN].stages, key=lambda stage: stage.sort)]
    assert order.count(postponed) == 1 and order.index(postponed) == order.index("REFUSAL") + 1
    assert playbook.stage_playbook(portal)[postponed]["steps"].startswith("Указать причину переноса")
    pipeline = directory.pipelines(portal.id, crm)[0]
    last = installed.stage_ids["RC_PB_INVOICE"]
    assert playbook.next_stage(portal, pipeline, last).id == "WON"
    assert playbook.next_stage(portal, pipeline, postponed) is None


def test_every_preset_text_exists_in_both_languages():
    for item in playbook.PRESET:
        for label in (item.name, item.steps, item.criteria):
            assert label.ru and label.en and label.ru != label.en
            assert label.ru.count("\n") == label.en.count("\n"), item.code
