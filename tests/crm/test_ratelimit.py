"""The shared rate limiter: never above the CRM's leaky bucket, close to its floor, across processes."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest
import redis
from flask import Flask

from app.core.db import db
from app.crm.errors import RateLimitTimeout
from app.crm.ratelimit import Bucket, RateLimiter, bucket_for
from tests.conftest import TEST_REDIS_URL
from tests.crm.conftest import TlsPortal
from tests.crm.workers import burst_worker


def bucket_violations(times: list[float], bucket: Bucket) -> list[tuple[int, int]]:
    """Pairs (i, j) where requests i..j exceed what a leaky bucket of `bucket` lets through."""
    times = sorted(times)
    bad = []
    for i in range(len(times)):
        for j in range(i + 1, len(times)):
            if j - i + 1 > bucket.burst + bucket.rate * (times[j] - times[i]) + 1e-9:
                bad.append((i, j))
    return bad


def test_violation_check_can_fail():
    assert bucket_violations([0.0] * 11, Bucket(20, 10))
    assert not bucket_violations([0.0] * 10 + [0.05], Bucket(20, 10))


def test_effective_bucket_keeps_a_safety_margin(redis_client: redis.Redis):
    limiter = RateLimiter(redis_client, headroom=0.05, jitter_seconds=1.0)
    assert limiter.effective(Bucket(2, 50)) == Bucket(1.9, 48)
    assert limiter.effective(Bucket(5, 250)) == Bucket(4.75, 245)
    assert limiter.effective(Bucket(20, 10)).burst == 1  # never below one request


def test_single_process_burst_then_steady_rate(redis_client: redis.Redis):
    limiter = RateLimiter(redis_client, headroom=0.05, jitter_seconds=0.05)
    bucket = Bucket(20, 10)
    started = time.monotonic()
    times = []
    for _ in range(30):
        limiter.acquire("t", bucket)
        times.append(time.monotonic())
    assert not bucket_violations(times, bucket)
    assert times[8] - started < 0.05  # the burst goes at once
    floor = (30 - bucket.burst) / bucket.rate
    assert floor <= times[-1] - started <= floor * 1.15


def test_bounded_wait_raises_without_reserving(redis_client: redis.Redis):
    limiter = RateLimiter(redis_client, headroom=0.0, jitter_seconds=0.0, max_wait=0.2)
    bucket = Bucket(1, 2)  # effective burst 1 (one slot always held back)
    limiter.acquire("t", bucket)
    with pytest.raises(RateLimitTimeout) as caught:
        limiter.acquire("t", bucket)
    assert 0.5 < caught.value.retry_after <= 1.0
    # Nothing was reserved by the refused call: the wait did not grow.
    with pytest.raises(RateLimitTimeout) as again:
        limiter.acquire("t", bucket)
    assert again.value.retry_after <= caught.value.retry_after


def test_bucket_from_portal_settings(app: Flask):
    assert bucket_for({}, app) == Bucket(2.0, 50)
    assert bucket_for({"b24_license": "ru_ent250"}, app) == Bucket(5.0, 250)
    assert bucket_for({"rate_limit": {"rate": 3, "burst": 70}}, app) == Bucket(3.0, 70)
    app.config.update(B24_RATE=1.5, B24_BURST=20)
    assert bucket_for(None, app) == Bucket(1.5, 20)


@pytest.mark.slow
def test_two_processes_share_the_bucket(tls_portal: TlsPortal, database_url: str, tmp_path: Path):
    """200 calls from two processes against a portal whose leaky bucket is 20/s, burst 10 (ours too):
    the portal never refuses one, and the whole burst takes close to the bucket's floor.

    The limiter lives in Redis and the database only supplies the portal row, so this ~10 s test runs
    once, on PostgreSQL (the production database), not once per database."""
    if not database_url.startswith("postgresql"):
        pytest.skip("the shared bucket does not depend on the database; measured once, on PostgreSQL")
    sandbox, sb_portal = tls_portal.sandbox, tls_portal.portal
    bucket = Bucket(rate=20.0, burst=10)
    sandbox.set_rate_limit(sb_portal, rate=bucket.rate, burst=bucket.burst)
    portal = tls_portal.row
    portal.settings = {"rate_limit": {"rate": bucket.rate, "burst": bucket.burst}}
    db.session.commit()
    per_process = 100
    config = {
        **tls_portal.config,
        "B24_RATE_JITTER_SECONDS": 0.05,
        "B24_RATE_HEADROOM": 0.05,
        "REDIS_URL": TEST_REDIS_URL,
    }
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    out = ctx.Queue()
    args = (database_url, str(tmp_path), config, tls_portal.server.ca_file, portal.id, per_process)
    processes = [ctx.Process(target=burst_worker, args=(*args, barrier, out)) for _ in range(2)]
    for process in processes:
        process.start()
    reports = [out.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)

    assert [r.get("error") for r in reports] == [None, None]
    assert [r["requests"] for r in reports] == [per_process] * 2  # nothing was retried
    calls = sandbox.calls(sb_portal, "app.info")
    assert [c.status for c in calls] == [200] * 2 * per_process  # no QUERY_LIMIT_EXCEEDED from the portal
    times = sorted(c.at for c in calls)
    assert bucket_violations(times, bucket) == []
    floor = (len(times) - bucket.burst) / bucket.rate
    took = times[-1] - times[0]
    assert floor <= took <= floor * 1.15, (took, floor)
