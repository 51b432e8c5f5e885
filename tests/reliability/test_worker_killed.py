"""A worker killed with SIGKILL in the middle of a decision: a new worker finishes it, nothing is done twice.

The sandbox portal is served over TLS from the test process; its events reach the app in-process
(the webhook handler stores the inbox row and enqueues the job on the test Redis); the jobs run in
real worker processes (`flask --app wsgi worker`) that reach the portal over HTTPS like a real one.

A manager drags a deal to LOSE without a refusal reason; the guard's revert and notice (one batch)
are stopped at the portal while the first worker waits for the answer. Then every process of that
worker is killed with SIGKILL: the supervisor, the events queue's in-process worker running the decision,
the slow queues' worker and its scheduler (the whole session, as a container or machine death does).
A second worker starts. The job must be noticed as abandoned and run again, the deal lock of the dead
work-horse must lapse, and the end state must be the one of an undisturbed run.

The worker's timings are scaled down through the environment (heartbeat every second, abandoned 3 s
after the last one, maintenance every 2 s, deal lease 4 s) so the test stays short; the defaults and
the recovery time they give are in README, Deploying.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from app.core.db import db
from app.core.models import Effect, InboxItem
from app.crm.factory import client_for
from app.domain import directory
from sandbox import Sandbox, serve_tls
from sandbox.events import flask_client_transport
from tests.conftest import TEST_REDIS_URL
from tests.integration.b24 import APP_URL, B24, configure_guard, new_deal
from tests.reliability.state import end_state, nothing_left_over

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SCALED_DOWN = {
    "JOB_HEARTBEAT_SECONDS": "1",
    "JOB_HEARTBEAT_GRACE_SECONDS": "2",
    "WORKER_MAINTENANCE_SECONDS": "2",
    "DEAL_LOCK_SECONDS": "4",
}
# Abandoned 3 s after the last heartbeat (at most 1 s before the kill), seen by the next maintenance run
# (2 s), the retry run at once; the new worker's start and the retried decision take the rest.
RECOVERY_BOUND_SECONDS = 15.0


@pytest.fixture
def portal_over_tls(app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[B24]:
    """A sandbox portal served over HTTPS, the app installed in it and the guard configured."""
    sandbox = Sandbox(transport=flask_client_transport(app.test_client()))
    server = serve_tls(sandbox, tmp_path / "tls")
    portal = sandbox.seed_portal(domain=server.portal_domain, installed=False, app_url=APP_URL, seed=42)
    sandbox.set_rate_limit(portal, rate=200, burst=200)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", server.ca_file)
    app.config.update(
        B24_CLIENT_ID=portal.client_id,
        B24_CLIENT_SECRET=portal.client_secret,
        B24_OAUTH_SERVER=f"https://{server.oauth_host}",
        B24_RATE=150.0,
        B24_BURST=150,
    )
    b24 = B24(app=app, client=app.test_client(), sandbox=sandbox, portal=portal)
    try:
        b24.install()
        configure_guard(b24.our_portal())
        yield b24
    finally:
        sandbox.release_held()
        server.shutdown()


def worker_env(app: Flask, instance: Path) -> dict[str, str]:
    """The settings of a worker process: the test's database, Redis and portal credentials."""
    config = app.config
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST", "COV_"))}
    env.update(
        INSTANCE_PATH=str(instance),
        DATABASE_URL=config["DATABASE_URL"],
        REDIS_URL=TEST_REDIS_URL,
        SECRET_KEY=config["SECRET_KEY"],
        PUBLIC_URL=config["PUBLIC_URL"],
        B24_CLIENT_ID=config["B24_CLIENT_ID"],
        B24_CLIENT_SECRET=config["B24_CLIENT_SECRET"],
        B24_OAUTH_SERVER=config["B24_OAUTH_SERVER"],
        B24_RATE="150",
        B24_BURST="150",
        LOG_LEVEL="INFO",
        **SCALED_DOWN,
    )
    return env


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`flask --app wsgi worker` in a session of its own (its pid is the session id)."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "wsgi", "worker"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def session_members(session_id: int) -> dict[int, int]:
    """Live processes of a session: pid -> process group id (from /proc)."""
    members = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, pgrp, session = fields[0], int(fields[2]), int(fields[3])
        if session == session_id and state != "Z":
            members[int(entry.name)] = pgrp
    return members


def kill_session(worker: subprocess.Popen[bytes]) -> dict[int, int]:
    """SIGKILL every process group of the worker's session; returns the processes killed (pid -> group)."""
    members = session_members(worker.pid)
    for group in set(members.values()):
        os.killpg(group, signal.SIGKILL)
    worker.wait(timeout=10)
    wait_for(lambda: not session_members(worker.pid), 10, "the killed processes to go")
    return members


