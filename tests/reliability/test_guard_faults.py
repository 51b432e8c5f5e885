"""Faults between the portal and the guard lose nothing and do nothing twice.

Each test makes managers break the rules on a sandbox portal, disturbs the way, and then checks what
people would see: where the deals are, how many notices and QA tasks there are, how many cases we
opened; and that every inbox row and every planned effect on our side was finished.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from app.core.db import db
from app.core.models import InboxItem
from app.domain.reconcile import reconcile_portal
from tests.integration.b24 import B24, fill_refusal, new_deal
from tests.reliability.state import end_state, nothing_left_over

MANAGERS = (2, 3, 4, 5, 6)


def duplicating(transport: Any) -> Any:
    """Deliver every event twice (Bitrix24 has been seen to repeat a delivery)."""

    def send(url: str, body: str) -> int:
        transport(url, body)
        return transport(url, body)

    return send


def break_rules(b24: B24, deals: list[int], with_reason: set[int]) -> None:
    """Each deal's manager drags it to LOSE; some filled in a reason and comment first."""
    for index, deal_id in enumerate(deals):
        manager = MANAGERS[index % len(MANAGERS)]
        if deal_id in with_reason:
            fill_refusal(b24, deal_id, manager, "price", "Клиенту дорого")
        b24.sandbox.act(b24.portal, manager).move_deal(deal_id, "LOSE")


def expected(deals: list[int], with_reason: set[int]) -> dict[str, Any]:
    return {
        "stages": {d: "RC_REFUSAL" if d in with_reason else "PREPARATION" for d in deals},
        "notices": dict.fromkeys(deals, 1),
        "cases": {str(d): int(d in with_reason) for d in deals},
        "qa_tasks": {d: int(d in with_reason) for d in deals},
    }


def make_deals(b24: B24, count: int) -> list[int]:
    return [new_deal(b24, manager=MANAGERS[i % len(MANAGERS)], title=f"Сделка {i}") for i in range(count)]


def test_duplicate_and_out_of_order_events_end_like_the_clean_stream(guarded: B24):
    deals = make_deals(guarded, 6)
    with_reason = set(deals[::3])
    guarded.sandbox.transport = duplicating(guarded.sandbox.transport)
    guarded.sandbox.out_of_order = True
    break_rules(guarded, deals, with_reason)
    # The stream arrives shuffled, every event twice; our own writes fire more events meanwhile.
    guarded.settle(rounds=8)
    assert end_state(guarded, deals).__dict__ == expected(deals, with_reason)
    nothing_left_over()


def _terminate_app_connections(database_url: str) -> int:
    name = database_url.rsplit("/", 1)[1]
    server = database_url.rsplit("/", 1)[0]
    with psycopg.connect(f"{server}/postgres", autocommit=True) as connection:
        rows = connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    return len(rows)


def test_database_connections_killed_during_a_job_the_job_retries_and_nothing_is_done_twice(
    guarded: B24, database_url: str
):
    if not database_url.startswith("postgresql"):
        pytest.skip("pg_terminate_backend is a PostgreSQL fault")
    [deal_id] = make_deals(guarded, 1)
    guarded.sandbox.act(guarded.portal, 2).move_deal(deal_id, "LOSE")
    guarded.deliver()
    # The revert and the notice go out in one batch: hold it at the portal while the job waits for it.
    held = guarded.sandbox.hold(guarded.portal, "batch")
    killed: list[int] = []

    def kill_connections_while_held() -> None:
        if held.reached.wait(30):
            killed.append(_terminate_app_connections(database_url))
        guarded.sandbox.release_held()  # the portal carries the batch out; our commit after it fails

    killer = threading.Thread(target=kill_connections_while_held)
    killer.start()
    guarded.work()  # RQ workers install signal handlers: the worker runs in the main thread
    killer.join(60)
    assert killed and killed[0] >= 1, "the guard never sent its revert"
    guarded.settle()
    state = end_state(guarded, [deal_id])
    assert state.stages == {deal_id: "PREPARATION"}
    assert state.notices == {deal_id: 1}
    # The decision holds no database connection while it waits for the CRM (its writes are prepared and its
    # attempt committed before the batch), so the killed connections cost it a reconnect or one retry.
    assert db.session.scalar(sa.select(sa.func.max(InboxItem.attempts))) in (1, 2)
    nothing_left_over()


