"""Fuzzing every inbound endpoint: random and malformed bodies never give a 5xx nor store anything.

(Bitrix24 events, robots and frames; the amoCRM Digital Pipeline robot webhook; the signed-header APIs.)

Each endpoint gets random bytes, bodies in the wrong encoding, fields up to and beyond the body limit,
deeply nested brackets, thousands of parameters, JSON where a form is expected and the other way round,
missing and extra keys, and valid shapes with values of the wrong type. The answer is either a success
for a body that was valid and verified, or a clear 4xx with a JSON `message`; nothing is stored unless
the body was valid and carried the portal's application token. Bitrix24 itself (the OAuth server and
the portal's REST) answers 401 through `responses`, so no request leaves the machine.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import pytest
import responses
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from itsdangerous import URLSafeTimedSerializer

from app.core.db import db
from app.core.models import AuditEntry, InboxItem, Portal
from app.core.security import TOKEN_HEADER, Identity, issue_token, read_token
from app.domain.robots import REGISTRY, Robot
from handlers.b24_payloads import MAX_BODY_BYTES
from tests.helpers import make_portal

MEMBER = "member-fuzz"
APP_TOKEN = "fuzz-application-token"
ROBOT = "rc_fuzz_robot"
FORM = "application/x-www-form-urlencoded"
CLEAR_4XX = {400, 401, 404, 405, 413}
AMO_ACCOUNT = "30441694"
DP_SECRET = "fuzz-dp-secret-for-the-digital-pipeline"
WERKZEUG_FORM_LIMIT = 500_000  # Request.max_form_memory_size: bigger form bodies are refused with 413

FUZZ = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---------------------------------------------------------------------------- fixtures and checks


@pytest.fixture
def portal(app: Flask) -> Portal:
    return make_portal(MEMBER, application_token=APP_TOKEN, status="installed")


@pytest.fixture
def bitrix24_says_no():
    """The OAuth server and every portal refuse every token; anything else is a connection error."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        everything = re.compile(r"https?://.*")
        for method in (responses.GET, responses.POST):
            mock.add(method, everything, status=401, json={"error": "invalid_token", "error_description": "no"})
        yield mock


@pytest.fixture
def robot_registered(monkeypatch: pytest.MonkeyPatch) -> Robot:
    robot = Robot(ROBOT, "Фазз", "Fuzz", "", "", "tests.helpers.remember")
    monkeypatch.setitem(REGISTRY, robot.code, robot)
    return robot


def count(model: type) -> int:
    db.session.rollback()
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def assert_clear_refusal(response, allowed: set[int] = CLEAR_4XX) -> None:
    """A 4xx from the allowed set with a JSON body that says why."""
    text = response.get_data(as_text=True)[:300]
    assert response.status_code < 500, f"{response.status_code}: {text}"
    assert response.status_code in allowed, f"{response.status_code}: {text}"
    body = response.get_json(silent=True)
    assert isinstance(body, dict), text
    assert isinstance(body.get("message"), str) and body["message"], text


def assert_clear_frame_refusal(response, allowed: set[int] = CLEAR_4XX) -> None:
    """A frame refused with a 4xx: an HTML page saying why in the frame's language (a body too large to
    read is still answered as JSON by the size limit)."""
    text = response.get_data(as_text=True)
    assert response.status_code < 500, f"{response.status_code}: {text[:300]}"
    assert response.status_code in allowed, f"{response.status_code}: {text[:300]}"
    if response.is_json:
        assert_clear_refusal(response, allowed)
        return
    assert response.mimetype == "text/html" and 'id="rc-frame-error"' in text, text[:300]


@dataclass(frozen=True)
class Body:
    """One request body and the content type it is sent with."""

    data: bytes
    content_type: str = FORM

    def __repr__(self) -> str:
        shown = self.data if len(self.data) <= 200 else self.data[:200] + b"...(%d bytes)" % len(self.data)
        return f"Body({shown!r}, {self.content_type!r})"

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        printer.text(repr(self))


# ---------------------------------------------------------------------------- strategies

