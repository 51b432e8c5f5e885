"""GET /healthz reflects the real state of the database and Redis."""

from pathlib import Path

from flask import Flask

from app import embedded_redis
from app.jobs import record_heartbeat
from tests.conftest import make_app


def test_healthy(client, app: Flask):
    record_heartbeat()
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert body["redis"] == "ok"
    assert set(body["queues"]) == {"events", "default", "callbacks", "reports"}
    assert body["worker_last_seen"] is not None


def test_turns_503_when_redis_is_stopped(database_url: str, tmp_path: Path):
    """A real redis-server is stopped under a running app: the check must notice."""
    socket_path = Path("/tmp") / f"rc-health-{tmp_path.name}.sock"
    server = embedded_redis.start(socket_path)
    app = make_app(database_url, tmp_path, REDIS_URL=f"unix://{socket_path}")
    client = app.test_client()
    try:
        assert client.get("/healthz").status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=10)
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable"
    assert body["redis"].startswith("error")
    assert body["database"] == "ok"


def test_turns_503_when_the_database_is_unreachable(tmp_path: Path, redis_client):
    app = make_app("postgresql://nobody@127.0.0.1:1/none", tmp_path)
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["database"].startswith("error")
