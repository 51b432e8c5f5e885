"""One OAuth token keeper for both CRMs: refresh tokens rotate, so exactly one refresh per expiry.

Bitrix24 and amoCRM refresh tokens are single-use: the first refresh that reaches the OAuth server
wins, and a second refresh with the same token is refused (Bitrix24 ``invalid_grant``, amoCRM 401
``Token has been revoked``), which would flag a healthy portal for reinstall. `TokenKeeper.refresh`
therefore:

1. takes a per-portal Redis lock shared by every process (the lease is ``lock_seconds``; waiting for
   it is bounded by ``lock_seconds + 5``; Redis down or a stuck holder raise `CrmUnavailable`);
2. re-reads the portal row in a short session of its own, ``SELECT ... FOR UPDATE``: when the stored
   access token is no longer the one that failed (and the CRM's `fresh` check agrees), another
   process refreshed while we waited, and its pair is used without asking the OAuth server;
3. otherwise asks the OAuth server (`refresh`, given the row) and writes the new pair (`store`) in the
   same transaction that read the old one, so a pair is never stored over a newer one;
4. a refusal (`refused` errors) marks the row ``needs_reinstall`` (`flag_reinstall`) and raises
   `PortalNeedsReinstall`; later calls fail without network.

Why ``FOR UPDATE`` on both CRMs (it used to be amoCRM only): the Redis lock is a lease. If a refresh
outlives it (a slow OAuth server; amoCRM's token request may take up to its 30 s read timeout, the
default lease), a second process takes the lock and would read the old pair and spend the same
single-use refresh token. With the row locked, that second process waits on PostgreSQL until the first
commits, then reads the new pair and skips the refresh. The store needs the row's write lock anyway,
so taking it at the read adds no new wait to anyone who would not have waited for the commit, and
plain reads are not blocked (MVCC). SQLite has no row locks and ignores ``FOR UPDATE`` (SQLAlchemy
omits it); there the Redis lock alone serialises refreshes, as before.

The keeper's sessions are independent of the caller's unit of work: a refresh committed here is never
rolled back by a caller, and a caller's pending changes are never committed by us. Where credentials
may go is not decided here: each client's `refresh` checks its host (`app.crm.hosts`) before sending.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from flask import Flask
from redis.exceptions import LockError, RedisError
from sqlalchemy.orm import Session

from app.core.db import db
from app.core.models import Portal
from app.core.queue import get_redis
from app.crm.errors import CrmError, CrmUnavailable, PortalNeedsReinstall

log = logging.getLogger(__name__)

NEEDS_REINSTALL = "needs_reinstall"


def _always_fresh(_portal: Portal) -> bool:
    return True


class TokenKeeper:
    """Refreshes one portal's token pair under a per-portal Redis lock and a row lock (see the module).

    `refresh(portal)` asks the OAuth server for a new pair with the stored refresh token (raising one
    of `refused` when the grant is dead); `store(portal, answer)` puts the answer on the row (the
    keeper commits it). `fresh(portal)` tells whether a token another process stored may be used as
    is (amoCRM: not about to expire). `describe_refusal(error)` is the ``status_detail`` an admin sees.
    """

    def __init__(
        self,
        portal_id: int,
        app: Flask,
        *,
        crm: str,
        lock_key: str,
        lock_seconds: float,
        refresh: Callable[[Portal], Mapping[str, Any]],
        store: Callable[[Portal, Mapping[str, Any]], None],
        refused: tuple[type[CrmError], ...],
        describe_refusal: Callable[[CrmError], str],
        reinstall_message: str,
        fresh: Callable[[Portal], bool] = _always_fresh,
    ) -> None:
        self.portal_id = portal_id
        self.app = app
        self.crm = crm
        self.lock_key = lock_key
        self.lock_seconds = lock_seconds
        self._refresh = refresh
        self._store = store
        self._refused = refused
        self._describe_refusal = describe_refusal
        self.reinstall_message = reinstall_message
        self._fresh = fresh

    def session(self) -> Session:
        """A short session of our own (objects stay readable after commit)."""
        return Session(db.engine, expire_on_commit=False)

    def load(self) -> Portal:
        """The portal row, detached (raises CrmError when it is gone)."""
        with self.session() as session:
            portal = session.get(Portal, self.portal_id)
            if portal is None:
                raise CrmError(f"portal {self.portal_id} does not exist")
            return portal

    def refresh(self, failed_token: str) -> Portal:
        """Replace `failed_token` (expired or refused): one refresh across every process.

        Returns the row holding the pair to use now (detached). Raises `PortalNeedsReinstall` when the
        portal is, or has just been, flagged; `CrmUnavailable` when the lock cannot be had.
        """
        lock = get_redis(self.app).lock(
            self.lock_key, timeout=self.lock_seconds, blocking_timeout=self.lock_seconds + 5
        )
        try:
            acquired = lock.acquire()
        except RedisError as error:
            raise CrmUnavailable(f"token refresh lock unavailable: {error}") from error
        if not acquired:
            raise CrmUnavailable(f"token refresh of portal {self.portal_id} is stuck in another process")
        try:
            refused: CrmError | None = None
            with self.session() as session, session.begin():
                portal = session.scalars(
                    sa.select(Portal).where(Portal.id == self.portal_id).with_for_update()
                ).one_or_none()
                if portal is None:
                    raise CrmError(f"portal {self.portal_id} does not exist")
                if portal.status == NEEDS_REINSTALL:
                    raise PortalNeedsReinstall(self.reinstall_message)
                if portal.access_token and portal.access_token != failed_token and self._fresh(portal):
                    return portal  # another process refreshed while we waited for the lock
                try:
                    answer = self._refresh(portal)
                except self._refused as error:
                    refused = error
                else:
                    self._store(portal, answer)
            if refused is not None:
                raise self.flag_reinstall(refused)
            log.info(f"{self.crm} token refreshed", extra={"portal_id": self.portal_id})
            return portal
        finally:
            try:
                lock.release()
            except LockError:
                log.warning(f"{self.crm} refresh lock expired before release", extra={"portal_id": self.portal_id})

    def flag_reinstall(self, reason: CrmError) -> PortalNeedsReinstall:
        """Mark the row ``needs_reinstall`` (committed at once); the error to raise."""
        detail = self._describe_refusal(reason)
        with self.session() as session, session.begin():
            session.execute(
                sa.update(Portal)
                .where(Portal.id == self.portal_id)
                .values(status=NEEDS_REINSTALL, status_detail=detail)
            )
        log.warning(f"{self.crm} portal needs reinstall", extra={"portal_id": self.portal_id, "reason": reason.code})
        error = PortalNeedsReinstall(detail)
        error.__cause__ = reason
        return error
