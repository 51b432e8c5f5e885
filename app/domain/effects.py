"""The queue of pending CRM writes ("effects") and the per-deal lock every decision holds.

A decision plans its writes as effect rows (one key, carried out once) and carries them out after its
commit; a retried or duplicated job finds them done. Each effect kind is one function
``fn(effect, crm) -> result``, registered in EFFECT_KINDS by create_app.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
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
from app.crm.port import CrmClient, Deal, DealChange, DealWrite, EchoWindow, Notice

log = logging.getLogger(__name__)

EffectKind = Callable[[Effect, CrmClient], str]
EFFECT_KINDS: dict[str, EffectKind] = {}
# Kinds whose effects of many deals go to the CRM in one packed call (a group of deals decided together):
# ``fn(effects, crm) -> [result or error, one per effect]``, each effect carried out as its EFFECT_KINDS function
# would on a first attempt. Registered by create_app.
EffectPack = Callable[[Sequence[Effect], CrmClient], list[str | Exception]]
EFFECT_PACKS: dict[str, EffectPack] = {}


class DealLockLost(RuntimeError):
    """The lease on a deal lapsed while its holder was still working (Redis unreachable, process frozen)."""


_HELD_DEAL_LOCK: ContextVar[DealLock | DealLocks | None] = ContextVar("held_deal_lock", default=None)


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
        self._context: Token[DealLock | DealLocks | None] | None = None

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


class DealLocks:
    """The locks of a group of deals decided together: each the same lease as a DealLock (same Redis key), all
    renewed by one background thread. `wait_for` blocks like `deal_lock`; `try_take` never waits (a deal
    another job holds is left to that job). Should any lease lapse, `check` raises DealLockLost."""

    def __init__(self, client: redis.Redis, portal_id: int, lease: float, wait: float) -> None:
        self.client = client
        self.portal_id = portal_id
        self.lease = lease
        self.wait = wait
        self.lost = False
        self._locks: dict[str, Any] = {}
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._context: Token[DealLock | DealLocks | None] | None = None

    def _lock(self, deal_id: str, wait: float | None) -> Any:
        name = f"rc:lock:deal:{self.portal_id}:{deal_id}"
        return self.client.lock(name, timeout=self.lease, blocking_timeout=wait, thread_local=False)

    def wait_for(self, deal_id: str) -> None:
        """Take one deal's lock, waiting for it as long as a single decision would."""
        lock = self._lock(deal_id, self.wait)
        if not lock.acquire():
            raise LockError(f"deal lock {self.portal_id}:{deal_id} not acquired within the wait time")
        self._locks[deal_id] = lock

    def try_take(self, deal_id: str) -> bool:
        """Take one deal's lock only if nobody holds it."""
        if deal_id in self._locks:
            return True
        lock = self._lock(deal_id, None)
        if not lock.acquire(blocking=False):
            return False
        self._locks[deal_id] = lock
        return True

    @property
    def held(self) -> list[str]:
        return list(self._locks)

    def __enter__(self) -> DealLocks:
        self._renewer = threading.Thread(target=self._renew, name=f"renew deals of {self.portal_id}", daemon=True)
        self._renewer.start()
        self._context = _HELD_DEAL_LOCK.set(self)
        return self

    def _renew(self) -> None:
        while not self._stop.wait(self.lease / 3):
            for deal_id, lock in list(self._locks.items()):
                try:
                    lock.reacquire()
                except (LockError, redis.RedisError, OSError) as error:
                    self.lost = True
                    log.error("deal lock lease lost", extra={"deal_id": deal_id, "error": str(error)})
                    return

    def check(self) -> None:
        """Raise DealLockLost if any lease lapsed."""
        if self.lost:
            raise DealLockLost(f"a deal lock of portal {self.portal_id} lapsed while the group was decided")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if self._context is not None:
            _HELD_DEAL_LOCK.reset(self._context)
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        for lock in self._locks.values():
            try:
                lock.release()
            except LockNotOwnedError:
                self.lost = True
            except (redis.RedisError, OSError) as error:  # the lease runs out by itself
                log.warning("deal lock not released", extra={"error": str(error)})
        if exc_type is None:
            self.check()


def deal_locks(portal_id: int) -> DealLocks:
    """The locks of a group of one portal's deals (see DealLocks)."""
    config = current_app.config
    return DealLocks(
        get_redis(), portal_id, lease=float(config["DEAL_LOCK_SECONDS"]), wait=float(config["DEAL_LOCK_WAIT_SECONDS"])
    )


# ---- the echo of our own writes ----------------------------------------------------------------------------
# A write of ours to a deal makes the CRM send a deal event back. The CRM says when it will stamp that event
# (EchoWindow); we keep, per deal and for a minute, how many such events are due and within which stamps.
# An event carrying a stamp inside a window (and, where the event names the stage, our stage) is our echo and
# needs no read; any other event (no stamp, another stage, more events than echoes due) is read as usual.
ECHO_SECONDS = 60


