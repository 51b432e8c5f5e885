"""A per-portal rate limiter shared by every web and worker process through Redis.

Bitrix24 limits each portal (and source IP) with a leaky bucket: it drains `rate` requests per
second and refuses with 503 QUERY_LIMIT_EXCEEDED above `burst` (2/50; Enterprise 5/250,
reference/bitrix24.md section 12). We model exactly that bucket with GCRA (the "virtual scheduling"
form of a leaky bucket) in one atomic Lua script:

* Redis keeps one number per portal, the theoretical arrival time (TAT) of the next request.
* A request at `now` may go at ``max(TAT, now) - (burst - 1) / rate``; taking it moves TAT on by
  ``1 / rate``. Requests therefore satisfy ``count(s..t) <= burst + rate * (t - s)`` for every
  interval, which is precisely the leaky-bucket condition, and the long-run floor is ``rate``.
* The script *reserves* the slot and returns how long the caller must sleep before sending, so a
  waiting caller costs one Redis round trip and callers are served first-come first-served.
* Time comes from Redis (``TIME``), so processes on several hosts share one clock.

Why not the `limits` library (pinned 5.8.0)? Its Redis storage does work with our URLs (it
needs ``redis+unix://`` instead of ``unix://`` and opens its own connection pool), but its strategies
are windows, not buckets. A moving window of `burst` per `burst / rate` seconds never exceeds the
bucket and has the same floor, yet it releases capacity in lumps: after a burst of 50 the 51st request
waits 25 s, where the CRM would accept it after 0.5 s. A guard revert queued behind a scan would blow
its one-second budget. The sliding-window counter is an approximation that can exceed the bucket, and
the fixed window allows twice the burst at a boundary. GCRA is fifteen lines of Lua, exact and O(1).

Safety margin: our clock says when a request was *sent*; the CRM counts when it *arrives*. Jitter J
can squeeze arrivals so the CRM sees up to ``rate * J`` more requests in an interval than we did. So
we hold back ``ceil(rate * B24_RATE_JITTER_SECONDS)`` slots of the burst (at least one) and
``B24_RATE_HEADROOM`` (a fraction) of the rate, which also absorbs any coarseness in how the CRM
drains its bucket.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app
from redis import Redis

from app.core.queue import LIMITER_WAIT_BUDGET, JobDeferred
from app.crm.errors import RateLimitTimeout

KEY_PREFIX = "rc:rl:"
ENTERPRISE_RATE = 5.0
ENTERPRISE_BURST = 250
_ENTERPRISE_LICENSE = re.compile(r"(^|_)ent", re.IGNORECASE)

# KEYS[1]: TAT key. ARGV: emission interval (us), burst tolerance (us), max wait (us).
# Returns the microseconds to wait before sending (slot reserved), or -wait when it is over max wait
# (nothing reserved).
_GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then
  tat = now
end
local wait = tat - tolerance - now
if wait < 0 then
  wait = 0
end
if wait > max_wait then
  return -wait
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return wait
"""


class RateLimitDeferred(RateLimitTimeout, JobDeferred):
    """A job would wait longer than its budget for a request slot: it is put back (not a failed attempt)."""

    default_code = "RATE_LIMIT_DEFERRED"


@dataclass(frozen=True)
class Bucket:
    """A leaky bucket: drains `rate` requests per second, holds at most `burst`."""

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError(f"invalid bucket rate={self.rate} burst={self.burst}")