# Values that broke or could break a database or a parser, mixed into any text (no lone surrogates).
NASTY = ["\x00", "a\x00b", "%00", "\uffff", "ﬃ" * 30, "ß" * 40, "9" * 30, "-1", "1e400", "NaN", "[]", "\r\n", " "]
any_text = st.one_of(st.text(max_size=40), st.sampled_from(NASTY))
short_keys = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=12)


def event_fields(member_id: str = MEMBER, token: str = APP_TOKEN) -> dict[str, str]:
    return {
        "event": "ONCRMDEALUPDATE",
        "event_handler_id": "201",
        "data[FIELDS][ID]": "759",
        "ts": "1736405807",
        "auth[access_token]": "user-access-token",
        "auth[expires_in]": "3600",
        "auth[domain]": "fuzz.bitrix24.test",
        "auth[client_endpoint]": "https://fuzz.bitrix24.test/rest/",
        "auth[server_endpoint]": "https://oauth.bitrix.info/rest/",
        "auth[member_id]": member_id,
        "auth[application_token]": token,
        "auth[user_id]": "5",
    }


def robot_fields(member_id: str = MEMBER, token: str = APP_TOKEN) -> dict[str, str]:
    return {
        "workflow_id": "wf1",
        "code": ROBOT,
        "document_id[0]": "crm",
        "document_id[1]": "CCrmDocumentDeal",
        "document_id[2]": "DEAL_42",
        "event_token": "wf1|act|sig",
        "properties[days]": "3",
        "auth[member_id]": member_id,
        "auth[application_token]": token,
    }


def dp_fields(account_id: str = AMO_ACCOUNT, secret: str = DP_SECRET) -> dict[str, str]:
    """A Digital Pipeline widget action body (reference/amocrm.md section 8)."""
    return {
        "event[type]": "14",
        "event[type_code]": "lead_status_changed",
        "event[data][id]": "759",
        "event[data][element_type]": "2",
        "event[data][status_id]": "5501",
        "event[data][pipeline_id]": "5500",
        "event[time]": "1736405807",
        "action[settings][widget][settings][robot]": "rc_callback",
        "action[settings][widget][settings][days]": "3",
        "action[settings][widget][settings][secret]": secret,
        "subdomain": "fuzz",
        "account_id": account_id,
    }


def frame_fields(member_id: str = MEMBER) -> dict[str, str]:
    return {
        "AUTH_ID": "frame-auth",
        "AUTH_EXPIRES": "3600",
        "REFRESH_ID": "frame-refresh",
        "member_id": member_id,
        "APPLICATION_TOKEN": APP_TOKEN,
        "PLACEMENT": "DEFAULT",
    }


def form(fields: dict[str, str]) -> bytes:
    return urlencode(fields).encode()


def _wrong_type(key: str, value: str, variant: int) -> list[tuple[str, str]]:
    """The same key made a list, a map, an empty value, or split into a nested key."""
    if variant == 0:
        return [(f"{key}[]", value), (f"{key}[]", value)]
    if variant == 1:
        return [(f"{key}[x]", value)]
    if variant == 2:
        return [(key, "")]
    return [(key, value), (f"{key}[0]", value)]


@st.composite
def mutated_forms(draw: st.DrawFn, base: dict[str, str]) -> Body:
    """A valid form with keys dropped, keys added, values replaced and keys given the wrong type."""
    keys = list(base)
    dropped = draw(st.sets(st.sampled_from(keys), max_size=len(keys)))
    replaced = draw(st.dictionaries(st.sampled_from(keys), any_text, max_size=4))
    retyped = draw(st.dictionaries(st.sampled_from(keys), st.integers(0, 3), max_size=3))
    extra = draw(st.lists(st.tuples(short_keys, any_text), max_size=5))
    pairs: list[tuple[str, str]] = []
    for key in keys:
        if key in dropped:
            continue
        value = replaced.get(key, base[key])
        pairs += _wrong_type(key, value, retyped[key]) if key in retyped else [(key, value)]
    pairs += extra
    return Body(urlencode(pairs).encode())


