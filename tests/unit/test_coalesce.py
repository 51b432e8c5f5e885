"""Deal events of one portal decided together (`deal_events.deals_changed`) on the in-memory CRM: one read of
every deal, one packed write, each deal still decided on its own, the echo of our own write told without a
read, and a deal another job holds left to that job."""

from __future__ import annotations

import sqlalchemy as sa

from app.core.db import db
from app.core.models import AuditEntry, Effect, Portal
from app.crm import port
from app.domain import deal_events
from app.domain.deal_events import DealEvent
from app.domain.effects import deal_lock
from tests.unit.conftest import MANAGER, OTHER_MANAGER, seen_deal
from tests.unit.fake_crm import InMemoryCrm


def _lost_by_managers(portal: Portal, crm: InMemoryCrm, count: int) -> list[str]:
    """`count` deals the app has seen, each then moved to lost by its manager (a group action)."""
    deal_ids = [seen_deal(portal, crm, by=MANAGER if n % 2 else OTHER_MANAGER) for n in range(count)]
    for deal_id in deal_ids:
        crm.move(deal_id, "LOSE", by=crm.deals[deal_id].responsible_id)
    crm.reads.clear()
    crm.batch_reads = crm.batch_writes = 0
    crm.read_deal_ids.clear()
    return deal_ids


def _events(deal_ids: list[str], first_ref: int = 1, **fields: object) -> list[DealEvent]:
    return [DealEvent(deal_id, ref=first_ref + n, **fields) for n, deal_id in enumerate(deal_ids)]  # type: ignore[arg-type]


def _group(portal: Portal, events: list[DealEvent], finished: list[int] | None = None) -> dict[str, object]:
    done: list[int] = [] if finished is None else finished
    return dict(
        deal_events.deals_changed(
            portal, port.client_for(portal), events[0], waiting=lambda: events[1:], finished=done.extend
        )
    )


def _violations(deal_id: str) -> int:
    db.session.expire_all()
    return len(
        db.session.scalars(
            sa.select(AuditEntry).where(AuditEntry.deal_id == deal_id, AuditEntry.outcome == "reverted")
        ).all()
    )


def test_waiting_events_are_decided_together_with_one_read_and_one_packed_write(
    portal: Portal, crm: InMemoryCrm
) -> None:
    deal_ids = _lost_by_managers(portal, crm, 60)
    events = _events(deal_ids)
    finished: list[int] = []

    decisions = _group(portal, events, finished)

    taken = deal_ids[:50]
    assert sorted(decisions) == sorted(taken), "at most 50 deals in one group; the rest wait for their own jobs"
    assert all(decision.outcome == "reverted" for decision in decisions.values())
    assert (crm.batch_reads, crm.reads["get_deal"], crm.batch_writes) == (1, 0, 1)
    assert [crm.deals[d].stage_id for d in taken] == ["WORKING"] * 50
    assert [crm.deals[d].stage_id for d in deal_ids[50:]] == ["LOSE"] * 10
    assert len(crm.inbox(MANAGER)) + len(crm.inbox(OTHER_MANAGER)) == 50, "every manager told, once per deal"
    assert sorted(finished) == [event.ref for event in events[:50]]
    assert [_violations(d) for d in taken] == [1] * 50, "one audit row per deal"


def test_a_single_event_still_reads_and_writes_once(portal: Portal, crm: InMemoryCrm) -> None:
    [deal_id] = _lost_by_managers(portal, crm, 1)

    decisions = _group(portal, _events([deal_id]))

    assert decisions[deal_id].outcome == "reverted"
    assert (crm.reads["get_deal"], crm.batch_reads, crm.batch_writes) == (1, 0, 1)


def test_two_events_of_one_deal_in_a_group_give_one_decision(portal: Portal, crm: InMemoryCrm) -> None:
    first, second = _lost_by_managers(portal, crm, 2)

    _group(portal, _events([first, second, first]))

    assert crm.read_deal_ids == [first, second]
    assert len(crm.deal_changes(first)) == 1
    assert _violations(first) == 1


