"""Redis down at ingest: the event is stored and acknowledged, and processed once Redis is back."""

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa

from app.core import embedded_redis, inbox
from app.core.db import db
from app.core.models import InboxItem, Portal
from tests.conftest import make_app, run_jobs


def body(member_id: str, token: str, deal_id: str) -> str:
    return urlencode(
        {
            "event": "ONCRMDEALUPDATE",
            "data[FIELDS][ID]": deal_id,
            "ts": "1764070000",
            "auth[member_id]": member_id,
            "auth[application_token]": token,
            "auth[access_token]": "x",
        }
    )


def test_event_is_kept_while_redis_is_down_and_processed_after(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, app
):
    socket_path = Path("/tmp") / f"rc-outage-{tmp_path.name}.sock"
    server = embedded_redis.start(socket_path)
    outage_app = make_app(database_url, tmp_path, REDIS_URL=f"unix://{socket_path}")
    seen: list[str] = []
    monkeypatch.setitem(inbox.PROCESSORS, ("b24", "ONCRMDEALUPDATE"), lambda item: seen.append(item.dedupe_key))
    with outage_app.app_context():
        db.session.add(
            Portal(
                crm="bitrix24",
                external_id="m-out",
                domain="o.test",
                rest_base="https://o.test/rest/",
                application_token="tok",
                status="installed",
                settings={},
            )
        )
        db.session.commit()
        client = outage_app.test_client()
        server.terminate()
        server.wait(timeout=10)

        response = client.post(
            "/b24/events", data=body("m-out", "tok", "5"), content_type="application/x-www-form-urlencoded"
        )
        assert response.status_code == 200
        [row] = db.session.scalars(sa.select(InboxItem)).all()
        assert row.status == InboxItem.PENDING

        server = embedded_redis.start(socket_path)
        try:
            db.session.execute(sa.update(InboxItem).values(received_at=row.received_at - timedelta(minutes=5)))
            db.session.commit()
            assert inbox.sweep() == 1
            run_jobs(outage_app)
            db.session.expire_all()
            assert db.session.get(InboxItem, row.id).status == InboxItem.DONE
            assert len(seen) == 1
        finally:
            server.terminate()
            server.wait(timeout=10)


def test_after_a_redis_restart_the_next_event_is_queued_at_once(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, app
):
    """The web process's connection dies with the server; the next webhook reconnects instead of waiting for
    the sweep."""
    socket_path = Path("/tmp") / f"rc-restart-{tmp_path.name}.sock"
    server = embedded_redis.start(socket_path)
    restart_app = make_app(database_url, tmp_path, REDIS_URL=f"unix://{socket_path}")
    seen: list[str] = []
    monkeypatch.setitem(inbox.PROCESSORS, ("b24", "ONCRMDEALUPDATE"), lambda item: seen.append(item.dedupe_key))
    try:
        with restart_app.app_context():
            db.session.add(
                Portal(
                    crm="bitrix24",
                    external_id="m-restart",
                    domain="r.test",
                    rest_base="https://r.test/rest/",
                    application_token="tok",
                    status="installed",
                    settings={},
                )
            )
            db.session.commit()
            client = restart_app.test_client()
            form = "application/x-www-form-urlencoded"
            assert client.post("/b24/events", data=body("m-restart", "tok", "1"), content_type=form).status_code == 200
            run_jobs(restart_app)
            server.terminate()
            server.wait(timeout=10)
            server = embedded_redis.start(socket_path)

            assert client.post("/b24/events", data=body("m-restart", "tok", "2"), content_type=form).status_code == 200
            run_jobs(restart_app)  # no sweep: the event's job was queued by the webhook itself
            rows = db.session.scalars(sa.select(InboxItem).order_by(InboxItem.id)).all()
            assert [row.status for row in rows] == [InboxItem.DONE, InboxItem.DONE]
            assert len(seen) == 2 and ":2:1764070000:" in seen[1]
    finally:
        server.terminate()
        server.wait(timeout=10)
