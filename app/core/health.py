"""GET /healthz: database and Redis reachability, the inbox backlog, queue depths, the worker's last heartbeat."""

from __future__ import annotations

from typing import Any

import redis
import sqlalchemy as sa
from flask import Blueprint, Flask, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import SQLAlchemyError

from app.core.db import db
from app.core.models import InboxItem, utcnow
from app.core.queue import get_redis, queue_depths

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """Report each dependency; 503 when any of them is unreachable."""
    report: dict[str, Any] = {}
    healthy = True
    try:
        db.session.execute(sa.text("SELECT 1"))
        report["database"] = "ok"
        report["inbox"] = inbox_backlog()
    except SQLAlchemyError as error:
        healthy = False
        report["database"] = f"error: {type(error).__name__}"
    try:
        get_redis().ping()
        report["redis"] = "ok"
        report["queues"] = queue_depths()
        heartbeat = get_redis().get(HEARTBEAT_KEY.format(name="worker"))
        report["worker_last_seen"] = heartbeat.decode() if isinstance(heartbeat, bytes) else heartbeat
    except (redis.RedisError, OSError) as error:
        healthy = False
        report["redis"] = f"error: {type(error).__name__}"
    report["status"] = "ok" if healthy else "unavailable"
    return jsonify(report), 200 if healthy else 503


HEARTBEAT_KEY = "rc:heartbeat:{name}"  # written by the heartbeat job (app.jobs.record_heartbeat)


def inbox_backlog() -> dict[str, Any]:
    """Deliveries stored but not processed yet, the age of the oldest one, and deliveries given up on.

    A backlog that keeps growing means no worker is processing events; failed rows are kept (never
    purged) and each needs a look: its `last_error` says why.
    """
    rows = db.session.execute(
        sa.select(InboxItem.status, sa.func.count(), sa.func.min(InboxItem.received_at))
        .where(InboxItem.status.in_([InboxItem.PENDING, InboxItem.QUEUED, InboxItem.FAILED]))
        .group_by(InboxItem.status)
    ).all()
    waiting = [(count, oldest) for status, count, oldest in rows if status != InboxItem.FAILED]
    oldest = min((moment for _, moment in waiting if moment is not None), default=None)
    return {
        "waiting": sum(count for count, _ in waiting),
        "oldest_waiting_seconds": None if oldest is None else max(0, int((utcnow() - oldest).total_seconds())),
        "failed": sum(count for status, count, _ in rows if status == InboxItem.FAILED),
    }


def init_app(app: Flask) -> None:
    """Register the health endpoint."""
    app.register_blueprint(bp)
