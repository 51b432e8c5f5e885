"""`flask worker`: apply migrations, schedule periodic jobs, run an RQ worker."""

from __future__ import annotations

import logging

import click
from flask import Flask, current_app

from app.core import db as database
from app.core.schedule import ensure_periodic_jobs
from app.core.worker import make_worker

log = logging.getLogger(__name__)


@click.command("worker")
@click.option("--queues", "-q", default="", help="Comma-separated queue names; all queues by default.")
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
def worker_command(queues: str, burst: bool) -> None:
    """Apply migrations, schedule periodic jobs, then run an RQ worker with the built-in scheduler."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]  # werkzeug's LocalProxy method, not in Flask's stub
    database.upgrade()
    scheduled = ensure_periodic_jobs()
    log.info("worker starting", extra={"periodic_scheduled": scheduled})
    names = [name.strip() for name in queues.split(",") if name.strip()] or None
    worker = make_worker(app, names)
    worker.work(with_scheduler=True, burst=burst, logging_level=app.config["LOG_LEVEL"])
