"""Logs are one JSON line per event and never contain tokens or secrets."""

import json
import logging

from flask import Flask

from app.core.logs import JsonFormatter


def _format(record_msg: str, **extra: object) -> dict:
    record = logging.makeLogRecord({"msg": record_msg, "levelname": "INFO", "name": "t", **extra})
    return json.loads(JsonFormatter().format(record))


def test_tokens_in_structured_fields_are_masked():
    line = _format(
        "stored portal",
        access_token="AT-123456",
        refresh_token="RT-654321",
        auth={"application_token": "APP-TOKEN-1", "member_id": "m1"},
        portal_id=7,
    )
    text = json.dumps(line)
    for secret in ("AT-123456", "RT-654321", "APP-TOKEN-1"):
        assert secret not in text
    assert line["auth"]["member_id"] == "m1"
    assert line["portal_id"] == 7


def test_tokens_inside_free_text_are_masked():
    line = _format("POST body auth[access_token]=AT-9&auth[member_id]=m1&AUTH_ID=SECRET-AUTH refresh_token: RT-7")
    assert "AT-9" not in line["event"]
    assert "SECRET-AUTH" not in line["event"]
    assert "RT-7" not in line["event"]
    # Every auth[...] value is masked (member ids included): one rule, no judgement per key.
    assert "auth[member_id]=***" in line["event"]


def test_request_logs_carry_the_request_id(app: Flask, capfd):
    logging.getLogger("app.test").info("hello", extra={"access_token": "LEAK-ME"})
    with app.test_request_context("/x", headers={"X-Request-ID": "req-42"}):
        app.preprocess_request()
        logging.getLogger("app.test").info("inside request", extra={"client_secret": "LEAK-2"})
    err = capfd.readouterr().err
    assert "LEAK-ME" not in err
    assert "LEAK-2" not in err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    inside = [line for line in lines if line["event"] == "inside request"]
    assert inside and inside[0]["request_id"] == "req-42"


def test_a_request_without_an_id_gets_one_that_stays_the_same(app: Flask, capfd):
    with app.test_request_context("/x"):
        logging.getLogger("app.test").warning("first")
        logging.getLogger("app.test").warning("second")
    with app.test_request_context("/y"):
        logging.getLogger("app.test").warning("third")
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    ids = {line["event"]: line["request_id"] for line in lines}
    assert ids["first"] == ids["second"] and len(ids["first"]) == 32
    assert ids["third"] != ids["first"]
