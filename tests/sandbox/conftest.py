"""Fixtures for the sandbox portal tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import qs_codec

from sandbox import ManualClock, Portal, Sandbox, responses_sandbox

DOMAIN = "acme.bitrix24.ru"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_760_000_000.0)


@pytest.fixture
def sandbox(clock: ManualClock) -> Sandbox:
    return Sandbox(clock=clock)


@pytest.fixture
def portal(sandbox: Sandbox) -> Portal:
    return sandbox.seed_portal(domain=DOMAIN)


@pytest.fixture
def token(sandbox: Sandbox, portal: Portal) -> str:
    """An admin's access token."""
    return sandbox.issue_tokens(portal)["access_token"]


@pytest.fixture
def mounted(sandbox: Sandbox, portal: Portal) -> Iterator[object]:
    """requests to the portal and the OAuth hosts are served by the sandbox in-process."""
    with responses_sandbox(sandbox) as mock:
        yield mock


class Recorder:
    """A transport that records what Bitrix24 would POST."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.posts: list[tuple[str, str]] = []

    def __call__(self, url: str, body: str) -> int:
        self.posts.append((url, body))
        return self.status

    def decoded(self) -> list[dict]:
        return [qs_codec.decode(body) for _url, body in self.posts]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def call(sandbox: Sandbox, token: str, method: str, params: dict | None = None, host: str = DOMAIN):
    """One REST call in-process: (status, body)."""
    return sandbox.handle_rest(host, method, {**(params or {}), "auth": token})
