"""The per-deal lock: a short lease renewed while its holder runs, lapsing soon after the holder dies."""

import threading
import time

import pytest
from flask import Flask
from redis.exceptions import LockError

from app.core.queue import get_redis
from app.domain.effects import DealLockLost, check_deal_lock, deal_lock

KEY = "rc:lock:deal:1:5"


@pytest.fixture
def short_lease(app: Flask) -> Flask:
    app.config.update(DEAL_LOCK_SECONDS=0.3, DEAL_LOCK_WAIT_SECONDS=0.2)
    return app


def test_a_live_holder_keeps_the_deal_past_its_lease(short_lease: Flask):
    with deal_lock(1, "5"):
        time.sleep(0.8)  # more than two leases: renewed meanwhile
        with pytest.raises(LockError), deal_lock(1, "5"):
            pass
        check_deal_lock()
    assert get_redis().get(KEY) is None
    with deal_lock(1, "5"):  # released on exit
        pass


def test_two_holders_never_hold_one_deal_at_once(short_lease: Flask):
    short_lease.config["DEAL_LOCK_WAIT_SECONDS"] = 5.0
    inside: list[int] = []
    overlaps: list[int] = []

    def decide() -> None:
        with short_lease.app_context(), deal_lock(1, "5"):
            inside.append(1)
            if len(inside) > 1:
                overlaps.append(1)
            time.sleep(0.5)
            inside.pop()

    threads = [threading.Thread(target=decide) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == []


def test_a_dead_holders_lock_lapses_after_one_lease(short_lease: Flask):
    short_lease.config["DEAL_LOCK_WAIT_SECONDS"] = 5.0
    dead = get_redis().lock(KEY, timeout=0.3, thread_local=False)  # taken, never renewed nor released
    assert dead.acquire(blocking=False)
    started = time.monotonic()
    with deal_lock(1, "5"):
        waited = time.monotonic() - started
    assert 0.1 < waited < 1.0


def test_a_lost_lease_stops_the_holder_at_its_next_crm_write(short_lease: Flask):
    with pytest.raises(DealLockLost), deal_lock(1, "5") as lock:
        get_redis().set(KEY, "another holder")  # the lease lapsed (Redis unreachable) and was taken
        deadline = time.monotonic() + 2
        while not lock.lost and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(DealLockLost):
            check_deal_lock()
    assert get_redis().get(KEY) == b"another holder"
    check_deal_lock()  # no lock held any more