def _echo_key(portal_id: int, deal_id: str) -> str:
    return f"rc:echo:{portal_id}:{deal_id}"


def expect_echo(portal_id: int, deal_id: str, stage_id: str | None, window: EchoWindow) -> None:
    """Remember one echo due for our write of the deal (called under the deal's lock, after the write)."""
    client = get_redis()
    key = _echo_key(portal_id, deal_id)
    raw = client.get(key)
    due = json.loads(raw) if raw else []
    due.append([window.earliest, window.latest, stage_id or ""])
    client.set(key, json.dumps(due[-8:]), ex=ECHO_SECONDS)


def take_echoes(portal_id: int, deal_id: str, stamps: Sequence[tuple[int | None, str | None]]) -> bool:
    """True when every one of these events of the deal, each (stamp, stage it names or None), is the echo of a
    write of ours; those echoes are then used up. Otherwise the echoes the events match are used up too (they
    have arrived), and the caller reads the deal. Called under the deal's lock."""
    client = get_redis()
    key = _echo_key(portal_id, deal_id)
    raw = client.get(key)
    if not raw:
        return False
    due = json.loads(raw)
    matched = 0
    for stamp, stage in stamps:
        for index, (earliest, latest, written) in enumerate(due):
            if stamp is not None and earliest <= stamp <= latest and (not stage or not written or stage == written):
                del due[index]
                matched += 1
                break
    if not matched:
        return False
    if due:
        client.set(key, json.dumps(due), keepttl=True)
    else:
        client.delete(key)
    return matched == len(stamps)


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
        index += _run_step(pending, index, crm)
    return len(pending)


def _run_step(pending: Sequence[Effect], index: int, crm: CrmClient) -> int:
    """Carry out the effect at `index` (a move with the notices right after it as one request); returns how
    many effects it took. Raises the CRM's error, the effect left pending."""
    effect = pending[index]
    notices: list[Effect] = []
    if effect.kind == "move":
        for following in pending[index + 1 :]:
            if following.kind != "notify":
                break
            notices.append(following)
    if notices:
        _carry_out_together(effect, notices, crm)
        return 1 + len(notices)
    check_deal_lock()
    effect.attempts += 1
    db.session.commit()
    _mark_done(effect, _carry_out(effect, crm))
    db.session.commit()
    return 1


CHANGE_KINDS = ("move", "assign", "update")


def _leading_changes(effects: Sequence[Effect]) -> list[Effect]:
    """The deal's writes that go out as one change: its move, assignment and field writes (the ABC class, QA's
    fields) up to the first other effect (a task, a to-do) or a second move or assignment; notices in between
    do not stop them (they go with the change anyway)."""
    changes: list[Effect] = []
    for effect in effects:
        if effect.kind == "notify":
            continue
        if effect.kind not in CHANGE_KINDS or (effect.kind != "update" and any(c.kind == effect.kind for c in changes)):
            break
        changes.append(effect)
    return changes


def run_pending_effects_of(portal_id: int, deal_ids: Sequence[str], crm: CrmClient) -> dict[str, Exception]:
    """Carry out the pending effects of many deals (their locks held): each deal's leading move, assignment and
    field writes (its ABC class among them) and all its notices go to the CRM in one `write_deals` call for
    every deal; whatever else is pending follows in rounds (`_run_remaining`): QA tasks and task / to-do
    completions packed across deals, other kinds deal by deal. Returns the deals whose effects did not all
    land, with the first error; their effects stay pending for a retry."""
    failed: dict[str, Exception] = {}
    if not deal_ids:
        return failed
    pending = db.session.scalars(
        sa.select(Effect)
        .where(Effect.portal_id == portal_id, Effect.deal_id.in_(list(deal_ids)), Effect.status == Effect.PENDING)
        .order_by(Effect.id)
    ).all()
    by_deal: dict[str, list[Effect]] = defaultdict(list)
    for effect in pending:
        by_deal[effect.deal_id].append(effect)
    writes: list[DealWrite] = []
    packed: list[tuple[list[Effect], list[Effect], str | None]] = []  # (changes, notices, stage written)
    landed: set[int] = set()  # id() of the effects carried out here
    for deal_id, effects in by_deal.items():
        changes = _leading_changes(effects)
        notices = [effect for effect in effects if effect.kind == "notify"]
        if not changes and not notices:
            continue
        change = _merged_change(changes) if changes else None
        writes.append(DealWrite(deal_id, change, tuple(_notice(n) for n in notices)))
        packed.append((changes, notices, change.stage_id if change is not None else None))
    if writes:
        check_deal_lock()
        results: dict[int, str] = {}  # read before the commit expires the rows (no reload per row after it)
        for changes, notices, _ in packed:
            for effect in changes:
                results[id(effect)] = _result_of(effect)
            for effect in notices:
                results[id(effect)] = str(effect.payload["user_id"])
            for effect in (*changes, *notices):
                effect.attempts += 1
        db.session.commit()
        outcomes = crm.write_deals(writes)
        for write, (changes, notices, stage_id), outcome in zip(writes, packed, outcomes, strict=True):
            entries = list(outcome.errors)
            change_error = entries.pop(0) if write.change is not None else None
            if change_error is None:
                for effect in changes:
                    _mark_done(effect, results[id(effect)])
                    landed.add(id(effect))
            for effect, error in zip(
                notices, entries if change_error is None else [change_error] * len(notices), strict=False
            ):
                if error is None:
                    _mark_done(effect, results[id(effect)])
                    landed.add(id(effect))
            if write.change is not None and change_error is None and outcome.echo is not None:
                expect_echo(portal_id, write.deal_id, stage_id, outcome.echo)
            errors = [error for error in (change_error, *entries) if error is not None]
            if errors:
                failed.setdefault(write.deal_id, errors[0])
        db.session.commit()
    # Which deals still have something pending (none, for a revert), told without reloading the expired rows.
    rest = [
        deal_id
        for deal_id, effects in by_deal.items()
        if deal_id not in failed and any(id(effect) not in landed for effect in effects)
    ]
    failed.update(_run_remaining(portal_id, rest, crm))
    return failed


