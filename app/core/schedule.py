"""The declarative table of periodic jobs, kept scheduled by every worker (idempotently)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
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
    func: Callable[[], Any]
    interval: timedelta
    queue: str = "default"
    timeout: int = 300


def periodic_jobs() -> tuple[PeriodicJob, ...]:
    """The table create_app put in the PERIODIC_JOBS config key (app.jobs.PERIODIC_JOBS; tests may override it)."""
    return tuple(current_app.config.get("PERIODIC_JOBS", ()))


def next_slot(job: PeriodicJob, now: float) -> int:
    """The number of the next slot strictly after `now` (slot n runs at n * interval)."""
    return int(now // job.interval.total_seconds()) + 1


def schedule_slot(job: PeriodicJob, slot: int) -> bool:
    """Schedule one slot; the deterministic id makes a second call (any worker) a no-op."""
    run_at = datetime.fromtimestamp(slot * job.interval.total_seconds(), UTC)
    queued = enqueue(
        job.queue,
        "app.jobs.run_periodic",
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


def run_periodic(name: str, slot: int) -> Any:
    """Run one slot of a periodic job after scheduling the following slot."""
    job = next(j for j in periodic_jobs() if j.name == name)
    schedule_slot(job, max(slot + 1, next_slot(job, time.time())))
    log.info("periodic job", extra={"periodic": name, "slot": slot})
    return job.func()
