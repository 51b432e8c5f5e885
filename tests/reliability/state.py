"""What a user would notice after a run: stages, notices, cases, and what we kept on our side."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import sqlalchemy as sa

from app.core.db import db
from app.core.models import Effect, InboxItem, RefusalCase
from tests.integration.b24 import B24


@dataclass(frozen=True)
class EndState:
    stages: dict[int, str]
    notices: dict[int, int]  # per deal: notices that mention it
    cases: dict[str, int]  # per deal: refusal cases
    qa_tasks: dict[int, int]


def end_state(b24: B24, deal_ids: list[int]) -> EndState:
    db.session.expire_all()
    notices = b24.sandbox.notifications(b24.portal)
    cases = Counter(db.session.scalars(sa.select(RefusalCase.deal_id)).all())
    tasks = {}
    for deal_id in deal_ids:
        status, body = b24.sandbox.call(
            b24.portal, "tasks.task.list", {"filter": {"UF_CRM_TASK": f"D_{deal_id}"}, "select": ["ID"]}
        )
        assert status == 200
        tasks[deal_id] = len(body["result"]["tasks"])
    return EndState(
        stages={deal_id: b24.stage(deal_id) for deal_id in deal_ids},
        notices={deal_id: sum(f"/crm/deal/details/{deal_id}/" in n.message for n in notices) for deal_id in deal_ids},
        cases={str(deal_id): cases.get(str(deal_id), 0) for deal_id in deal_ids},
        qa_tasks=tasks,
    )


def nothing_left_over() -> None:
    """Every inbox row processed, every planned effect carried out."""
    db.session.expire_all()
    open_rows = db.session.scalars(sa.select(InboxItem).where(InboxItem.status != InboxItem.DONE)).all()
    assert [(row.kind, row.status, row.last_error) for row in open_rows] == []
    pending = db.session.scalars(sa.select(Effect).where(Effect.status != Effect.DONE)).all()
    assert [(effect.key, effect.status) for effect in pending] == []
