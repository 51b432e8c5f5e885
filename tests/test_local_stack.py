"""The README run command brings up web, worker, scheduler and an embedded Redis as real processes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from app import create_app
from app.core.queue import enqueue

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _health(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return json.loads(response.read())
    except OSError:
        return None


def test_run_command_serves_and_runs_now_and_scheduled_jobs(tmp_path: Path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL"}}
    env.update(INSTANCE_PATH=str(tmp_path), PORT=str(port))
    stack = subprocess.Popen([sys.executable, "-m", "app.local"], cwd=ROOT, env=env)
    try:
        health = _wait_for(lambda: _health(port), 40, "/healthz")
        assert health["status"] == "ok"

        app = create_app({"INSTANCE_PATH": str(tmp_path)})
        with app.app_context():
            enqueue("default", "app.jobs.record_heartbeat", "stack-now")
            enqueue("default", "app.jobs.record_heartbeat", "stack-later", delay=timedelta(seconds=3))
        client = redis.Redis(unix_socket_path=str(tmp_path / "redis.sock"))
        _wait_for(lambda: client.get("rc:heartbeat:stack-now"), 20, "the enqueued job")
        assert client.get("rc:heartbeat:stack-later") is None
        _wait_for(lambda: client.get("rc:heartbeat:stack-later"), 30, "the scheduled job")
        assert (tmp_path / "refusal_control.sqlite3").exists()
    finally:
        stack.send_signal(signal.SIGINT)
        code = stack.wait(timeout=60)
    assert code == 0
    leftovers = subprocess.run(["pgrep", "-f", f"unixsocket {tmp_path}"], capture_output=True, check=False)
    assert leftovers.stdout == b"", "the embedded redis-server must stop with the stack"


def test_demo_run_installs_the_app_into_the_sandbox_portal(tmp_path: Path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL", "PUBLIC_URL"}}
    env.update(INSTANCE_PATH=str(tmp_path), PORT=str(port), SANDBOX_ENABLED="1")
    stack = subprocess.Popen([sys.executable, "-m", "app.local"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        ready = _wait_for(lambda: _read_until(stack, "Demo ready"), 180, "the demo to be installed")
        assert f"{base}/sandbox" in ready
        assert _health(port)["status"] == "ok"
        with urllib.request.urlopen(f"{base}/sandbox", timeout=20) as page:
            assert page.status == 200 and "канбан" in page.read().decode()
        with urllib.request.urlopen(f"{base}/sandbox/api/board?user=2", timeout=20) as answer:
            board = json.loads(answer.read())
        assert board["portal"]["installed"] is True
        assert "RC_REFUSAL" in [stage["id"] for stage in board["stages"]]
        assert {field["name"] for field in board["fields"]} >= {"UF_CRM_RC_REASON", "UF_CRM_RC_COMMENT"}

        app = create_app({"INSTANCE_PATH": str(tmp_path)})
        with app.app_context():
            import sqlalchemy as sa

            from app.core.db import db
            from app.core.models import Portal
            from app.domain.settings import guard_settings

            [portal] = db.session.scalars(sa.select(Portal).where(Portal.status == "installed")).all()
            assert guard_settings(portal).qa_users == ("7", "8") and guard_settings(portal).heads == ("9",)

        deal = next(d for d in board["deals"] if d["stage_id"] in {"NEW", "PREPARATION", "EXECUTING"})
        request = urllib.request.Request(
            f"{base}/sandbox/api/move",
            data=json.dumps({"user": deal["responsible_id"], "deal_id": deal["id"], "stage_id": "LOSE"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=20) as answer:
            assert json.loads(answer.read())["stage_id"] == "LOSE"

        def reverted() -> dict | None:
            url = f"{base}/sandbox/api/board?user={deal['responsible_id']}"
            with urllib.request.urlopen(url, timeout=20) as answer:
                now = json.loads(answer.read())
            [again] = [d for d in now["deals"] if d["id"] == deal["id"]]
            return now if again["stage_id"] == deal["stage_id"] and now["notifications"] else None

        after = _wait_for(reverted, 90, "the guard to move the deal back")
        assert "нельзя закрыть" in after["notifications"][0]["message"]
    finally:
        stack.send_signal(signal.SIGINT)
        code = stack.wait(timeout=60)
    assert code == 0
    leftovers = subprocess.run(["pgrep", "-f", f"unixsocket {tmp_path}"], capture_output=True, check=False)
    assert leftovers.stdout == b"", "the embedded redis-server must stop with the stack"


def _read_until(process: subprocess.Popen, marker: str) -> str | None:
    """The next stdout line of the launcher, if it carries `marker`."""
    line = process.stdout.readline()
    if not line:
        raise AssertionError(f"the launcher exited with {process.poll()} before saying {marker!r}")
    return line if marker in line else None
