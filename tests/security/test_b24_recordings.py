"""The Bitrix24 recording proxy (issue 16, lower): no blind redirects, audio only, recording paths only,
the verified portal origin only. The `responses` mock records every request, so "our token was never
sent elsewhere" is asserted on what actually went out."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from flask import Flask

from app.crm.bitrix24 import Bitrix24Rest, NotARecording
from app.crm.hosts import ForeignHost
from tests.helpers import make_portal

PORTAL = "https://member-a.bitrix24.test"
TOKEN = "the-apps-access-token"
RECORDING = f"{PORTAL}/bitrix/tools/crm_show_file.php?fileId=4001&ownerTypeId=6&ownerId=17"
DISK = f"{PORTAL}/disk/downloadFile/4002/?&ncc=1&filename=call_4002.mp3"
AUDIO = b"ID3\x03\x00fake-mp3"


@pytest.fixture
def rest(app: Flask) -> Iterator[Bitrix24Rest]:
    portal = make_portal("member-a", status="installed", access_token=TOKEN)
    responses.start()  # the default mock: `responses.get(...)` and `responses.calls` below are this one
    try:
        yield Bitrix24Rest(portal.id)
    finally:
        responses.stop()
        responses.reset()


def _tokens_sent_to(host: str) -> list[str]:
    return [
        token
        for call in responses.calls
        if urlsplit(call.request.url).hostname == host
        for token in parse_qs(urlsplit(call.request.url).query).get("auth", [])
    ]


def _read(rest: Bitrix24Rest, url: str) -> bytes:
    response = rest.download(url)
    try:
        return response.content
    finally:
        response.close()


def test_a_redirect_to_another_host_is_refused_and_the_token_never_goes_there(rest: Bitrix24Rest):
    responses.get(RECORDING.split("?")[0], status=302, headers={"Location": "https://evil.example/steal.mp3"})
    responses.get("https://evil.example/steal.mp3", body=AUDIO, content_type="audio/mpeg")
    with pytest.raises(ForeignHost):
        rest.download(RECORDING)
    assert [urlsplit(c.request.url).hostname for c in responses.calls] == ["member-a.bitrix24.test"]
    assert _tokens_sent_to("evil.example") == []


def test_a_redirect_to_a_non_recording_path_on_the_portal_is_refused(rest: Bitrix24Rest):
    responses.get(RECORDING.split("?")[0], status=302, headers={"Location": "/rest/user.get.json"})
    responses.get(f"{PORTAL}/rest/user.get.json", json={"result": []})
    with pytest.raises(NotARecording):
        rest.download(RECORDING)
    assert len(responses.calls) == 1


def test_a_redirect_to_a_recording_on_the_portal_is_followed_but_not_more_than_three(rest: Bitrix24Rest):
    responses.get(RECORDING.split("?")[0], status=302, headers={"Location": DISK})
    responses.get(f"{PORTAL}/disk/downloadFile/4002/", body=AUDIO, content_type="audio/mpeg")
    assert _read(rest, RECORDING) == AUDIO
    assert _tokens_sent_to("member-a.bitrix24.test") == [TOKEN, TOKEN]
    responses.reset()
    responses.get(RECORDING.split("?")[0], status=302, headers={"Location": RECORDING})
    with pytest.raises(NotARecording):
        rest.download(RECORDING)
    assert len(responses.calls) == 4  # the first request and three re-checked hops


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "application/json", "image/svg+xml"])
def test_an_answer_that_is_not_audio_is_refused(rest: Bitrix24Rest, content_type: str):
    responses.get(RECORDING.split("?")[0], body=b"<html><script>alert(1)</script>", content_type=content_type)
    with pytest.raises(NotARecording):
        rest.download(RECORDING)
    responses.replace(responses.GET, RECORDING.split("?")[0], body=AUDIO, content_type="audio/mpeg")
    assert _read(rest, RECORDING) == AUDIO  # the same link serving audio is streamed


def test_octet_stream_is_taken_only_for_an_audio_file_name(rest: Bitrix24Rest):
    """Drive downloads come as application/octet-stream with the name in Content-Disposition."""
    responses.get(
        f"{PORTAL}/disk/downloadFile/4002/",
        body=AUDIO,
        content_type="application/octet-stream",
        headers={"Content-Disposition": 'attachment; filename="call_4002.mp3"'},
    )
    response = rest.download(DISK)
    response.close()
    responses.replace(
        responses.GET,
        f"{PORTAL}/disk/downloadFile/4002/",
        body=b"<html>",
        content_type="application/octet-stream",
        headers={"Content-Disposition": 'attachment; filename="page.html"'},
    )
    with pytest.raises(NotARecording):
        rest.download(f"{PORTAL}/disk/downloadFile/4002/")


@pytest.mark.parametrize(
    "url",
    [
        f"{PORTAL}/rest/user.get.json",
        f"{PORTAL}/bitrix/admin/index.php",
        f"{PORTAL}/disk/downloadFile/1/../../../rest/profile.json",
        f"{PORTAL}/disk/downloadFile/%2e%2e/rest/profile.json",
        f"{PORTAL}/bitrix/tools/crm_show_file.php/../../admin/",
    ],
)
def test_a_path_that_is_not_a_recording_is_not_fetched(rest: Bitrix24Rest, url: str):
    with pytest.raises(NotARecording):
        rest.download(url)
    assert len(responses.calls) == 0


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/bitrix/tools/crm_show_file.php?fileId=1",
        "http://member-a.bitrix24.test/bitrix/tools/crm_show_file.php?fileId=1",
        "https://member-a.bitrix24.test:8443/bitrix/tools/crm_show_file.php?fileId=1",
        "https://member-a.bitrix24.test@evil.example/bitrix/tools/crm_show_file.php?fileId=1",
        "https://169.254.169.254/disk/downloadFile/1/",
    ],
)
def test_a_recording_elsewhere_is_not_fetched(rest: Bitrix24Rest, url: str):
    with pytest.raises(ForeignHost):
        rest.download(url)
    assert len(responses.calls) == 0
