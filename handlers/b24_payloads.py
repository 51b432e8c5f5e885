"""Bitrix24 inbound payloads: PHP-bracket bodies decoded, validated, turned into frozen models."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate
from qs_codec import DecodeOptions, decode

from app.core.limits import MAX_BODY_BYTES as MAX_BODY_BYTES  # the one body cap, enforced by app/core/limits.py

DECODE_OPTIONS = DecodeOptions(depth=8, list_limit=200, parameter_limit=2000)
# `name` or `name[a][b]...` with non-empty segments free of brackets: the only key shape the fast decoder takes.
_PLAIN_KEY = re.compile(r"([^\[\]]+)((?:\[[^\[\]]+\])*)")
_DIGIT = re.compile(r"[0-9]")


def has_nul(value: Any) -> bool:
    """True when a decoded form (keys and values, at any depth) contains a NUL character."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(key) or has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(has_nul(item) for item in value)
    return False


def _unquote(text: str) -> str:
    """Form decoding exactly as qs-codec does it for UTF-8: `+` is a space, then urllib's unquote."""
    if "+" in text:
        text = text.replace("+", " ")
    return unquote(text) if "%" in text else text


@functools.lru_cache(maxsize=1024)
def _plain_path(raw_key: str) -> tuple[str, ...] | None:
    """The decoded path of one key: ("name",) or ("name", "a", "b"); () for an empty key (the part is skipped);
    None when qs-codec must decide. Bitrix24 sends the same few dozen keys every time, so paths are cached."""
    key = _unquote(raw_key)
    if not key:
        return ()
    if "[" not in key and "]" not in key:
        return (key,)
    match = _PLAIN_KEY.fullmatch(key)
    if match is None:
        return None
    brackets = match.group(2)
    segments = brackets[1:-1].split("][")
    if len(segments) > DECODE_OPTIONS.depth or _DIGIT.search(brackets):
        return None
    return (match.group(1), *segments)


def _decode_plain(body: str) -> dict[str, Any] | None:
    """The common shape of a Bitrix24 body, decoded without qs-codec; None when qs-codec must decide.

    Taken: keys `name` or `name[a][b]` (at most DECODE_OPTIONS.depth segments), each path once, no path
    both a value and a parent, no segment with a digit (qs-codec may turn those into lists), at most
    DECODE_OPTIONS.parameter_limit parts. Anything else (lists, repeats, odd brackets) goes to qs-codec,
    so both decoders give the same result for every body (tests/handlers/test_b24_decode.py).
    """
    if "%" in body:
        # qs-codec turns encoded brackets into literal ones in the whole body before it splits anything.
        body = body.replace("%5B", "[").replace("%5b", "[").replace("%5D", "]").replace("%5d", "]")
    parts = body.split("&")
    if len(parts) > DECODE_OPTIONS.parameter_limit:
        return None
    decoded: dict[str, Any] = {}
    for part in parts:
        if not part:
            continue
        # qs-codec splits after the first "]=" when there is one, else at the first "=".
        split_at = part.find("]=")
        split_at = part.find("=") if split_at == -1 else split_at + 1
        if split_at == -1:
            path, value = _plain_path(part), ""
        else:
            path, value = _plain_path(part[:split_at]), _unquote(part[split_at + 1 :])
        if path is None:
            return None
        if not path:
            continue
        node = decoded
        for name in path[:-1]:
            child = node.setdefault(name, {})
            if not isinstance(child, dict):
                return None
            node = child
        if path[-1] in node:
            return None
        node[path[-1]] = value
    return decoded


def decode_brackets(body: str) -> dict[str, Any]:
    """Decode `a[b][c]=v` form bodies into nested dicts (values stay strings).

    NUL characters, raw or percent-encoded, are refused: no Bitrix24 field carries one, and
    PostgreSQL text cannot store one (the body, the dedupe key and every lookup would fail).
    """
    if "\x00" in body:
        raise ValidationError("body contains a NUL character")
    decoded = _decode_plain(body)
    # The fast decoder only turns "%00" into a NUL, so without it in the body there is nothing to look for.
    may_hold_nul = decoded is None or "%00" in body
    if decoded is None:
        decoded = decode(body, DECODE_OPTIONS)
    if not isinstance(decoded, dict):
        raise ValidationError("body is not a form")
    if may_hold_nul and has_nul(decoded):
        raise ValidationError("body contains a NUL character")
    return decoded


class _Strict(Schema):
    class Meta:
        unknown = EXCLUDE


class AuthSchema(_Strict):
    member_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    application_token = fields.String(required=True, validate=validate.Length(min=1, max=128))
    domain = fields.String(load_default="")
    client_endpoint = fields.String(load_default="", validate=validate.Length(max=512))
    server_endpoint = fields.String(load_default="")
    access_token = fields.String(load_default=None)
    refresh_token = fields.String(load_default=None)
    # Seconds, as digits (Bitrix24 sends "3600"); anything else would break the token expiry arithmetic.
    expires_in = fields.String(
        load_default=None, validate=validate.Regexp(r"^\d{0,9}$", error="not a number of seconds")
    )
    user_id = fields.String(load_default=None, validate=validate.Length(max=64))


class EventSchema(_Strict):
    # Event names are ASCII identifiers (ONCRMDEALUPDATE); the kind column holds 64 characters after upper().
    event = fields.String(
        required=True, validate=validate.Regexp(r"^[A-Za-z0-9_]{1,64}$", error="not a Bitrix24 event name")
    )
    event_handler_id = fields.String(load_default="")
    ts = fields.String(load_default="")
    data = fields.Raw(load_default=dict)
    auth = fields.Nested(AuthSchema, required=True)


