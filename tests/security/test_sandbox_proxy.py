"""The demo's /sandbox proxy forwards only the kanban's own paths: `/sandbox/../rest/...` and its
percent-encoded variants never reach the sandbox portal's REST API."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import responses

from tests.test_sandbox_proxy import SANDBOX, make

ATTACKS = [
    "/sandbox/../rest/crm.deal.list.json",
    "/sandbox/%2e%2e/rest/crm.deal.list.json",
    "/sandbox/%2E%2E/rest/crm.deal.list.json",
    "/sandbox/..%2frest/crm.deal.list.json",
    "/sandbox/%2e%2e%2frest%2fcrm.deal.list.json",
    "/sandbox/api/../../rest/crm.deal.list.json",
    "/sandbox/static/../../rest/crm.deal.list.json",
    "/sandbox/static/%2e%2e/%2e%2e/rest/crm.deal.list.json",
    "/sandbox/./../rest/crm.deal.list.json",
    "/sandbox/oauth/token/",
]


@pytest.mark.parametrize("path", ATTACKS)
@responses.activate
def test_paths_outside_the_kanban_are_not_forwarded(tmp_path: Path, path: str):
    # Anything the proxy sends to the sandbox would be answered (and recorded) here.
    responses.add(responses.GET, re.compile(rf"{SANDBOX}/.*"), json={"result": ["deals"]})
    answer = make(tmp_path, SANDBOX_ENABLED=True, SANDBOX_URL=SANDBOX).get(path)
    assert answer.status_code == 404
    assert answer.get_json()["error"] == "not_found"
    assert len(responses.calls) == 0


@responses.activate
def test_the_kanban_and_its_assets_are_still_forwarded(tmp_path: Path):
    responses.get(f"{SANDBOX}/sandbox", body="<h1>kanban</h1>")
    responses.get(f"{SANDBOX}/sandbox/api/board?portal=x", json={"stages": []})
    responses.get(f"{SANDBOX}/sandbox/static/kanban.js", body="js")
    client = make(tmp_path, SANDBOX_ENABLED=True, SANDBOX_URL=SANDBOX)
    assert client.get("/sandbox").get_data(as_text=True) == "<h1>kanban</h1>"
    assert client.get("/sandbox/api/board?portal=x").get_json() == {"stages": []}
    assert client.get("/sandbox/static/kanban.js").get_data(as_text=True) == "js"