class RateLimiter:
    """Blocking GCRA limiter in Redis; one instance per process is enough (it holds no state)."""

    def __init__(
        self,
        redis: Redis,
        *,
        headroom: float = 0.05,
        jitter_seconds: float = 1.0,
        max_wait: float = 120.0,
        prefix: str = KEY_PREFIX,
    ) -> None:
        if not 0 <= headroom < 1:
            raise ValueError("headroom must be in [0, 1)")
        self.redis = redis
        self.headroom = headroom
        self.jitter_seconds = max(0.0, jitter_seconds)
        self.max_wait = max_wait
        self.prefix = prefix
        self._script = redis.register_script(_GCRA_LUA)

    def effective(self, bucket: Bucket) -> Bucket:
        """The bucket we actually enforce: the CRM's minus the safety margin."""
        held_back = max(1, math.ceil(bucket.rate * self.jitter_seconds))
        burst = max(1, bucket.burst - held_back)
        return Bucket(rate=bucket.rate * (1 - self.headroom), burst=burst)

    def reserve(self, key: str, bucket: Bucket, max_wait: float | None = None) -> float:
        """Reserve the next slot; returns the seconds to wait before using it.

        Raises RateLimitTimeout (reserving nothing) when the wait would exceed `max_wait`.
        """
        limit = self.max_wait if max_wait is None else max_wait
        enforced = self.effective(bucket)
        interval_us = 1_000_000 / enforced.rate
        tolerance_us = (enforced.burst - 1) * interval_us
        result = int(self._script(keys=[self.prefix + key], args=[interval_us, tolerance_us, limit * 1_000_000]))
        if result < 0:
            raise RateLimitTimeout(f"no request slot for {key} within {limit:.1f}s", retry_after=-result / 1_000_000)
        return result / 1_000_000

    def acquire(self, key: str, bucket: Bucket, max_wait: float | None = None) -> float:
        """Block until a request under `key` may be sent; returns the seconds waited.

        Inside a job of the hot worker (app.core.queue.LIMITER_WAIT_BUDGET set) a wait longer than that budget
        raises RateLimitDeferred instead, reserving nothing: the job is put back for when a slot frees, and
        the worker goes on with other portals' jobs rather than sleeping for this portal.
        """
        budget = LIMITER_WAIT_BUDGET.get()
        if budget is not None and (max_wait is None or budget < max_wait):
            try:
                wait = self.reserve(key, bucket, budget)
            except RateLimitTimeout as error:
                raise RateLimitDeferred(
                    f"{key} is at its CRM rate limit; put back for {error.retry_after or 0:.1f}s",
                    retry_after=error.retry_after,
                ) from None
            if wait > 0:
                time.sleep(wait)
            return wait
        wait = self.reserve(key, bucket, max_wait)
        if wait > 0:
            time.sleep(wait)
        return wait

    def reset(self, key: str) -> None:
        """Forget the state of one key (tests, portal removal)."""
        self.redis.delete(self.prefix + key)


_LIMITERS: dict[tuple[int, float, float, float], RateLimiter] = {}


def limiter_for(app: Flask | None = None) -> RateLimiter:
    """The process-wide limiter configured from the app (B24_RATE_HEADROOM, ...)."""
    from app.core.queue import get_redis

    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    config = app.config
    redis = get_redis(app)
    options = (
        float(config["B24_RATE_HEADROOM"]),
        float(config["B24_RATE_JITTER_SECONDS"]),
        float(config["B24_RATE_MAX_WAIT_SECONDS"]),
    )
    cache_key = (id(redis), *options)
    if cache_key not in _LIMITERS:
        _LIMITERS[cache_key] = RateLimiter(redis, headroom=options[0], jitter_seconds=options[1], max_wait=options[2])
    return _LIMITERS[cache_key]


def bucket_for(settings: Mapping[str, Any] | None, app: Flask | None = None) -> Bucket:
    """The CRM's bucket for a Bitrix24 portal, from its settings.

    ``settings["rate_limit"] = {"rate": float, "burst": int}`` wins; else an Enterprise licence
    (``settings["b24_license"]`` as app.info reports it, e.g. "ru_ent250") gives 5/250; else the app
    defaults B24_RATE / B24_BURST (2/50).
    """
    config = (app or current_app).config
    settings = settings or {}
    override = settings.get("rate_limit") or {}
    if _ENTERPRISE_LICENSE.search(str(settings.get("b24_license") or "")):
        rate, burst = ENTERPRISE_RATE, ENTERPRISE_BURST
    else:
        rate, burst = float(config["B24_RATE"]), int(config["B24_BURST"])
    return Bucket(rate=float(override.get("rate", rate)), burst=int(override.get("burst", burst)))


def portal_key(portal_id: int) -> str:
    """The limiter key of a Bitrix24 portal."""
    return f"b24:{portal_id}"


def amo_key(portal_id: int) -> str:
    """The limiter key of an amoCRM account (7 req/s per integration and account, reference/amocrm.md 9)."""
    return f"amo:{portal_id}"


def amo_bucket(settings: Mapping[str, Any] | None, app: Flask | None = None) -> Bucket:
    """amoCRM's limit for one account: AMO_RATE / AMO_BURST (7/7), ``settings["rate_limit"]`` wins."""
    config = (app or current_app).config
    override = (settings or {}).get("rate_limit") or {}
    return Bucket(
        rate=float(override.get("rate", config["AMO_RATE"])), burst=int(override.get("burst", config["AMO_BURST"]))
    )


def acquire(key: str, bucket: Bucket | None = None, *, app: Flask | None = None) -> float:
    """Block until a request under `key` may be sent (default bucket from the config)."""
    return limiter_for(app).acquire(key, bucket or bucket_for(None, app))


def retry_delay(
    attempt: int, retry_after: float | None, *, attempts: int, base_delay: float, max_delay: float
) -> float | None:
    """Seconds to sleep before retry number `attempt` (1-based) after the CRM refused for its limit, or None
    to give up: the CRM's own Retry-After when it names one we can wait for, else exponential backoff with
    jitter."""
    if attempt >= attempts:
        return None
    if retry_after is not None:
        return retry_after if retry_after <= max_delay else None
    delay = min(max_delay, base_delay * 2 ** (attempt - 1))
    return delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not cryptography
