"""`flask worker`: apply migrations, schedule periodic jobs, run the workers."""

from __future__ import annotations

import logging

import click
from flask import Flask, current_app

from app.core import db as database
from app.core.schedule import ensure_periodic_jobs
from app.core.worker import Supervisor, make_worker

log = logging.getLogger(__name__)


@click.command("worker")
@click.option("--queues", "-q", default="", help="Comma-separated queue names; all queues by default.")
@click.option("--burst", is_flag=True, help="Stop when the queues are empty (one worker, jobs run in-process).")
def worker_command(queues: str, burst: bool) -> None:
    """Apply migrations, schedule periodic jobs, then run the workers with the built-in scheduler.

    By default a supervisor runs the events queue's jobs in-process in one child process and the other
    queues in a forking RQ worker (WORKER_IN_PROCESS=0: one forking RQ worker for every queue).
    """
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]  # werkzeug's LocalProxy method, not in Flask's stub
    database.upgrade()
    scheduled = ensure_periodic_jobs()
    log.info("worker starting", extra={"periodic_scheduled": scheduled})
    names = [name.strip() for name in queues.split(",") if name.strip()] or None
    for name in names or ():
        if name not in app.config["QUEUE_NAMES"]:
            raise click.BadParameter(f"unknown queue {name!r}", param_hint="--queues")
    if burst:
        make_worker(app, names, simple=True).work(
            burst=True, with_scheduler=True, logging_level=app.config["LOG_LEVEL"]
        )
        return
    if not app.config["WORKER_IN_PROCESS"]:
        make_worker(app, names).work(with_scheduler=True, logging_level=app.config["LOG_LEVEL"])
        return
    database.db.engine.dispose()  # the children open their own connections
    Supervisor(app, names, logging_level=app.config["LOG_LEVEL"]).run()
