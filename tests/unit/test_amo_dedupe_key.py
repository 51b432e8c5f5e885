"""The amoCRM webhook de-duplication key: a resent body is the same key, another change in the same second is not."""

from __future__ import annotations

import urllib.parse

from handlers.amo_payloads import parse_hook


def _body(**lead: str) -> str:
    fields = {
        "id": "501",
        "status_id": "20",
        "pipeline_id": "7",
        "responsible_user_id": "2",
        "modified_user_id": "2",
        "last_modified": "1765152000",
        "updated_at": "1765152000",
        "price": "1000",
        "custom_fields][0][id": "90",
        "custom_fields][0][values][0][enum": "11",
        **lead,
    }
    pairs = [(f"leads[update][0][{key}]", value) for key, value in fields.items()]
    return urllib.parse.urlencode([*pairs, ("account[id]", "31"), ("account[subdomain]", "shop")])


def _key(body: str) -> str:
    [change] = parse_hook(body).leads
    return change.dedupe_key("31")


def test_the_same_body_gives_the_same_key():
    assert _key(_body()) == _key(_body())


def test_changes_within_one_second_by_one_person_give_different_keys():
    keys = {
        _key(_body()),
        _key(_body(**{"custom_fields][0][values][0][enum": "12"})),
        _key(_body(price="2000")),
        _key(_body(pipeline_id="8")),
        _key(_body(name="Новое название")),
    }
    assert len(keys) == 5
