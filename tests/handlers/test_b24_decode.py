"""The fast bracket decoder of the webhook path gives what qs-codec gives, or hands the body over to it."""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import given, settings
from hypothesis import strategies as st
from qs_codec import decode

from handlers.b24_payloads import DECODE_OPTIONS, _decode_plain, decode_brackets

# Characters that matter to form and bracket syntax, percent escapes (valid, invalid, encoded brackets),
# digits (list indexes), and a little plain and non-ASCII text.
TOKENS = st.sampled_from(
    ["[", "]", "=", "&", "+", "%", "%5B", "%5d", "%5D=", "%25", "%ff", "%E2%82%AC", "%00", "0", "7", "-1", ".", " "]
)
TEXT = st.text(alphabet="abAB_ий", min_size=0, max_size=3)
RAW = st.lists(st.one_of(TOKENS, TEXT), max_size=40).map("".join)

SEGMENT = st.one_of(
    st.text(alphabet="abcID_", min_size=1, max_size=4),
    st.text(alphabet="abcID_", min_size=1, max_size=4),
    st.sampled_from(["0", "1", "", "x y", "a.b"]),
)
KEY = st.builds(
    lambda root, segments: root + "".join(f"[{s}]" for s in segments),
    st.sampled_from(["event", "data", "auth", "ts", "a", "a b"]),
    st.lists(SEGMENT, max_size=9).map(lambda s: s if len(s) < 4 or len(s) > 8 else s[:2]),
)
VALUE = st.one_of(st.text(max_size=12), st.sampled_from(["", "1", "a+b", "x=y", "]=", "%41"]))
PAIR = st.tuples(KEY, VALUE, st.booleans()).map(
    lambda kv: (quote(kv[0], safe="") if kv[2] else kv[0]) + "=" + quote(kv[1], safe="=]%+")
)
FORMS = st.lists(PAIR, max_size=8).map("&".join)


def _same_as_qs(body: str) -> None:
    fast = _decode_plain(body)
    if fast is not None:
        assert fast == decode(body, DECODE_OPTIONS)


@settings(max_examples=600, deadline=None)
@given(body=RAW)
def test_raw_text_decodes_like_qs_codec(body: str):
    _same_as_qs(body)


@settings(max_examples=600, deadline=None)
@given(body=FORMS)
def test_bracket_forms_decode_like_qs_codec(body: str):
    _same_as_qs(body)


def test_a_bitrix24_event_takes_the_fast_path():
    body = (
        "event=ONCRMDEALUPDATE&event_handler_id=201&data%5BFIELDS%5D%5BID%5D=42&ts=1764070000"
        "&auth%5Bmember_id%5D=m1&auth%5Bapplication_token%5D=t%2B1&auth%5Bscope%5D=crm+task"
    )
    expected = {
        "event": "ONCRMDEALUPDATE",
        "event_handler_id": "201",
        "data": {"FIELDS": {"ID": "42"}},
        "ts": "1764070000",
        "auth": {"member_id": "m1", "application_token": "t+1", "scope": "crm task"},
    }
    assert _decode_plain(body) == expected
    assert decode_brackets(body) == expected


def test_lists_repeats_and_odd_brackets_go_to_qs_codec():
    for body in ("a[0]=x", "a[]=x", "a=1&a=2", "a[b]=1&a=2", "a=2&a[b]=1", "a[b=1", "a]=1", "a[b]c=1", "a=b%5D=c"):
        assert _decode_plain(body) is None, body
    assert decode_brackets("document_id[0]=crm&document_id[1]=D") == {"document_id": ["crm", "D"]}