class RobotSchema(_Strict):
    workflow_id = fields.String(required=True)
    code = fields.String(required=True)
    event_token = fields.String(load_default="")
    document_id = fields.List(fields.String(), required=True)
    properties = fields.Dict(keys=fields.String(), values=fields.Raw(), load_default=dict)
    ts = fields.String(load_default="")
    auth = fields.Nested(AuthSchema, required=True)


@dataclass(frozen=True)
class B24Auth:
    """The `auth[...]` block of an event or robot call."""

    member_id: str
    application_token: str
    domain: str = ""
    client_endpoint: str = ""
    server_endpoint: str = ""
    access_token: str | None = None
    refresh_token: str | None = None
    expires_in: str | None = None
    user_id: str | None = None

    @property
    def has_user_token(self) -> bool:
        """False for changes made by robots, workflows or agents: they carry no OAuth token."""
        return bool(self.access_token)


@dataclass(frozen=True)
class B24Event:
    """One event delivery."""

    event: str
    ts: str
    data: dict[str, Any]
    auth: B24Auth
    event_handler_id: str = ""

    @property
    def entity_id(self) -> str:
        """`data[FIELDS][ID]`, empty when the event has no entity."""
        fields_block = self.data.get("FIELDS") if isinstance(self.data, dict) else None
        return str(fields_block.get("ID", "")) if isinstance(fields_block, dict) else ""


@dataclass(frozen=True)
class B24RobotCall:
    """A robot invocation from a portal's automation rule."""

    workflow_id: str
    code: str
    event_token: str
    document_id: tuple[str, ...]
    properties: dict[str, Any]
    auth: B24Auth
    ts: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def deal_id(self) -> str | None:
        """`DEAL_42` in document_id[2] → "42"."""
        if len(self.document_id) >= 3 and self.document_id[2].startswith("DEAL_"):
            return self.document_id[2].removeprefix("DEAL_")
        return None


# Schemas are stateless once built and building one deep-copies its fields, so each is built once per process.
EVENT_SCHEMA = EventSchema()
ROBOT_SCHEMA = RobotSchema()


def parse_event(body: str) -> B24Event:
    """Validate an event body; raises ValidationError with the fields at fault."""
    loaded = EVENT_SCHEMA.load(decode_brackets(body))
    data = loaded["data"] if isinstance(loaded["data"], dict) else {}
    return B24Event(
        event=loaded["event"].upper(),
        ts=loaded["ts"],
        data=data,
        auth=B24Auth(**loaded["auth"]),
        event_handler_id=loaded["event_handler_id"],
    )


def parse_robot_call(body: str) -> B24RobotCall:
    """Validate a robot call body."""
    loaded = ROBOT_SCHEMA.load(decode_brackets(body))
    return B24RobotCall(
        workflow_id=loaded["workflow_id"],
        code=loaded["code"],
        event_token=loaded["event_token"],
        document_id=tuple(loaded["document_id"]),
        properties=loaded["properties"],
        auth=B24Auth(**loaded["auth"]),
        ts=loaded["ts"],
    )


class FrameSchema(_Strict):
    """The form the CRM POSTs when it opens one of our pages in its iframe."""

    AUTH_ID = fields.String(required=True, validate=validate.Length(min=1, max=512))
    AUTH_EXPIRES = fields.String(
        load_default="3600", validate=validate.Regexp(r"^\d{0,9}$", error="not a number of seconds")
    )
    REFRESH_ID = fields.String(load_default="")
    SERVER_ENDPOINT = fields.String(load_default="")
    APPLICATION_TOKEN = fields.String(load_default="", validate=validate.Length(max=128))
    member_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    status = fields.String(load_default="")
    PLACEMENT = fields.String(load_default="DEFAULT")
    PLACEMENT_OPTIONS = fields.String(load_default="")


FRAME_SCHEMA = FrameSchema()


@dataclass(frozen=True)
class B24Frame:
    """A verified-to-be-well-formed frame POST (not yet authenticated)."""

    auth_id: str
    auth_expires: int
    refresh_id: str
    server_endpoint: str
    application_token: str
    member_id: str
    status: str
    placement: str
    placement_options: str
    domain: str
    lang: str


def parse_frame(form: dict[str, str], query: dict[str, str]) -> B24Frame:
    """Validate a frame POST (form body + DOMAIN/LANG in the query string)."""
    if has_nul(form) or has_nul(query):
        raise ValidationError("the request contains a NUL character")
    loaded = FRAME_SCHEMA.load(form)
    expires = int(loaded["AUTH_EXPIRES"] or 3600)
    if len(query.get("DOMAIN", "")) > 255:
        raise ValidationError({"DOMAIN": ["longer than 255 characters"]})
    lang = (query.get("LANG") or "ru").lower()[:2]
    return B24Frame(
        auth_id=loaded["AUTH_ID"],
        auth_expires=expires,
        refresh_id=loaded["REFRESH_ID"],
        server_endpoint=loaded["SERVER_ENDPOINT"],
        application_token=loaded["APPLICATION_TOKEN"],
        member_id=loaded["member_id"],
        status=loaded["status"],
        placement=loaded["PLACEMENT"],
        placement_options=loaded["PLACEMENT_OPTIONS"],
        domain=query.get("DOMAIN", ""),
        lang=lang if lang in {"ru", "en"} else "en",
    )
