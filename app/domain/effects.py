"""The queue of pending CRM writes ("effects") and the per-deal lock every decision holds.

A decision plans its writes as effect rows (one key, carried out once) and carries them out after its
commit; a retried or duplicated job finds them done. Each effect kind is one function
``fn(effect, crm) -> result``, registered in EFFECT_KINDS by create_app.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import replace
from typing import Any

import redis
import sqlalchemy as sa
from flask import current_app
from redis.exceptions import LockError, LockNotOwnedError

from app.core.db import db, insert_ignore
from app.core.models import Effect, utcnow
from app.core.queue import get_redis
from app.crm.port import CrmClient, Deal, DealChange, Notice

log = logging.getLogger(__name__)

EffectKind = Callable[[Effect, CrmClient], str]
EFFECT_KINDS: dict[str, EffectKind] = {}


class DealLockLost(RuntimeError):
    """The lease on a deal lapsed while its holder was still working (Redis unreachable, process frozen)."""


_HELD_DEAL_LOCK: ContextVar[DealLock | None] = ContextVar("held_deal_lock", default=None)


class DealLock:
    """A per-deal Redis lock held as a short lease, renewed by a background thread while its holder runs.

    A holder that dies (SIGKILL, OOM, a lost machine) stops renewing, so the deal is free again within
    `lease` seconds instead of blocking the next decision for minutes. A live holder renews every third
    of the lease; should a renewal fail, the lease counts as lost: the next CRM write of the holder
    (`check_deal_lock`) and the end of the block raise DealLockLost, so the job fails and is retried
    rather than deciding alongside another worker.
    """

    def __init__(self, client: redis.Redis, name: str, lease: float, wait: float) -> None:
        # thread_local=False: the renewing thread must see the token the acquiring thread stored.
        self._lock = client.lock(name, timeout=lease, blocking_timeout=wait, thread_local=False)
        self.name = name
        self.lease = lease
        self.lost = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._context: Token[DealLock | None] | None = None

    def __enter__(self) -> DealLock:
        if not self._lock.acquire():
            raise LockError(f"deal lock {self.name} not acquired within the wait time")
        self._renewer = threading.Thread(target=self._renew, name=f"renew {self.name}", daemon=True)
        self._renewer.start()
        self._context = _HELD_DEAL_LOCK.set(self)
        return self

    def _renew(self) -> None:
        while not self._stop.wait(self.lease / 3):
            try:
                self._lock.reacquire()
            except (LockError, redis.RedisError, OSError) as error:
                self.lost = True
                log.error("deal lock lease lost", extra={"lock": self.name, "error": str(error)})
                return

    def check(self) -> None:
        """Raise DealLockLost if the lease lapsed."""
        if self.lost:
            raise DealLockLost(f"the lease on {self.name} lapsed while the decision ran")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if self._context is not None:
            _HELD_DEAL_LOCK.reset(self._context)
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            self._lock.release()
        except LockNotOwnedError:
            self.lost = True
        except (redis.RedisError, OSError) as error:  # the lease runs out by itself
            log.warning("deal lock not released", extra={"lock": self.name, "error": str(error)})
        if exc_type is None:
            self.check()


def deal_lock(portal_id: int, deal_id: str) -> DealLock:
    """One decision at a time per deal, across every worker process."""
    config = current_app.config
    return DealLock(
        get_redis(),
        f"rc:lock:deal:{portal_id}:{deal_id}",
        lease=float(config["DEAL_LOCK_SECONDS"]),
        wait=float(config["DEAL_LOCK_WAIT_SECONDS"]),
    )


def check_deal_lock() -> None:
    """Before a CRM write: raise DealLockLost if the deal lock held by this context lapsed."""
    held = _HELD_DEAL_LOCK.get()
    if held is not None:
        held.check()


def plan_effect(portal_id: int, deal_id: str, key: str, kind: str, payload: dict[str, Any]) -> None:
    """Record an effect to carry out; the same key planned twice is carried out once."""
    db.session.execute(
        insert_ignore(
            Effect,
            {
                "portal_id": portal_id,
                "deal_id": deal_id,
                "key": key[:255],
                "kind": kind,
                "payload": payload,
                "status": Effect.PENDING,
                "result": "",
                "attempts": 0,
                "created_at": utcnow(),
            },
            ["portal_id", "key"],
        )
    )


def as_planned(portal_id: int, deal: Deal) -> Deal:
    """The deal as the writes still pending for it will leave it (responsible, stage, pipeline)."""
    pending = db.session.scalars(
        sa.select(Effect)
        .where(
            Effect.portal_id == portal_id,
            Effect.deal_id == deal.id,
            Effect.status == Effect.PENDING,
            Effect.kind.in_(("assign", "move")),
        )
        .order_by(Effect.id)
    ).all()
    for effect in pending:
        if effect.kind == "assign":
            deal = replace(deal, responsible_id=str(effect.payload["responsible_id"]))
        else:
            deal = replace(
                deal,
                stage_id=str(effect.payload["stage_id"]),
                pipeline_id=str(effect.payload.get("pipeline_id") or deal.pipeline_id),
            )
    return deal


def run_pending_effects(portal_id: int, deal_id: str, crm: CrmClient) -> int:
    """Carry out the deal's pending effects in order, committing after each one.

    A move followed by notices goes to the CRM as one request (Bitrix24: one batch). An attempt is
    committed before the CRM is called, so a retry knows that an earlier attempt may have landed even
    though its answer was lost (see `_carry_out` for tasks; notices are resent under the same key,
    which replaces rather than repeats them).
    """
    pending = db.session.scalars(
        sa.select(Effect)
        .where(Effect.portal_id == portal_id, Effect.deal_id == deal_id, Effect.status == Effect.PENDING)
        .order_by(Effect.id)
    ).all()
    index = 0
    while index < len(pending):
        effect = pending[index]
        notices: list[Effect] = []
        if effect.kind == "move":
            for following in pending[index + 1 :]:
                if following.kind != "notify":
                    break
                notices.append(following)
        if notices:
            _carry_out_together(effect, notices, crm)
            index += 1 + len(notices)
            continue
        check_deal_lock()
        effect.attempts += 1
        db.session.commit()
        _mark_done(effect, _carry_out(effect, crm))
        db.session.commit()
        index += 1
    return len(pending)


def _mark_done(effect: Effect, result: str) -> None:
    effect.status = Effect.DONE
    effect.result = result[:255]
    effect.done_at = utcnow()


def _move_change(payload: dict[str, Any]) -> DealChange:
    return DealChange(stage_id=payload["stage_id"], pipeline_id=payload.get("pipeline_id"))


def _carry_out_together(move: Effect, notices: list[Effect], crm: CrmClient) -> None:
    """A move and the notices planned after it, in one CRM request; what landed is marked done."""
    effects = [move, *notices]
    check_deal_lock()
    for effect in effects:
        effect.attempts += 1
    db.session.commit()
    outcomes = crm.update_deal_and_notify(
        move.deal_id,
        _move_change(move.payload),
        [Notice(n.payload["user_id"], n.payload["message"], n.key) for n in notices],
    )
    results = [move.payload["stage_id"], *(n.payload["user_id"] for n in notices)]
    failure: Exception | None = None
    for effect, outcome, result in zip(effects, outcomes, results, strict=True):
        if outcome is None:
            _mark_done(effect, result)
        elif failure is None:
            failure = outcome
    db.session.commit()
    if failure is not None:
        raise failure


def _carry_out(effect: Effect, crm: CrmClient) -> str:
    kind = EFFECT_KINDS.get(effect.kind)
    if kind is None:
        raise ValueError(f"unknown effect kind {effect.kind!r}")
    return kind(effect, crm)


def move(effect: Effect, crm: CrmClient) -> str:
    """Move the deal to a stage (and pipeline)."""
    crm.update_deal(effect.deal_id, _move_change(effect.payload))
    return str(effect.payload["stage_id"])


def assign(effect: Effect, crm: CrmClient) -> str:
    """Make a user responsible for the deal."""
    crm.update_deal(effect.deal_id, DealChange(responsible_id=effect.payload["responsible_id"]))
    return str(effect.payload["responsible_id"])


def notify(effect: Effect, crm: CrmClient) -> str:
    """Notify a user; resent under the same key, the CRM replaces rather than repeats it."""
    crm.notify(effect.payload["user_id"], effect.payload["message"], key=effect.key)
    return str(effect.payload["user_id"])


def update(effect: Effect, crm: CrmClient) -> str:
    """Write deal fields."""
    crm.update_deal(effect.deal_id, DealChange(**effect.payload))
    return ",".join(sorted(effect.payload))