@st.composite
def hostile_bodies(draw: st.DrawFn, base: dict[str, str], limit: int) -> Body:
    """Bodies no client should send: raw bytes, wrong encodings, huge, deep, wide, JSON."""
    kind = draw(
        st.sampled_from(["bytes", "latin-1", "utf-16", "huge", "deep", "deep-auth", "wide", "json", "multipart"])
    )
    valid = urlencode(base)
    if kind == "bytes":
        return Body(draw(st.binary(max_size=600)))
    if kind == "latin-1":
        # Raw (not percent-encoded) non-ASCII in a latin-1 body: not UTF-8 at all.
        text = draw(st.text(alphabet=st.characters(min_codepoint=0xA0, max_codepoint=0xFF), min_size=1, max_size=30))
        return Body(f"{valid}&note={text}&{text}={text}".encode("latin-1"))
    if kind == "utf-16":
        return Body(valid.encode(draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32"]))))
    if kind == "huge":
        size = draw(st.sampled_from([limit - len(valid) - 200, limit - len(valid) - 8, limit + 1, 2 * limit]))
        return Body(f"{valid}&data[FIELDS][TITLE]=".encode() + b"x" * max(size, 0))
    if kind == "deep":
        depth = draw(st.integers(9, 3000))
        return Body(f"{valid}&a{'[b]' * depth}=1&{'[' * depth}={']' * depth}".encode())
    if kind == "deep-auth":
        depth = draw(st.integers(1, 400))
        return Body(f"{valid}&auth[member_id]{'[x]' * depth}=1&auth[application_token]{'[]' * depth}=2".encode())
    if kind == "wide":
        width = draw(st.integers(1000, 6000))
        filler = "&".join(f"p{index}=v" for index in range(width))
        first = draw(st.booleans())
        return Body((f"{filler}&{valid}" if first else f"{valid}&{filler}").encode())
    if kind == "json":
        nested = {key: draw(st.one_of(any_text, st.integers(), st.none())) for key in base}
        return Body(json.dumps(nested).encode(), content_type=draw(st.sampled_from(["application/json", FORM])))
    return Body(
        b'--xx\r\nContent-Disposition: form-data; name="event"\r\n\r\nONCRMDEALUPDATE\r\n--xx--\r\n',
        content_type="multipart/form-data; boundary=xx",
    )


def bodies(base: dict[str, str], limit: int) -> st.SearchStrategy[Body]:
    return st.one_of(mutated_forms(base), hostile_bodies(base, limit))


@st.composite
def valid_shaped_events(draw: st.DrawFn) -> Body:
    """A verified event whose values are arbitrary strings: must be stored or refused, never crash."""
    fields = event_fields()
    names = st.sampled_from(["ONCRMDEALUPDATE", "ONAPPINSTALL", "ONAPPUNINSTALL", "onCrmDealAdd", "ﬃ" * 30])
    fields["event"] = draw(st.one_of(names, any_text))
    for key in ("data[FIELDS][ID]", "ts", "event_handler_id", "auth[expires_in]", "auth[user_id]"):
        fields[key] = draw(st.one_of(st.just(fields[key]), any_text, st.text(max_size=400)))
    fields["auth[client_endpoint]"] = draw(
        st.one_of(st.just(fields["auth[client_endpoint]"]), any_text, any_text.map("https://x.test/".__add__))
        | st.integers(500, 600).map(lambda n: "https://" + "a" * n)
    )
    return Body(form(fields))


# ---------------------------------------------------------------------------- /b24/events and robots


def _check_inbound(response, body: Body, before: int) -> None:
    after = count(InboxItem)
    if response.status_code == 200:
        payload = response.get_json()
        assert payload["ok"] is True
        assert APP_TOKEN.encode() in body.data, "a body without the portal's token was accepted"
        stored = 0 if payload.get("duplicate") or payload.get("ignored") or "duplicate" not in payload else 1
        assert after - before == stored
    else:
        assert_clear_refusal(response)
        assert after == before, "a refused body left an inbox row"


@FUZZ
@given(body=bodies(event_fields(), MAX_BODY_BYTES))
def test_events_survive_malformed_bodies(client: FlaskClient, portal: Portal, bitrix24_says_no, body: Body):
    before = count(InboxItem)
    response = client.post("/b24/events", data=body.data, content_type=body.content_type)
    _check_inbound(response, body, before)
    if len(body.data) > MAX_BODY_BYTES:
        assert response.status_code == 413


@FUZZ
@given(body=valid_shaped_events())
def test_events_with_arbitrary_values_are_stored_or_refused(
    client: FlaskClient, portal: Portal, bitrix24_says_no, body: Body
):
    before = count(InboxItem)
    response = client.post("/b24/events", data=body.data, content_type=body.content_type)
    _check_inbound(response, body, before)


@FUZZ
@given(body=bodies(event_fields("nobody", "forged"), MAX_BODY_BYTES))
def test_events_of_unknown_portals_store_nothing(client: FlaskClient, portal: Portal, bitrix24_says_no, body: Body):
    response = client.post("/b24/events", data=body.data, content_type=body.content_type)
    assert_clear_refusal(response)
    assert count(InboxItem) == 0


@FUZZ
@given(
    body=bodies(robot_fields(), MAX_BODY_BYTES),
    # A "/" in the code is a routing matter (Werkzeug redirects "//" with a 308), not the robot handler's.
    code=st.one_of(st.just(ROBOT), st.text(min_size=1, max_size=30).filter(lambda code: "/" not in code)),
)
def test_robots_survive_malformed_bodies(
    client: FlaskClient, portal: Portal, robot_registered: Robot, bitrix24_says_no, body: Body, code: str
):
    before = count(InboxItem)
    response = client.post(f"/b24/robots/{quote(code, safe='')}", data=body.data, content_type=body.content_type)
    _check_inbound(response, body, before)


# ---------------------------------------------------------------------------- amoCRM: /amocrm/dp/robots


@pytest.fixture
def amo_account(app: Flask) -> Portal:
    return make_portal(
        AMO_ACCOUNT,
        crm=Portal.AMOCRM,
        domain="fuzz.amocrm.ru",
        rest_base="https://fuzz.amocrm.ru",
        status="installed",
        settings={"amo_dp_secret": DP_SECRET},
    )


def _check_dp(response, body: Body, before: int) -> None:
    after = count(InboxItem)
    if response.status_code == 200:
        payload = response.get_json()
        assert payload["ok"] is True
        assert DP_SECRET.encode() in body.data, "a body without the account's secret was accepted"
        stored = 0 if payload.get("ignored") or payload.get("duplicate") else 1
        assert after - before == stored
    else:
        assert_clear_refusal(response)
        assert after == before, "a refused body left an inbox row"


@st.composite
def valid_shaped_dp(draw: st.DrawFn) -> Body:
    """A verified action whose values are arbitrary strings: must be stored, ignored or refused, never crash."""
    fields = dp_fields()
    for key in fields:
        if key not in ("account_id", "action[settings][widget][settings][secret]"):
            fields[key] = draw(st.one_of(st.just(fields[key]), any_text, st.text(max_size=400)))
    extra = draw(st.dictionaries(short_keys, any_text, max_size=3))
    fields.update({f"action[settings][widget][settings][{key}]": value for key, value in extra.items()})
    return Body(form(fields))


@FUZZ
@given(body=bodies(dp_fields(), MAX_BODY_BYTES))
def test_dp_robots_survive_malformed_bodies(client: FlaskClient, amo_account: Portal, body: Body):
    before = count(InboxItem)
    response = client.post("/amocrm/dp/robots", data=body.data, content_type=body.content_type)
    _check_dp(response, body, before)
    if len(body.data) > MAX_BODY_BYTES:
        assert response.status_code == 413


@FUZZ
@given(body=valid_shaped_dp())
def test_dp_robots_with_arbitrary_values_are_stored_ignored_or_refused(
    client: FlaskClient, amo_account: Portal, body: Body
):
    before = count(InboxItem)
    response = client.post("/amocrm/dp/robots", data=body.data, content_type=body.content_type)
    _check_dp(response, body, before)


@FUZZ
@given(body=st.one_of(bodies(dp_fields("111", DP_SECRET), MAX_BODY_BYTES), bodies(dp_fields(secret="forged"), 4096)))
def test_dp_robots_of_unknown_accounts_or_with_a_wrong_secret_store_nothing(
    client: FlaskClient, amo_account: Portal, body: Body
):
    response = client.post("/amocrm/dp/robots", data=body.data, content_type=body.content_type)
    assert_clear_refusal(response)
    assert count(InboxItem) == 0


# ---------------------------------------------------------------------------- frames: /b24/install, /b24/app


def frame_bodies(member_id: str) -> st.SearchStrategy[Body]:
    return bodies(frame_fields(member_id), WERKZEUG_FORM_LIMIT)


query_strings = st.one_of(
    st.just(""),
    st.dictionaries(st.sampled_from(["DOMAIN", "LANG", "APP_SID", "PROTOCOL", "x"]), any_text, max_size=4).map(
        urlencode
    ),
)


@FUZZ
@given(body=frame_bodies("member-new"), query=query_strings)
def test_install_frame_survives_malformed_bodies(client: FlaskClient, bitrix24_says_no, body: Body, query: str):
    response = client.post(f"/b24/install?{query}", data=body.data, content_type=body.content_type)
    assert_clear_frame_refusal(response)
    assert count(Portal) == 0
    assert count(AuditEntry) == 0


@FUZZ
@given(body=st.one_of(frame_bodies(MEMBER), frame_bodies("nobody")), query=query_strings)
def test_app_frame_survives_malformed_bodies(
    client: FlaskClient, portal: Portal, bitrix24_says_no, body: Body, query: str
):
    response = client.post(f"/b24/app?{query}", data=body.data, content_type=body.content_type)
    assert_clear_frame_refusal(response)
    assert count(AuditEntry) == 0
    assert count(Portal) == 1


# ---------------------------------------------------------------------------- signed-header endpoints


def forged_tokens(app: Flask) -> st.SearchStrategy[str]:
    """Tokens a caller could make up: random text, another key's signature, a valid one tampered with."""
    other_key = URLSafeTimedSerializer("not-our-key", salt="rc-identity")
    printable = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)
    with app.app_context():
        genuine = issue_token(Identity(portal_id=1, user_id="1", is_admin=True))
    return st.one_of(
        printable,
        st.builds(lambda p, a: other_key.dumps({"p": p, "u": "1", "a": a}), st.integers(), st.booleans()),
        st.builds(lambda i, c: genuine[:i] + c + genuine[i + 1 :], st.integers(0, len(genuine) - 1), printable),
    )


def forged(app: Flask, data) -> str:
    """A made-up token; a tampered one that still decodes is not a forgery (base64 has spare bits at the end)."""
    token = data.draw(forged_tokens(app))
    assume(read_token(token) is None)
    return token


@settings(FUZZ, max_examples=20)
@given(data=st.data(), query=query_strings)
def test_install_status_refuses_forged_tokens(client: FlaskClient, app: Flask, portal: Portal, data, query: str):
    token = forged(app, data)
    response = client.get(f"/b24/install/status?{query}", headers={TOKEN_HEADER: token})
    assert_clear_refusal(response, {401})


@settings(FUZZ, max_examples=20)
@given(data=st.data(), method=st.sampled_from(["GET", "PUT"]))
def test_settings_refuse_forged_tokens(client: FlaskClient, app: Flask, portal: Portal, data, method: str):
    token = forged(app, data)
    before = dict(portal.settings or {})
    response = client.open("/api/settings", method=method, headers={TOKEN_HEADER: token}, json={"qa_users": ["1"]})
    assert_clear_refusal(response, {401})
    db.session.refresh(portal)
    assert portal.settings == before


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=12,
)
setting_keys = st.sampled_from(
    [
        "guarded_pipelines",
        "qa_users",
        "qa_departments",
        "heads",
        "head_departments",
        "exempt_users",
        "exempt_automation",
        "review_sla_hours",
    ]
)


