"""/sandbox on the app's address forwards to the demo's sandbox portal, and exists only when the sandbox is on."""

from __future__ import annotations

from pathlib import Path

import requests
import responses

from app import create_app

SANDBOX = "https://127.0.0.1:8443"


def make(tmp_path: Path, **config: object):
    return create_app(
        {
            "TESTING": True,
            "INSTANCE_PATH": str(tmp_path),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "SECRET_KEY": "test",
            **config,
        }
    ).test_client()


def test_no_sandbox_route_unless_enabled(tmp_path: Path):
    answer = make(tmp_path, SANDBOX_ENABLED=False, SANDBOX_URL=SANDBOX).get("/sandbox")
    assert answer.status_code == 404


def test_enabled_without_a_running_sandbox_says_how_to_start_it(tmp_path: Path):
    answer = make(tmp_path, SANDBOX_ENABLED=True, SANDBOX_URL="").get("/sandbox")
    assert answer.status_code == 503 and "make run" in answer.get_json()["message"]


@responses.activate
def test_requests_and_answers_pass_through(tmp_path: Path):
    responses.get(f"{SANDBOX}/sandbox", body="<h1>kanban</h1>", content_type="text/html; charset=utf-8")
    responses.post(
        f"{SANDBOX}/sandbox/api/move?portal=x",
        json={"error": "bad_request", "message": "no deal '9'"},
        status=400,
        match=[responses.matchers.json_params_matcher({"deal_id": "9"})],
    )
    client = make(tmp_path, SANDBOX_ENABLED=True, SANDBOX_URL=SANDBOX)
    page = client.get("/sandbox")
    assert page.status_code == 200 and page.get_data(as_text=True) == "<h1>kanban</h1>"
    assert page.content_type == "text/html; charset=utf-8"
    moved = client.post("/sandbox/api/move?portal=x", json={"deal_id": "9"})
    assert moved.status_code == 400 and moved.get_json()["message"] == "no deal '9'"


@responses.activate
def test_an_unreachable_sandbox_is_a_502_with_a_message(tmp_path: Path):
    responses.get(f"{SANDBOX}/sandbox/api/board", body=requests.ConnectionError("refused"))
    answer = make(tmp_path, SANDBOX_ENABLED=True, SANDBOX_URL=SANDBOX).get("/sandbox/api/board")
    assert answer.status_code == 502 and "did not answer" in answer.get_json()["message"]
