"""Bitrix24 edge: install frame, events, robot calls, the main app frame. Verify, persist, enqueue."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Response, abort, current_app, g, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError

from app.core import inbox
from app.core.db import db
from app.core.models import Portal
from app.core.queue import enqueue
from app.core.security import Identity, issue_token, require_identity, same_secret
from app.core.validation import error_fields
from app.crm.factory import client_for
from app.crm.hosts import origin_of
from app.domain import audit, timezones
from app.domain.robots import REGISTRY
from handlers import b24_verify
from handlers.b24_payloads import B24Event, B24Frame, parse_event, parse_frame, parse_robot_call

log = logging.getLogger(__name__)
bp = Blueprint("b24", __name__, url_prefix="/b24")

SOURCE = "b24"
DEAL_EVENTS = {"ONCRMDEALUPDATE", "ONCRMDEALADD", "ONCRMDEALMOVETOCATEGORY", "ONCRMDEALDELETE"}
TENANT_CACHE_SIZE = 10_000
_TOKEN_IN_BODY = re.compile(
    r"(auth(?:\[|%5B)(?:access_token|refresh_token|application_token)(?:\]|%5D)=)[^&]*", re.IGNORECASE
)


@bp.after_request
def allow_framing_by_portal(response: Response) -> Response:
    """Pages may be framed by the portal they belong to, and by nobody else. In the demo (SANDBOX_ENABLED) the
    sandbox portal's pages are also served on the app's own address (/sandbox, app/web/sandbox_proxy.py), so
    that address may frame them too."""
    origin = getattr(g, "frame_origin", None)
    if origin and current_app.config.get("SANDBOX_ENABLED"):
        origin = f"{origin} 'self'"
    response.headers["Content-Security-Policy"] = f"frame-ancestors {origin}" if origin else "frame-ancestors 'none'"
    return response


def _unauthorized(reason: str) -> ResponseReturnValue:
    log.warning("bitrix24 call refused", extra={"reason": reason, "path": request.path})
    return jsonify(error="unauthorized", message=reason), 401


def _bad_request(error: ValidationError) -> ResponseReturnValue:
    return jsonify(error="bad_request", message="invalid payload", fields=error_fields(error)), 400


def frame_refused(status: int, reason: str, detail: str) -> ResponseReturnValue:
    """A frame the page cannot be shown for: an HTML page in the frame's language (`LANG`) saying why and what
    to do (reasons: bad_frame, unknown_portal, token_mismatch, not_installed, user_unconfirmed, wrong_placement);
    the English `detail` goes to the log."""
    log.warning("bitrix24 frame refused", extra={"reason": detail, "path": request.path})
    lang = "en" if (request.args.get("LANG") or "").lower()[:2] == "en" else "ru"
    return render_template("b24/frame_error.html", lang=lang, reason=reason), status


def frame_language(frame: B24Frame, portal: Portal) -> str:
    """The language of a page opened by a frame: English when the portal's language is English or the user's
    Bitrix24 speaks English to him (the frame's `LANG=en`), else Russian."""
    english = portal.language == "en" or (request.args.get("LANG") is not None and frame.lang == "en")
    return "en" if english else "ru"


def _raw_body() -> str:
    """The body as text; MAX_CONTENT_LENGTH caps it while it is read, chunked or not (app/core/limits.py)."""
    return request.get_data(cache=True, as_text=True)


def _portal(member_id: str) -> Portal | None:
    return db.session.scalar(sa.select(Portal).where(Portal.crm == Portal.BITRIX24, Portal.external_id == member_id))


_PORTALS = Portal.__table__
# The webhook path needs four columns, not a whole Portal with its JSON settings: one Core query, built once.
_TENANT_QUERY = sa.select(_PORTALS.c.id, _PORTALS.c.external_id, _PORTALS.c.application_token, _PORTALS.c.status).where(
    _PORTALS.c.crm == Portal.BITRIX24, _PORTALS.c.external_id == sa.bindparam("member_id")
)


def _tenant(member_id: str) -> sa.Row[Any, Any, Any, Any] | None:
    """The id, member_id, application token and status of a Bitrix24 portal, read fresh."""
    return db.session.execute(_TENANT_QUERY, {"member_id": member_id}).first()


def _tenants() -> dict[str, tuple[float, sa.Row[Any, Any, Any, Any]]]:
    return current_app.extensions.setdefault("rc_b24_tenants", {})


def _verified_tenant(member_id: str, application_token: str) -> sa.Row[Any, Any, Any, Any] | None:
    """The portal an event belongs to, when its application token matches; else the fresh row (or None).

    An installed portal whose token matched in the last TENANT_CACHE_SECONDS is taken from this process's
    memory (the read cost about a fifth of the whole webhook). Only a match is answered from memory: a
    token that does not match (a reinstall issued a new one) is checked against the database before
    anything is refused. A portal uninstalled within those seconds may still get a row stored; its job
    reads the portal and ignores it.
    """
    cache = _tenants()
    now = time.monotonic()
    cached = cache.get(member_id)
    if cached is not None and cached[0] > now and same_secret(application_token, cached[1].application_token):
        return cached[1]
    tenant = _tenant(member_id)
    ttl = current_app.config["TENANT_CACHE_SECONDS"]
    if (
        tenant is not None
        and ttl > 0
        and tenant.status == "installed"
        and same_secret(application_token, tenant.application_token)
    ):
        if len(cache) >= TENANT_CACHE_SIZE:
            cache.clear()
        cache[member_id] = (now + ttl, tenant)
    else:
        cache.pop(member_id, None)
    return tenant


# The two answers to a stored event are always the same: serialised once, not per webhook.
_ACCEPTED_BODIES = {duplicate: json.dumps({"ok": True, "duplicate": duplicate}) for duplicate in (False, True)}


def _accepted(*, duplicate: bool) -> Response:
    return current_app.response_class(_ACCEPTED_BODIES[duplicate], mimetype="application/json")


def strip_tokens(body: str) -> str:
    """The body as stored: the OAuth tokens and the application token masked. The jobs need none of them
    (the event was verified before it was stored); an access token's presence, kept as `***`, still tells a
    change made by a user from one made by automation (B24Auth.has_user_token)."""
    return _TOKEN_IN_BODY.sub(r"\1***", body)


@bp.post("/events")
def events() -> ResponseReturnValue:
    """Every bound event: verify the portal and its application token, store once, enqueue, 200."""
    body = _raw_body()
    try:
        event = parse_event(body)
    except ValidationError as error:
        return _bad_request(error)
    if event.event == "ONAPPINSTALL":
        tenant = _tenant(event.auth.member_id)
    else:
        tenant = _verified_tenant(event.auth.member_id, event.auth.application_token)
    if tenant is None:
        return _unauthorized("unknown portal")
    g.portal_id = tenant.id
    if event.event == "ONAPPINSTALL":
        portal = db.session.get(Portal, tenant.id)
        if portal is None:
            return _unauthorized("unknown portal")
        return _on_app_install(portal, event)
    if not same_secret(event.auth.application_token, tenant.application_token):
        return _unauthorized("application token does not match")
    if tenant.status == "uninstalled" and event.event != "ONAPPUNINSTALL":
        return jsonify(ok=True, ignored="portal uninstalled")
    # Bitrix24 never redelivers and stamps whole seconds: the author keeps the echo of our own write apart from a
    # person's change of the deal in that second (collapsed into the echo's row, the change would be taken for
    # the echo and never read); identical bodies collapse only while the first waits (`repeatable`).
    dedupe_key = (
        f"b24:{tenant.external_id}:{event.event}:{event.entity_id}:{event.ts}:{event.event_handler_id}:"
        f"{event.auth.user_id or ''}"
    )
    inbox_id = inbox.accept(
        SOURCE, event.event, dedupe_key, strip_tokens(body), tenant.id, repeatable=event.event in DEAL_EVENTS
    )
    return _accepted(duplicate=inbox_id is None)


def _on_app_install(portal: Portal, event: B24Event) -> ResponseReturnValue:
    """ONAPPINSTALL brings the application token and tokens for our calls; each is trusted only once verified.

    The application token is taken only by a portal that has none (a new install, or a reinstall after
    ONAPPUNINSTALL cleared it); a stored one is never replaced. The access and refresh tokens are stored
    only when the OAuth server confirms the access token is ours for this portal and the portal says its
    user is an administrator. The REST base is the one the OAuth server confirmed, never
    `auth[client_endpoint]`: an event naming another one is processed with that field ignored.
    """
    if portal.application_token and not same_secret(event.auth.application_token, portal.application_token):
        return _unauthorized("application token does not match")
    info = _verified_admin_token(portal, event.auth.access_token)
    if info is None and not portal.application_token:
        return _unauthorized("install event could not be verified")
    verified_base = info.client_endpoint if info is not None else portal.rest_base or ""
    if event.auth.client_endpoint and event.auth.client_endpoint != verified_base:
        log.warning(
            "bitrix24 install event names another REST endpoint; ignored",
            extra={"portal_id": portal.id, "endpoint_origin": _origin_text(event.auth.client_endpoint)},
        )
    if info is None:
        audit.record(portal.id, event.auth.user_id or "portal", "app install event", "tokens not verified, kept ours")
        db.session.commit()
        return jsonify(ok=True, ignored="tokens not verified")
    if not portal.application_token:
        portal.application_token = event.auth.application_token
        _tenants().pop(portal.external_id, None)
    portal.access_token = event.auth.access_token
    portal.token_expires_at = datetime.now(UTC) + timedelta(seconds=int(event.auth.expires_in or 3600))
    if event.auth.refresh_token:
        portal.refresh_token = event.auth.refresh_token
    portal.rest_base = info.client_endpoint
    portal.domain = info.domain or portal.domain
    audit.record(portal.id, event.auth.user_id or "portal", "app install event", "tokens stored")
    db.session.commit()
    return jsonify(ok=True)


def _verified_admin_token(portal: Portal, access_token: str | None) -> b24_verify.AppInfo | None:
    """What the OAuth server says about `access_token` when it was issued to our app for this portal and
    belongs to a portal administrator (asked at the REST base the OAuth server confirmed); else None."""
    if not access_token:
        return None
    info = b24_verify.app_info(access_token)
    if info is None or info.member_id != portal.external_id:
        return None
    user = b24_verify.user_at(info.client_endpoint, access_token)
    if user is None or not user.is_admin:
        return None
    return info


def _origin_text(url: str) -> str:
    """The host of a URL for a log line (never its path or query), or a note that it is not a clean one."""
    origin = origin_of(url)
    return f"{origin[1]}:{origin[2]}" if origin else "not a plain https URL"


def _admin_only(frame: B24Frame, rest_base: str, user_id: str) -> ResponseReturnValue:
    """403: the install frame came from a user who is not a portal administrator; nothing was changed."""
    log.warning(
        "bitrix24 install frame from a non-administrator refused",
        extra={"member_id": frame.member_id, "user_id": user_id},
    )
    origin = origin_of(rest_base)
    if origin is not None:
        g.frame_origin = f"https://{origin[1]}" if origin[2] == 443 else f"https://{origin[1]}:{origin[2]}"
    return render_template("b24/admin_only.html", lang=frame.lang), 403


@bp.post("/install")
def install() -> ResponseReturnValue:
    """The install frame: verify through the OAuth server, check the user is a portal administrator
    through the portal, store the portal, run the installer.

    Anyone else gets 403 and nothing changes. A stored application token is kept: a frame never replaces it.
    """
    try:
        frame = parse_frame(request.form.to_dict(), request.args.to_dict())
    except ValidationError as error:
        return frame_refused(400, "bad_frame", f"invalid frame: {error_fields(error)}")
    info = b24_verify.app_info(frame.auth_id)
    if info is None or info.member_id != frame.member_id:
        return frame_refused(401, "install_unconfirmed", "the portal did not confirm this installation")
    user = b24_verify.user_at(info.client_endpoint, frame.auth_id)
    if user is None:
        return frame_refused(401, "user_unconfirmed", "the portal did not confirm the user")
    if not user.is_admin:
        return _admin_only(frame, info.client_endpoint, user.user_id)
    portal = _portal(frame.member_id) or Portal(crm=Portal.BITRIX24, external_id=frame.member_id, settings={})
    _tenants().pop(frame.member_id, None)
    portal.domain = info.domain or frame.domain
    portal.rest_base = info.client_endpoint
    portal.access_token = frame.auth_id
    portal.token_expires_at = datetime.now(UTC) + timedelta(seconds=frame.auth_expires)
    if frame.refresh_id:
        portal.refresh_token = frame.refresh_id
    if not portal.application_token:
        portal.application_token = frame.application_token or None
    elif frame.application_token and not same_secret(frame.application_token, portal.application_token):
        log.warning("bitrix24 install frame carries another application token; the stored one is kept")
    portal.language = frame.lang
    portal.status = "installing"
    portal.status_detail = ""
    portal.uninstalled_at = None
    db.session.add(portal)
    db.session.flush()
    audit.record(portal.id, user.user_id or info.user_id or "admin", "install", "installer queued")
    db.session.commit()
    g.portal_id = portal.id
    enqueue("default", "app.jobs.install_bitrix24", portal.id)
    g.frame_origin = f"https://{portal.domain}"
    token = issue_token(Identity(portal_id=portal.id, user_id=user.user_id or info.user_id or "", is_admin=True))
    return render_template("b24/install.html", token=token, lang=portal.language)


@bp.post("/install/retry")
def install_retry() -> ResponseReturnValue:
    """Run the installer again after a failure (admins only)."""
    identity = require_identity()
    portal = db.session.get(Portal, identity.portal_id)
    if portal is None or portal.crm != Portal.BITRIX24:
        abort(404, description="portal not found")
    if not identity.is_admin:
        abort(403, description="only a portal administrator can install the app")
    portal.status = "installing"
    portal.status_detail = ""
    db.session.commit()
    enqueue("default", "app.jobs.install_bitrix24", portal.id)
    return jsonify(ok=True), 202


@bp.get("/install/status")
def install_status() -> ResponseReturnValue:
    """Progress of the installer for the install page (identity from the signed header)."""
    identity = require_identity()
    portal = db.session.get(Portal, identity.portal_id)
    if portal is None or portal.crm != Portal.BITRIX24:
        abort(404, description="portal not found")
    progress = (portal.settings or {}).get("install", {})
    return jsonify(status=portal.status, detail=portal.status_detail, steps=progress.get("steps", []))


@bp.post("/robots/<code>")
def robot(code: str) -> ResponseReturnValue:
    """A robot invoked by a portal's automation rule: verify, store, enqueue; the reply goes back later."""
    body = _raw_body()
    try:
        call = parse_robot_call(body)
    except ValidationError as error:
        return _bad_request(error)
    tenant = _tenant(call.auth.member_id)
    if tenant is None:
        return _unauthorized("unknown portal")
    if not same_secret(call.auth.application_token, tenant.application_token):
        return _unauthorized("application token does not match")
    g.portal_id = tenant.id
    if code not in REGISTRY or call.code != code:
        return jsonify(error="not_found", message=f"no robot {code!r}"), 404
    dedupe_key = f"b24:{tenant.external_id}:robot:{code}:{call.workflow_id}:{call.event_token}"
    inbox_id = inbox.accept(SOURCE, "robot", dedupe_key, strip_tokens(body), tenant.id)
    return jsonify(ok=True, duplicate=inbox_id is None)


@dataclass(frozen=True)
class VerifiedFrame:
    """A frame POST whose portal and user are confirmed."""

    frame: B24Frame
    portal: Portal
    user: b24_verify.FrameUser

    def token(self, deal_id: str = "") -> str:
        """The signed identity the page sends back as a header (naming the deal for a deal card's tab)."""
        return issue_token(
            Identity(portal_id=self.portal.id, user_id=self.user.user_id, is_admin=self.user.is_admin, deal_id=deal_id)
        )


def verify_frame(
    *, installed_only: bool, check: Callable[[B24Frame], ResponseReturnValue | None] | None = None
) -> VerifiedFrame | ResponseReturnValue:
    """Parse and verify the CRM's frame POST: the portal of `member_id`, its application token, and the
    user confirmed by the portal itself with `AUTH_ID`. The frame, portal and user; or the 400/401 answer.

    `installed_only`: the application token must be present and match, and an uninstalled portal is
    refused; otherwise the token is compared only when both sides have one. `check` may refuse the frame
    (its answer is returned) before the portal is asked about the user. On success the page may be
    framed by the portal.
    """
    try:
        frame = parse_frame(request.form.to_dict(), request.args.to_dict())
    except ValidationError as error:
        return frame_refused(400, "bad_frame", f"invalid frame: {error_fields(error)}")
    portal = _portal(frame.member_id)
    if portal is None:
        return frame_refused(401, "unknown_portal", "unknown portal")
    if installed_only or (portal.application_token and frame.application_token):
        if not same_secret(frame.application_token, portal.application_token):
            return frame_refused(401, "token_mismatch", "application token does not match")
    if installed_only and portal.status == "uninstalled":
        return frame_refused(401, "not_installed", "the app is not installed on this portal")
    refused = check(frame) if check is not None else None
    if refused is not None:
        return refused
    user = b24_verify.current_user(portal, frame.auth_id)
    if user is None:
        return frame_refused(401, "user_unconfirmed", "the portal did not confirm the user")
    g.portal_id = portal.id
    g.frame_origin = f"https://{portal.domain}"
    return VerifiedFrame(frame, portal, user)


def requested_tab(frame: B24Frame) -> str:
    """The tab a caller asked the main page to open: `BX24.openApplication({tab: "reports"})` reaches the app
    frame as `PLACEMENT=DEFAULT` with `PLACEMENT_OPTIONS='{"tab":"reports"}'` (a JSON string). "" when none
    or not readable; the page shows it only when the user has that tab."""
    if frame.placement != "DEFAULT" or not frame.placement_options:
        return ""
    try:
        options = json.loads(frame.placement_options)
    except ValueError:
        return ""
    tab = options.get("tab") if isinstance(options, dict) else None
    return tab if isinstance(tab, str) and tab.isidentifier() else ""


@bp.post("/app")
def app_frame() -> ResponseReturnValue:
    """The main app page inside the portal, on the tab `BX24.openApplication` asked for (else the role's first)."""
    verified = verify_frame(installed_only=False)
    if not isinstance(verified, VerifiedFrame):
        return verified
    portal = verified.portal
    if timezones.read_on_first_open(portal, client_for(portal)):
        db.session.commit()
    language = frame_language(verified.frame, portal)
    return render_template(
        "b24/app.html",
        portal=portal,
        token=verified.token(),
        lang=language,
        user=verified.user,
        open_tab=requested_tab(verified.frame),
    )
