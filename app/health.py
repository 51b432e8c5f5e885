"""GET /healthz: database and Redis reachability, queue depths, the worker's last heartbeat."""

from __future__ import annotations

from typing import Any

import redis
import sqlalchemy as sa
from flask import Blueprint, Flask, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import SQLAlchemyError

from app.db import db
from app.jobs import HEARTBEAT_KEY
from app.queue import get_redis, queue_depths

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """Report each dependency; 503 when any of them is unreachable."""
    report: dict[str, Any] = {}
    healthy = True
    try:
        db.session.execute(sa.text("SELECT 1"))
        report["database"] = "ok"
    except SQLAlchemyError as error:
        healthy = False
        report["database"] = f"error: {type(error).__name__}"
    try:
        get_redis().ping()
        report["redis"] = "ok"
        report["queues"] = queue_depths()
        heartbeat = get_redis().get(HEARTBEAT_KEY.format(name="worker"))
        report["worker_last_seen"] = heartbeat.decode() if heartbeat else None
    except (redis.RedisError, OSError) as error:
        healthy = False
        report["redis"] = f"error: {type(error).__name__}"
    report["status"] = "ok" if healthy else "unavailable"
    return jsonify(report), 200 if healthy else 503


def init_app(app: Flask) -> None:
    """Register the health endpoint."""
    app.register_blueprint(bp)