@st.composite
def settings_bodies(draw: st.DrawFn) -> Body:
    """PUT /api/settings bodies: right keys with wrong values, unknown keys, non-objects, non-JSON."""
    kind = draw(st.sampled_from(["object", "known", "scalar", "broken", "deep", "form", "huge"]))
    if kind == "object":
        return Body(json.dumps(draw(st.dictionaries(any_text, json_values, max_size=5))).encode(), "application/json")
    if kind == "known":
        value = draw(st.dictionaries(setting_keys, json_values | st.lists(any_text, max_size=4), min_size=1))
        return Body(json.dumps(value).encode(), "application/json")
    if kind == "scalar":
        return Body(json.dumps(draw(json_values)).encode(), "application/json")
    if kind == "broken":
        return Body(draw(st.binary(max_size=200)), draw(st.sampled_from(["application/json", "text/plain"])))
    if kind == "deep":
        depth = draw(st.integers(100, 100_000))
        opener = draw(st.sampled_from(["[", '{"qa_users":']))
        closer = "]" if opener == "[" else "}"
        return Body((opener * depth + closer * depth).encode(), "application/json")
    if kind == "form":
        return Body(b"qa_users=1&qa_users=2&review_sla_hours=5", FORM)
    return Body(json.dumps({"qa_users": ["x" * 1000] * draw(st.integers(1, 600))}).encode(), "application/json")


