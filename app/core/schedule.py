"""The declarative table of periodic jobs, kept scheduled by every worker (idempotently)."""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import current_app

from app.core.queue import enqueue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeriodicJob:
    """A job that runs every `interval`, at most once per slot across all workers."""

    name: str
    func: str
    interval: timedelta
    queue: str = "default"
    timeout: int = 300


PERIODIC_JOBS: tuple[PeriodicJob, ...] = (
    PeriodicJob("heartbeat", "app.jobs.record_heartbeat", timedelta(minutes=1)),
    PeriodicJob("inbox-sweep", "app.jobs.sweep_inbox", timedelta(minutes=1)),
    PeriodicJob("inbox-purge", "app.jobs.purge_inbox", timedelta(hours=1)),
    PeriodicJob("reconcile", "app.domain.reconcile.reconcile_all", timedelta(minutes=2)),
    PeriodicJob("penalty-notices", "app.domain.ledger.sweep_notices", timedelta(minutes=1)),
    PeriodicJob("scheduled-reports", "app.domain.reports.send_scheduled_reports", timedelta(minutes=15)),
    PeriodicJob("exchange-idle", "app.domain.exchange.return_idle_all", timedelta(hours=1)),
    PeriodicJob("taskcontrol", "app.domain.taskcontrol.scan_due_portals", timedelta(minutes=5)),
)


def periodic_jobs() -> tuple[PeriodicJob, ...]:
    """The table, possibly overridden in tests through the PERIODIC_JOBS config key."""
    return current_app.config.get("PERIODIC_JOBS", PERIODIC_JOBS)


def next_slot(job: PeriodicJob, now: float) -> int:
    """The number of the next slot strictly after `now` (slot n runs at n * interval)."""
    return int(now // job.interval.total_seconds()) + 1


def schedule_slot(job: PeriodicJob, slot: int) -> bool:
    """Schedule one slot; the deterministic id makes a second call (any worker) a no-op."""
    run_at = datetime.fromtimestamp(slot * job.interval.total_seconds(), UTC)
    queued = enqueue(
        job.queue,
        run_periodic,
        job.name,
        slot,
        job_id=f"periodic-{job.name}-{slot}",
        unique=True,
        at=run_at,
        timeout=job.timeout,
        result_ttl=int(job.interval.total_seconds()) * 2,
    )
    return queued is not None


def ensure_periodic_jobs(now: float | None = None) -> list[str]:
    """Make sure the next slot of every periodic job is scheduled. Returns the names newly scheduled."""
    now = time.time() if now is None else now
    return [job.name for job in periodic_jobs() if schedule_slot(job, next_slot(job, now))]


def _resolve(dotted: str) -> Any:
    module_name, _, attribute = dotted.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


def run_periodic(name: str, slot: int) -> Any:
    """Run one slot of a periodic job after scheduling the following slot."""
    job = next(j for j in periodic_jobs() if j.name == name)
    schedule_slot(job, max(slot + 1, next_slot(job, time.time())))
    log.info("periodic job", extra={"periodic": name, "slot": slot})
    return _resolve(job.func)()