def _run_remaining(portal_id: int, deal_ids: Sequence[str], crm: CrmClient) -> dict[str, Exception]:
    """Whatever is still pending for these deals, each deal's effects in order, in rounds: in each round every
    deal's next effect is carried out, and those of a packed kind (EFFECT_PACKS: QA tasks, task and to-do
    completions) go to the CRM together, one packed call per kind. An effect retried after an attempt whose
    answer may have been lost runs alone (its kind looks for what that attempt did). A deal whose effect fails
    stops there, the effect pending for its own job's retry; returns those deals with their error."""
    failed: dict[str, Exception] = {}
    if not deal_ids:
        return failed
    queues: dict[str, list[Effect]] = defaultdict(list)
    for effect in db.session.scalars(
        sa.select(Effect)
        .where(Effect.portal_id == portal_id, Effect.deal_id.in_(list(deal_ids)), Effect.status == Effect.PENDING)
        .order_by(Effect.id)
    ):
        queues[effect.deal_id].append(effect)

    def settle(deal_id: str, taken: int = 0, error: Exception | None = None) -> None:
        if error is not None:
            failed[deal_id] = error
            queues.pop(deal_id, None)
            return
        del queues[deal_id][:taken]
        if not queues[deal_id]:
            del queues[deal_id]

    while queues:
        packs: dict[str, list[Effect]] = defaultdict(list)
        for deal_id, queue in list(queues.items()):
            head = queue[0]
            if head.kind in EFFECT_PACKS and not head.attempts:
                packs[head.kind].append(head)
                continue
            try:
                settle(deal_id, _run_step(queue, 0, crm))
            except DealLockLost:
                raise
            except Exception as error:  # noqa: BLE001 - the deal stays pending for its own job's retry
                db.session.rollback()
                settle(deal_id, error=error)
        for kind, effects in packs.items():
            check_deal_lock()
            for effect in effects:
                effect.attempts += 1
            db.session.commit()
            try:
                outcomes = EFFECT_PACKS[kind](effects, crm)
            except DealLockLost:
                raise
            except Exception as error:  # noqa: BLE001 - the request failed as a whole: every deal stays pending
                db.session.rollback()
                outcomes = [error] * len(effects)
            for effect, outcome in zip(effects, outcomes, strict=True):
                if isinstance(outcome, Exception):
                    settle(effect.deal_id, error=outcome)
                else:
                    _mark_done(effect, outcome)
                    settle(effect.deal_id, 1)
            db.session.commit()
    return failed


def _notice(effect: Effect) -> Notice:
    """A planned notice, about the deal it was planned for."""
    return Notice(effect.payload["user_id"], effect.payload["message"], effect.key, deal_id=effect.deal_id)


def _merged_change(changes: Sequence[Effect]) -> DealChange:
    fields: dict[str, Any] = {}
    for effect in changes:
        if effect.kind == "move":
            fields["stage_id"] = effect.payload["stage_id"]
            fields["pipeline_id"] = effect.payload.get("pipeline_id")
        elif effect.kind == "assign":
            fields["responsible_id"] = effect.payload["responsible_id"]
        else:
            fields.update(effect.payload)  # a later field write wins
    return DealChange(**fields)


def _result_of(effect: Effect) -> str:
    if effect.kind == "update":
        return ",".join(sorted(effect.payload))
    return str(effect.payload["stage_id"] if effect.kind == "move" else effect.payload["responsible_id"])


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
        [_notice(n) for n in notices],
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
    crm.notify(effect.payload["user_id"], effect.payload["message"], key=effect.key, deal_id=effect.deal_id)
    return str(effect.payload["user_id"])


def update(effect: Effect, crm: CrmClient) -> str:
    """Write deal fields."""
    crm.update_deal(effect.deal_id, DealChange(**effect.payload))
    return ",".join(sorted(effect.payload))
