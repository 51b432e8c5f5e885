"""GET /healthz reflects the real state of the database and Redis."""

from datetime import timedelta
from pathlib import Path

from flask import Flask

from app.core import embedded_redis, inbox
from app.core.db import db
from app.core.models import InboxItem, utcnow
from app.jobs import record_heartbeat
from tests.conftest import make_app
from tests.helpers import make_portal


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
    assert body["inbox"] == {"waiting": 0, "oldest_waiting_seconds": None, "failed": 0}


def test_reports_the_inbox_backlog_and_the_deliveries_given_up_on(client, app: Flask):
    portal_id = make_portal().id
    statuses = {"a": InboxItem.PENDING, "b": InboxItem.QUEUED, "c": InboxItem.FAILED, "d": InboxItem.DONE}
    rows = {
        key: db.session.get(InboxItem, inbox.store("b24", "ONCRMDEALUPDATE", key, "body", portal_id))
        for key in statuses
    }
    for key, status in statuses.items():
        rows[key].status = status
    rows["a"].received_at = utcnow() - timedelta(minutes=10)
    rows["c"].received_at = utcnow() - timedelta(days=3)  # failed rows do not count as waiting
    db.session.commit()
    report = client.get("/healthz").get_json()["inbox"]
    assert report["waiting"] == 2 and report["failed"] == 1
    assert 600 <= report["oldest_waiting_seconds"] < 660


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
