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
from app.queue import enqueue

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
