"""Who may call a page's JSON endpoint: the one access check of app/web.

`require_role(*roles, forbidden=...)` is the whole check of an endpoint:
- the caller's identity from the X-RC-Token header (app.core.security.require_session): 401 without a valid
  token, when its session started more than TOKEN_MAX_AGE_SECONDS ago, or when the app was uninstalled from
  the portal; 404 when the token's portal is gone; the administrator bit only while the portal's
  `settings["session_admins"]` still lists the user;
- the portal is always the token's: rows are fetched with `Access.own(Model, id)`, another portal's row is a
  404 like a missing one;
- the role: `ADMIN` (a portal administrator) or a role the portal's settings give the user
  (app.domain.directory.role_of: head, qa, exempt, manager); any of `roles` lets him in, else 403 with the
  endpoint's `forbidden` message. No roles: every signed-in user of the portal.
- the CRM not answering while his role is looked up: 502 `crm_unavailable`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import NoReturn, TypeVar

from flask import abort, g, jsonify, make_response

from app.core.db import Base
from app.core.models import Portal, for_portal
from app.core.security import Identity, require_session
from app.crm.errors import CrmError
from app.crm.factory import client_for
from app.domain import directory
from app.domain.settings import guard_settings
from app.web.errors import page_language

ADMIN = "admin"
Row = TypeVar("Row", bound=Base)


def crm_unavailable(error: CrmError) -> NoReturn:
    """End the request with 502 `crm_unavailable` (the CRM did not answer)."""
    failed = jsonify(error="crm_unavailable", message=f"the CRM did not answer: {error.code or error}")
    abort(make_response(failed, 502))


@dataclass(frozen=True)
class Access:
    """The caller of a page endpoint: his identity, his portal (the tenant), his role there."""

    identity: Identity
    portal: Portal

    @property
    def user_id(self) -> str:
        return self.identity.user_id

    @property
    def language(self) -> str:
        """The language of the page that called (app.web.errors.page_language)."""
        return page_language()

    @property
    def is_admin(self) -> bool:
        return self.identity.is_admin

    @cached_property
    def crm_role(self) -> directory.Role:
        """His role under the portal's settings (asks the CRM for departments when the settings name some);
        a CRM that does not answer ends the request with 502."""
        try:
            return directory.role_of(self.portal.id, client_for(self.portal), guard_settings(self.portal), self.user_id)
        except CrmError as error:
            crm_unavailable(error)

    @property
    def role(self) -> str:
        """`ADMIN` for a portal administrator, else his role under the portal's settings."""
        return ADMIN if self.is_admin else self.crm_role

    def has(self, *roles: str) -> bool:
        """Whether he holds one of `roles` (`ADMIN` included); the CRM is asked only when needed."""
        return (ADMIN in roles and self.is_admin) or self.crm_role in roles

    def require(self, *roles: str, forbidden: str, unless: bool = False) -> Access:
        """403 `forbidden` unless he holds one of `roles` (or `unless` is true, e.g. he owns the row)."""
        if not unless and not self.has(*roles):
            abort(403, description=forbidden)
        return self

    def own(self, model: type[Row], row_id: int) -> Row:
        """The portal's row of `model` with this id; 404 when missing or another portal's."""
        return for_portal(model, row_id, self.portal)


def require_role(*roles: str, forbidden: str = "") -> Access:
    """The caller, who must hold one of `roles` (none: any signed-in user of the portal); see the module."""
    identity, portal = require_session()
    g.rc_portal_language = portal.language
    access = Access(identity, portal)
    if roles:
        access.require(*roles, forbidden=forbidden)
    return access