@FUZZ
@given(body=settings_bodies())
def test_settings_put_refuses_bad_bodies_from_an_admin(
    client: FlaskClient, app: Flask, portal: Portal, bitrix24_says_no, body: Body
):
    token = issue_token(Identity(portal_id=portal.id, user_id="1", is_admin=True))
    response = client.put(
        "/api/settings", data=body.data, content_type=body.content_type, headers={TOKEN_HEADER: token}
    )
    if response.status_code == 200:
        assert response.get_json()["settings"]
        return
    assert_clear_refusal(response, {400, 413})


@settings(FUZZ, max_examples=15)
@given(body=settings_bodies(), admin=st.booleans())
def test_settings_of_a_vanished_portal_or_a_non_admin_change_nothing(
    client: FlaskClient, portal: Portal, bitrix24_says_no, body: Body, admin: bool
):
    portal_id = portal.id if not admin else portal.id + 1000
    token = issue_token(Identity(portal_id=portal_id, user_id="7", is_admin=False if not admin else True))
    for method in ("GET", "PUT"):
        response = client.open(
            "/api/settings",
            method=method,
            data=body.data,
            content_type=body.content_type,
            headers={TOKEN_HEADER: token},
        )
        assert_clear_refusal(response, {403} if not admin else {404})
    assert count(AuditEntry) == 0