def wait_for(check: Callable[[], Any], timeout: float, what: str, log_path: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    tail = log_path.read_text()[-4000:] if log_path is not None and log_path.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def settled(b24: B24) -> bool:
    """Deliver the portal's events; true once every inbox row and every effect is done."""
    b24.deliver()
    db.session.expire_all()
    open_rows = db.session.scalar(sa.select(sa.func.count()).where(InboxItem.status != InboxItem.DONE))
    open_effects = db.session.scalar(sa.select(sa.func.count()).where(Effect.status != Effect.DONE))
    db.session.commit()  # end the read transaction: the workers write to the same database
    return open_rows == 0 and open_effects == 0 and not b24.sandbox.pending_events()


@pytest.mark.parametrize("revert_lands", [True, False], ids=["revert-landed", "revert-lost"])
def test_worker_killed_mid_decision_a_new_worker_finishes_it_once(
    portal_over_tls: B24, tmp_path: Path, revert_lands: bool
):
    b24 = portal_over_tls
    deal_id = new_deal(b24, manager=2)
    ours = b24.our_portal()
    # The guard's look-ups of users and stages are cached (one is a batch): the decision's only batch is the revert.
    directory.users(ours.id, client_for(ours))
    directory.pipelines(ours.id, client_for(ours))
    env = worker_env(b24.app, tmp_path)
    first_log, second_log = tmp_path / "worker-1.log", tmp_path / "worker-2.log"
    if revert_lands:  # the portal carries the batch out once released; the answer reaches nobody
        held = b24.sandbox.hold(b24.portal, "batch")
    else:  # the batch hangs in a proxy and is never carried out
        held = b24.sandbox.force_proxy_fault(b24.portal, "batch", "timeout", delay=60)

    first = start_worker(env, first_log)
    try:
        b24.sandbox.act(b24.portal, 2).move_deal(deal_id, "LOSE")
        b24.deliver()
        wait_for(held.reached.is_set, 30, "the guard's revert to reach the portal", first_log)
        killed = kill_session(first)
    finally:
        if first.poll() is None:
            kill_session(first)
    # The supervisor, its in-process events worker (running the decision), the slow queues' worker and its
    # scheduler: the whole process tree died, as in a container or machine death.
    assert len(killed) >= 3
    killed_at = time.monotonic()
    if revert_lands:
        b24.sandbox.release_held()
        wait_for(lambda: b24.stage(deal_id) == "PREPARATION", 10, "the held revert to land")
    db.session.expire_all()
    [effect_attempts] = set(db.session.scalars(sa.select(Effect.attempts)).all())
    assert effect_attempts == 1  # the revert and its notice were sent once, and not marked done
    db.session.commit()

    second = start_worker(env, second_log)
    try:
        wait_for(lambda: settled(b24), 40, "the new worker to finish the job", second_log)
        recovery = time.monotonic() - killed_at
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(timeout=20)
        except subprocess.TimeoutExpired:
            kill_session(second)

    assert recovery < RECOVERY_BOUND_SECONDS, f"recovered in {recovery:.1f} s"
    state = end_state(b24, [deal_id])
    assert state.stages == {deal_id: "PREPARATION"}
    assert state.notices == {deal_id: 1}
    assert state.cases == {str(deal_id): 0}
    nothing_left_over()
    db.session.expire_all()
    effects = db.session.scalars(sa.select(Effect)).all()
    assert {(effect.kind, effect.attempts) for effect in effects} == {("move", 2), ("notify", 2)}
    reverts = [call for call in b24.sandbox.call_log if call.method == "crm.deal.update" and call.in_batch]
    assert len(reverts) == (2 if revert_lands else 1)  # carried out by the dead worker's batch, then by ours


def test_worker_killed_while_deciding_a_group_every_row_is_still_decided_once(portal_over_tls: B24, tmp_path: Path):
    """Five deals set to lost at once: the first job takes the other four events as its group (their deal locks
    held, an attempt counted on their rows) and is killed while the group's one read waits at the portal. No
    row was marked done, so their jobs (the dead one retried, the others still queued) decide every deal once
    as soon as the dead worker's leases lapse."""
    b24 = portal_over_tls
    deal_ids = [new_deal(b24, manager=2) for _ in range(5)]
    ours = b24.our_portal()
    directory.users(ours.id, client_for(ours))
    directory.pipelines(ours.id, client_for(ours))
    env = worker_env(b24.app, tmp_path)
    first_log, second_log = tmp_path / "worker-1.log", tmp_path / "worker-2.log"
    held = b24.sandbox.hold(b24.portal, "batch")  # the group's read (crm.deal.list of the five, in a batch)

    for deal_id in deal_ids:
        b24.sandbox.act(b24.portal, 2).move_deal(deal_id, "LOSE")
    b24.deliver()
    first = start_worker(env, first_log)
    try:
        wait_for(held.reached.is_set, 30, "the group's read to reach the portal", first_log)
        killed = kill_session(first)
    finally:
        if first.poll() is None:
            kill_session(first)
    assert len(killed) >= 2
    b24.sandbox.release_held()
    db.session.expire_all()
    rows = db.session.execute(
        sa.select(InboxItem.status, InboxItem.attempts).where(InboxItem.kind == "ONCRMDEALUPDATE")
    ).all()
    assert [tuple(row) for row in rows] == [("pending", 1)] * 5, "all five claimed by the dead group, none done"
    db.session.commit()

    second = start_worker(env, second_log)
    try:
        wait_for(lambda: settled(b24), 40, "the new worker to decide every row", second_log)
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(timeout=20)
        except subprocess.TimeoutExpired:
            kill_session(second)

    state = end_state(b24, deal_ids)
    assert state.stages == dict.fromkeys(deal_ids, "PREPARATION")
    assert state.notices == dict.fromkeys(deal_ids, 1)
    nothing_left_over()
    db.session.expire_all()
    effects = db.session.scalars(sa.select(Effect)).all()
    assert len(effects) == 10 and {effect.attempts for effect in effects} == {1}, "each revert and notice sent once"