FAULTS = {
    "503 QUERY_LIMIT_EXCEEDED on the read": lambda sb, p: sb.force_error(
        p, "crm.deal.get", 503, "QUERY_LIMIT_EXCEEDED", "Too many requests", times=2
    ),
    "429 OPERATION_TIME_LIMIT on the revert": lambda sb, p: sb.force_operation_limit(
        p, "crm.deal.update", times=1, reset_in=0.01
    ),
    "502 HTML page from the proxy, the batch not run": lambda sb, p: sb.force_proxy_fault(p, "batch", "html"),
    "502 HTML page after the portal ran the batch": lambda sb, p: sb.force_proxy_fault(
        p, "batch", "html", executed=True
    ),
    "504 gateway timeout after the portal ran the batch": lambda sb, p: sb.force_proxy_fault(
        p, "batch", "timeout", executed=True
    ),
    "500 INTERNAL_SERVER_ERROR on the notice": lambda sb, p: sb.force_error(
        p, "im.notify.system.add", 500, "INTERNAL_SERVER_ERROR", "Internal server error"
    ),
    "504 gateway timeout after the portal created the QA task": lambda sb, p: sb.force_proxy_fault(
        p, "tasks.task.add", "timeout", executed=True
    ),
    "503 HTML page on the read": lambda sb, p: sb.force_proxy_fault(p, "crm.deal.get", "html", status=503, times=2),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_crm_faults_are_retried_or_fail_cleanly_and_nothing_is_done_twice(guarded: B24, fault: str):
    deals = make_deals(guarded, 2)
    with_reason = {deals[1]}
    FAULTS[fault](guarded.sandbox, guarded.portal)
    break_rules(guarded, deals, with_reason)
    guarded.settle(rounds=6)
    assert end_state(guarded, deals).__dict__ == expected(deals, with_reason)
    nothing_left_over()


@pytest.mark.parametrize("page_method", ["crm.deal.list", "event.offline.get"], ids=["sweep", "offline queue"])
def test_tokens_expiring_mid_scan_cost_one_refresh_and_the_scan_completes(guarded: B24, page_method: str):
    deals = make_deals(guarded, 3)
    sandbox, portal = guarded.sandbox, guarded.portal
    if page_method == "crm.deal.list":  # a plan without offline events: reconciliation sweeps deals
        ours = guarded.our_portal()
        ours.settings = {**ours.settings, "offline_events": False}
        db.session.commit()
    for index in range(160):  # deals the app never heard of (their events were lost)
        sandbox.act(portal, 2).create_deal(TITLE=f"Без события {index}", STAGE_ID="NEW", ASSIGNED_BY_ID=2)
    break_rules(guarded, deals, set())
    sandbox.outbox.clear()
    original = sandbox.handle_rest
    pages = []

    def expire_after_first_page(host: str | None, method: str, params: dict) -> Any:
        answer = original(host, method, params)
        if method.removesuffix(".json") == page_method and not pages:
            pages.append(method)
            sandbox.expire_access_tokens(portal)
        return answer

    sandbox.handle_rest = expire_after_first_page  # type: ignore[method-assign]
    refreshes = sandbox.oauth_calls(portal, "refresh_token")
    counts = reconcile_portal(guarded.our_portal().id)
    assert sandbox.oauth_calls(portal, "refresh_token") - refreshes == 1
    assert counts["seen"] >= 163 and counts["decided"] >= 3
    guarded.settle()
    assert end_state(guarded, deals).__dict__ == expected(deals, set())
    nothing_left_over()


@pytest.mark.parametrize("drop_rate", [0.0, 0.1])
def test_events_dropped_by_the_portal_are_found_by_reconciliation(guarded: B24, drop_rate: float):
    deals = make_deals(guarded, 40)
    with_reason = set(deals[::4])
    guarded.sandbox.drop_rate = drop_rate
    break_rules(guarded, deals, with_reason)  # 50 manager actions, about 100 events with our writes
    guarded.settle(rounds=6)
    dropped = sum(1 for d in guarded.sandbox.deliveries if d.status is None)
    assert (dropped > 0) == (drop_rate > 0)
    reconcile_portal(guarded.our_portal().id)
    guarded.settle(rounds=6)
    assert end_state(guarded, deals).__dict__ == expected(deals, with_reason)
    nothing_left_over()