# ---------------------------------------------------------------------------- /healthz and wrong methods


@settings(FUZZ, max_examples=15)
@given(query=query_strings, body=st.binary(max_size=300), header=any_text.filter(lambda t: t.isprintable()))
def test_healthz_ignores_whatever_it_is_sent(client: FlaskClient, query: str, body: bytes, header: str):
    response = client.get(f"/healthz?{query}", data=body, headers={"X-Request-ID": quote(header)})
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"
    assert_clear_refusal(client.post("/healthz", data=body), {405})


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/b24/events"),
        ("PUT", "/b24/install"),
        ("DELETE", "/b24/app"),
        ("GET", f"/b24/robots/{ROBOT}"),
        ("POST", "/b24/install/status"),
        ("POST", "/api/settings"),
        ("POST", "/b24/nothing-here"),
        ("GET", "/amocrm/dp/robots"),
    ],
)
def test_wrong_methods_and_paths_answer_json(client: FlaskClient, method: str, path: str):
    assert_clear_refusal(client.open(path, method=method, data=b"x=1"), {404, 405})


# ---------------------------------------------------------------------------- regressions found by fuzzing


def _post_event(client: FlaskClient, **changes: str):
    fields = {**event_fields(), **changes}
    return client.post("/b24/events", data=form(fields), content_type=FORM)


@pytest.mark.parametrize("expires_in", [":", "1e3", "9" * 30])
def test_regression_install_event_with_a_non_numeric_expires_in_is_400(
    client: FlaskClient, portal: Portal, expires_in: str
):
    """ONAPPINSTALL did int(auth[expires_in]) and timedelta() on it: ValueError / OverflowError, a 500."""
    response = _post_event(client, **{"event": "ONAPPINSTALL", "auth[expires_in]": expires_in})
    assert_clear_refusal(response, {400})
    assert "expires_in" in response.get_json()["fields"]["auth"]
    assert count(AuditEntry) == 0