def test_a_deal_another_job_is_deciding_is_left_to_that_job(portal: Portal, crm: InMemoryCrm) -> None:
    lead, busy, free = _lost_by_managers(portal, crm, 3)
    finished: list[int] = []

    with deal_lock(portal.id, busy):
        decisions = _group(portal, _events([lead, busy, free]), finished)

    assert sorted(decisions) == sorted([lead, free])
    assert crm.deals[busy].stage_id == "LOSE"
    assert busy not in crm.read_deal_ids
    assert sorted(finished) == [1, 3], "the busy deal's event stays pending for its own job"


def test_the_echo_of_our_revert_is_told_by_its_stamp_without_a_read(portal: Portal, crm: InMemoryCrm) -> None:
    deal_ids = _lost_by_managers(portal, crm, 5)
    _group(portal, _events(deal_ids))
    crm.reads.clear()
    crm.batch_reads = crm.batch_writes = 0
    stamps = [int(crm.deals[d].modified_at.timestamp()) for d in deal_ids]  # type: ignore[union-attr]
    echoes = [DealEvent(d, stamp=stamp, ref=10 + n) for n, (d, stamp) in enumerate(zip(deal_ids, stamps, strict=True))]
    finished: list[int] = []

    decisions = _group(portal, echoes, finished)

    assert {decision.outcome for decision in decisions.values()} == {"own write"}
    assert (crm.reads["get_deal"], crm.batch_reads, crm.batch_writes) == (0, 0, 0)
    assert sorted(finished) == [10, 11, 12, 13, 14]


def test_a_manager_who_moves_the_deal_again_after_our_revert_is_decided_again(portal: Portal, crm: InMemoryCrm) -> None:
    [deal_id] = _lost_by_managers(portal, crm, 1)
    _group(portal, _events([deal_id]))
    echo_stamp = int(crm.deals[deal_id].modified_at.timestamp())  # type: ignore[union-attr]
    manager = crm.deals[deal_id].responsible_id
    crm.move(deal_id, "LOSE", by=manager)
    again_stamp = int(crm.deals[deal_id].modified_at.timestamp())  # type: ignore[union-attr]

    # The echo and the manager's new move arrive together: one is ours, the other is read and decided.
    decisions = _group(
        portal, [DealEvent(deal_id, stamp=echo_stamp, ref=5), DealEvent(deal_id, stamp=again_stamp, ref=6)]
    )

    assert decisions[deal_id].outcome == "reverted"
    assert crm.deals[deal_id].stage_id == "WORKING"
    assert _violations(deal_id) == 2
    assert len(crm.inbox(manager)) == 2


def test_an_event_with_a_stamp_outside_our_write_or_none_is_read(portal: Portal, crm: InMemoryCrm) -> None:
    first, second = _lost_by_managers(portal, crm, 2)
    _group(portal, _events([first, second]))
    stamp = int(crm.deals[first].modified_at.timestamp())  # type: ignore[union-attr]
    crm.reads.clear()
    crm.read_deal_ids.clear()

    _group(portal, [DealEvent(first, stamp=stamp + 30, ref=7), DealEvent(second, ref=8)])

    assert sorted(crm.read_deal_ids) == sorted([first, second]), "never taken for our echo: read and found unchanged"
    assert len(crm.deal_changes(first)) == 1


def test_a_write_that_fails_leaves_only_its_deal_pending(portal: Portal, crm: InMemoryCrm) -> None:
    lead, failing, other = _lost_by_managers(portal, crm, 3)
    crm.refuse_writes_to(failing)
    finished: list[int] = []

    decisions = _group(portal, _events([lead, failing, other]), finished)

    assert sorted(decisions) == sorted([lead, other])
    assert sorted(finished) == [1, 3]
    assert crm.deals[failing].stage_id == "LOSE"
    pending = db.session.scalars(
        sa.select(Effect).where(Effect.deal_id == failing, Effect.status == Effect.PENDING)
    ).all()
    assert {effect.kind for effect in pending} == {"move", "notify"}, "its own job's retry carries them out"


def test_an_event_decided_by_another_group_meanwhile_costs_no_read(portal: Portal, crm: InMemoryCrm) -> None:
    [deal_id] = _lost_by_managers(portal, crm, 1)

    decisions = deal_events.deals_changed(
        portal, port.client_for(portal), DealEvent(deal_id, ref=1), settled=lambda: True
    )

    assert decisions[deal_id].outcome == "already decided"
    assert crm.read_deal_ids == []