@pytest.mark.parametrize(
    "changes",
    [
        {"auth[member_id]": "a\x00b"},
        {"ts": "17\x00"},
        {"data[FIELDS][ID]": "\x00"},
        {"auth[application_token]": APP_TOKEN + "\x00"},
    ],
    ids=["member_id", "ts", "deal id", "token"],
)
def test_regression_nul_characters_are_400_not_a_database_error(
    client: FlaskClient, portal: Portal, changes: dict[str, str]
):
    """PostgreSQL text cannot hold NUL: the tenant lookup or the inbox insert raised DataError, a 500."""
    assert_clear_refusal(_post_event(client, **changes), {400})
    raw = form(event_fields()) + b"&note=\x00"
    assert_clear_refusal(client.post("/b24/events", data=raw, content_type=FORM), {400})
    robot = {**robot_fields(), "workflow_id": "wf\x00"}
    assert_clear_refusal(client.post(f"/b24/robots/{ROBOT}", data=form(robot), content_type=FORM), {400})
    assert count(InboxItem) == 0


def test_regression_event_names_that_grow_past_the_column_when_upper_cased_are_400(client: FlaskClient, portal: Portal):
    """`"ﬃ" * 30` is 30 characters but upper() makes 90, longer than inbox.kind (64) on PostgreSQL."""
    assert_clear_refusal(_post_event(client, event="ﬃ" * 30), {400})
    assert count(InboxItem) == 0


@pytest.mark.parametrize(
    "changes",
    [{"auth[user_id]": "7" * 65}, {"auth[client_endpoint]": "https://" + "a" * 600}],
    ids=["user_id", "client_endpoint"],
)
def test_regression_install_event_values_longer_than_their_columns_are_400(
    client: FlaskClient, portal: Portal, changes: dict[str, str]
):
    """ONAPPINSTALL wrote auth[user_id] to audit.actor (64) and client_endpoint to rest_base (512)."""
    assert_clear_refusal(_post_event(client, event="ONAPPINSTALL", **changes), {400})
    assert count(AuditEntry) == 0


@pytest.mark.parametrize(
    "changes",
    [{"member_id": "m\x00"}, {"AUTH_EXPIRES": "9" * 30}, {"APPLICATION_TOKEN": "t" * 129}],
    ids=["nul member_id", "huge AUTH_EXPIRES", "long APPLICATION_TOKEN"],
)
def test_regression_frames_with_values_the_database_cannot_hold_are_400(
    client: FlaskClient, portal: Portal, bitrix24_says_no, changes: dict[str, str]
):
    for path in ("/b24/app", "/b24/install"):
        assert_clear_frame_refusal(client.post(path, data={**frame_fields(), **changes}), {400})
    assert_clear_frame_refusal(client.post("/b24/install?DOMAIN=a%00", data=frame_fields()), {400})
    assert len(bitrix24_says_no.calls) == 0


def test_regression_deeply_nested_settings_json_is_400(client: FlaskClient, portal: Portal):
    """json.loads raised RecursionError (not a ValueError, so get_json(silent=True) let it through): a 500."""
    token = issue_token(Identity(portal_id=portal.id, user_id="1", is_admin=True))
    body = "[" * 100_000 + "]" * 100_000
    response = client.put("/api/settings", data=body, content_type="application/json", headers={TOKEN_HEADER: token})
    assert_clear_refusal(response, {400})


def test_regression_settings_ids_with_nul_are_400(client: FlaskClient, portal: Portal):
    """JSONB refuses \\u0000: storing {"qa_users": ["\\u0000"]} failed on PostgreSQL with a 500."""
    token = issue_token(Identity(portal_id=portal.id, user_id="1", is_admin=True))
    for changes in ({"qa_users": ["\x00"]}, {"guarded_pipelines": ["1\x00"]}):
        response = client.put("/api/settings", json=changes, headers={TOKEN_HEADER: token})
        assert_clear_refusal(response, {400})
    db.session.refresh(portal)
    # Nothing was saved (the only key is the record of the admin the token's issuer vouched for).
    assert "guard" not in portal.settings
    assert count(AuditEntry) == 0


def test_regression_settings_errors_on_items_and_on_the_list_are_400(client: FlaskClient, portal: Portal):
    """Errors keyed by item index (ints) once made jsonify fail to sort the keys: a 500."""
    token = issue_token(Identity(portal_id=portal.id, user_id="1", is_admin=True))
    response = client.put("/api/settings", json={"qa_users": [None, "a\x00"]}, headers={TOKEN_HEADER: token})
    assert_clear_refusal(response, {400})
    assert set(response.get_json()["fields"]["qa_users"]) == {"0", "1"}
