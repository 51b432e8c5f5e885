"""amoCRM edge: OAuth install, uninstall hook, webhooks, the Digital Pipeline robots, the widget's session and
the main page.

Verify before touching state, persist, enqueue, answer: amoCRM drops webhook answers slower than 2 s.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime
from types import SimpleNamespace
from urllib.parse import urlencode, urlsplit

import requests
import sqlalchemy as sa
from flask import Blueprint, Response, current_app, g, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError

from app import audit, i18n, inbox, review
from app.crm.amocrm import host_allowed, oauth_token_request, store_token_answer, token_claims
from app.crm.errors import AmoError, CrmUnavailable
from app.db import db
from app.models import Portal
from app.queue import enqueue
from app.robots import REGISTRY
from app.security import Identity, issue_token, require_identity, same_secret
from app.validation import json_body
from handlers import amo_verify
from handlers.amo_payloads import parse_dp, parse_hook

log = logging.getLogger(__name__)
bp = Blueprint("amocrm", __name__, url_prefix="/amocrm")

SOURCE = "amo"
WEBHOOK_SECRET = "amo_webhook_secret"  # noqa: S105 - the settings key, not a secret
# The Digital Pipeline secret. The manifest (and its `dp.webhook_url`) is one file for every account, so the
# URL cannot carry a per-account secret. Instead the action's own settings carry it: the widget's
# `callbacks.dpSettings` asks `/amocrm/widget/dp` (an admin's disposable token) for the account's secret and
# writes it into the hidden `secret` field of the action form; amoCRM then sends it back with every DP
# webhook as `action[settings][widget][settings][secret]`, which we compare with the stored one.
DP_SECRET = "amo_dp_secret"  # noqa: S105 - the settings key, not a secret

i18n.register(
    {
        "amo_installed_title": ("Интеграция подключена", "The integration is connected"),
        "amo_installed_text": (
            "Настраиваем аккаунт: статус «Условный отказ», поля сделки и вебхуки. Окно можно закрыть.",
            "Setting up the account: the Conditional refusal status, lead fields and webhooks. "
            "You can close this window.",
        ),
        "amo_install_failed_title": ("Подключение не удалось", "Connection failed"),
        "amo_open_app": (
            "Открыть приложение: очередь контроля, биржа, отчёты, настройки",
            "Open the app: QA queue, exchange, reports, settings",
        ),
        "amo_open_app_failed": (
            "Не удалось открыть приложение. Откройте вкладку сделки заново.",
            "Could not open the app. Reopen the lead tab.",
        ),
    }
)


@bp.after_request
def allow_framing_by_account(response: Response) -> Response:
    """Pages may be framed by the account they belong to, and by nobody else."""
    origin = getattr(g, "frame_origin", None)
    response.headers["Content-Security-Policy"] = f"frame-ancestors {origin}" if origin else "frame-ancestors 'none'"
    return response


def _error(status: int, error: str, message: str) -> ResponseReturnValue:
    if status == 401:
        log.warning("amocrm call refused", extra={"reason": message, "path": request.path})
    return jsonify(error=error, message=message), status


def _portal(account_id: str) -> Portal | None:
    return db.session.scalar(sa.select(Portal).where(Portal.crm == Portal.AMOCRM, Portal.external_id == account_id))


# ---------------------------------------------------------------- OAuth


@bp.get("/install")
def install_link() -> ResponseReturnValue:
    """Send the admin to amoCRM's consent page with a signed `state`."""
    client_id = current_app.config["AMO_CLIENT_ID"]
    if not client_id:
        return _error(503, "not_configured", "AMO_CLIENT_ID is not set")
    query = urlencode({"client_id": client_id, "state": amo_verify.issue_state(), "mode": "post_message"})
    return redirect(f"{current_app.config['AMO_AUTHORIZE_URL']}?{query}")


def _account_id(host: str, access_token: str) -> str:
    """The account id from the token's claims, else from GET /api/v4/account."""
    claimed = str(token_claims(access_token).get("account_id") or "")
    if claimed.isdigit():
        return claimed
    try:
        response = requests.get(
            f"https://{host}/api/v4/account",
            headers={"Authorization": f"Bearer {access_token}"},
            timeout=(10, 30),
        )
        account_id = str(response.json().get("id") or "") if response.status_code == 200 else ""
    except (requests.RequestException, ValueError, AttributeError) as error:
        raise CrmUnavailable("amoCRM did not tell the account id") from error
    if not account_id.isdigit():
        raise CrmUnavailable("amoCRM did not tell the account id")
    return account_id


@bp.get("/oauth")
def oauth() -> ResponseReturnValue:
    """The redirect after the admin allowed access: check, exchange the code, store, run the installer."""
    args = request.args
    if args.get("error"):
        return _error(400, "access_denied", "the administrator did not allow access")
    client_id = current_app.config["AMO_CLIENT_ID"]
    if not client_id or not current_app.config["AMO_CLIENT_SECRET"]:
        return _error(503, "not_configured", "the amoCRM integration is not configured on this server")
    code, referer, state = args.get("code", ""), args.get("referer", "").strip().lower(), args.get("state", "")
    if not code or len(code) > 4096:
        return _error(400, "bad_request", "code is missing")
    if not host_allowed(referer):
        return _error(400, "bad_request", "referer is not an amoCRM account host")
    if args.get("client_id") and not same_secret(args["client_id"], client_id):
        return _error(400, "bad_request", "client_id is not ours")
    if state:
        if not amo_verify.state_valid(state):
            return _error(401, "unauthorized", "state is not one we issued")
    elif not args.get("from_widget"):
        return _error(400, "bad_request", "state is missing")
    try:
        answer = oauth_token_request(referer, {"grant_type": "authorization_code", "code": code})
        account_id = _account_id(referer, str(answer["access_token"]))
    except AmoError as error:
        return _error(400, "code_refused", f"amoCRM refused the authorisation code ({error.code})")
    except CrmUnavailable as error:
        return _error(502, "crm_unavailable", f"amoCRM did not answer: {error.description}")
    portal = _portal(account_id) or Portal(crm=Portal.AMOCRM, external_id=account_id, settings={})
    portal.domain = referer
    portal.rest_base = f"https://{referer}"
    store_token_answer(portal, answer)
    portal.status = "installing"
    portal.status_detail = ""
    portal.uninstalled_at = None
    portal.language = "en" if referer.endswith((".kommo.com", ".amocrm.com")) else "ru"
    db.session.add(portal)
    db.session.flush()
    audit.record(portal.id, str(token_claims(portal.access_token or "").get("sub") or "admin"), "install", "queued")
    db.session.commit()
    enqueue("default", "installers.amocrm.run_install", portal.id)
    return render_template("amocrm/connected.html", lang=portal.language)


@bp.get("/uninstall")
def uninstall() -> ResponseReturnValue:
    """The uninstall hook: client_uuid and the HMAC signature of "client_id|account_id" must match."""
    client_uuid = request.args.get("client_uuid", "")
    account_id = request.args.get("account_id", "")
    signature = request.args.get("signature", "")
    if not amo_verify.uninstall_signature_valid(client_uuid, account_id, signature):
        return _error(401, "unauthorized", "signature does not match")
    portal = _portal(account_id)
    if portal is None:
        return _error(401, "unauthorized", "unknown account")
    portal.status = "uninstalled"
    portal.installed_at = None  # the next install starts watching afresh
    portal.uninstalled_at = datetime.now(UTC)
    portal.access_token = None
    portal.refresh_token = None
    audit.record(portal.id, "amocrm", "uninstall", "uninstalled", "the integration was removed from the account")
    db.session.commit()
    return jsonify(ok=True)


# ---------------------------------------------------------------- webhooks


@bp.post("/webhooks/<secret>")
def webhooks(secret: str) -> ResponseReturnValue:
    """One body may carry several leads: one inbox row (and one decision) per lead."""
    body = request.get_data(cache=True, as_text=True)  # capped while read (app/limits.py)
    try:
        hook = parse_hook(body)
    except ValidationError as error:
        return jsonify(error="bad_request", message="invalid webhook body", fields=error.messages), 400
    portal = _portal(hook.account_id)
    stored = (portal.settings or {}).get(WEBHOOK_SECRET) if portal is not None else None
    if portal is None or not same_secret(secret, stored) or not same_secret(hook.account_id, portal.external_id):
        return _error(401, "unauthorized", "unknown account or wrong webhook secret")
    g.portal_id = portal.id
    if portal.status == "uninstalled":
        return jsonify(ok=True, ignored="account uninstalled")
    accepted = duplicates = 0
    for change in hook.leads:
        kind = "lead_delete" if change.action == "delete" else "lead"
        inbox_id = inbox.accept(
            SOURCE, kind, change.dedupe_key(hook.account_id), change.to_json(hook.account_id), portal.id
        )
        if inbox_id is None:
            duplicates += 1
        else:
            accepted += 1
    return jsonify(ok=True, accepted=accepted, duplicates=duplicates)


# ---------------------------------------------------------------- Digital Pipeline robots


def dp_secret(portal: Portal) -> str:
    """The account's Digital Pipeline secret, made on first use (the installer makes it too)."""
    secret = (portal.settings or {}).get(DP_SECRET)
    if not secret:
        secret = secrets.token_urlsafe(32)
        portal.settings = {**(portal.settings or {}), DP_SECRET: secret}
    return str(secret)


@bp.post("/dp/robots")
def dp_robots() -> ResponseReturnValue:
    """A Digital Pipeline widget action fired (a lead entered the status it is set on): verify the account
    and the secret in the action's settings, store one inbox row, answer at once; the job runs the robot."""
    body = request.get_data(cache=True, as_text=True)  # capped while read (app/limits.py)
    try:
        action = parse_dp(body)
    except ValidationError as error:
        return jsonify(error="bad_request", message="invalid Digital Pipeline body", fields=error.messages), 400
    portal = _portal(action.account_id)
    if portal is None:
        return _error(404, "not_found", "unknown account")
    if not same_secret(action.secret, (portal.settings or {}).get(DP_SECRET)):
        return _error(401, "unauthorized", "wrong or missing Digital Pipeline secret")
    g.portal_id = portal.id
    if portal.status == "uninstalled":
        return jsonify(ok=True, ignored="account uninstalled")
    if not action.is_lead:
        return jsonify(ok=True, ignored=f"element type {action.element_type} is not a lead")
    if action.robot not in REGISTRY:
        return _error(400, "bad_request", f"unknown robot {action.robot[:64]!r}: choose one in the action settings")
    inbox_id = inbox.accept(SOURCE, "dp_robot", action.dedupe_key(), action.to_json(), portal.id)
    return jsonify(ok=True, duplicate=inbox_id is None)


@bp.route("/widget/dp", methods=["OPTIONS"])
def widget_dp_preflight() -> ResponseReturnValue:
    """CORS preflight from an amoCRM account page."""
    return widget_preflight()


@bp.post("/widget/dp")
def widget_dp() -> ResponseReturnValue:
    """The widget's Digital Pipeline form (`callbacks.dpSettings`, an admin's disposable token): the account's
    secret to put into the action's hidden field, and the robots to choose from."""
    claims = amo_verify.widget_claims(request.headers.get("X-Auth-Token", ""))
    if claims is None:
        return _error(401, "unauthorized", "the widget token is missing, forged, expired or already used")
    portal = _portal(str(claims["account_id"]))
    if portal is None or portal.status == "uninstalled":
        return _error(401, "unauthorized", "unknown account")
    origin = f"https://{portal.domain}"
    if not claims.get("is_admin"):
        return _cors(_error_response(403, "forbidden", "only an account administrator sets up robots"), origin)
    secret = dp_secret(portal)
    db.session.commit()
    robots = sorted(
        (
            {"code": robot.code, "name": robot.name_en if portal.language == "en" else robot.name_ru}
            for robot in REGISTRY.values()
        ),
        key=lambda robot: robot["name"],
    )
    return _cors(jsonify(secret=secret, robots=robots), origin)


def _error_response(status: int, error: str, message: str) -> Response:
    response = jsonify(error=error, message=message)
    response.status_code = status
    return response


# ---------------------------------------------------------------- widget and the main page


def _cors(response: Response, origin: str) -> Response:
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Allow-Headers"] = "X-Auth-Token, Content-Type"
    response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
    response.headers["Access-Control-Max-Age"] = "600"
    response.headers["Vary"] = "Origin"
    return response


def _account_origin() -> str | None:
    origin = request.headers.get("Origin", "")
    parts = urlsplit(origin)
    return origin if parts.scheme == "https" and host_allowed(parts.netloc) else None


@bp.route("/widget/session", methods=["OPTIONS"])
def widget_preflight() -> ResponseReturnValue:
    """CORS preflight from an amoCRM account page."""
    origin = _account_origin()
    if origin is None:
        return Response(status=403)
    return _cors(Response(status=204), origin)


@bp.post("/widget/session")
def widget_session() -> ResponseReturnValue:
    """The widget's `$authorizedAjax` call: verify the disposable token, answer with the page to open."""
    claims = amo_verify.widget_claims(request.headers.get("X-Auth-Token", ""))
    if claims is None:
        return _error(401, "unauthorized", "the widget token is missing, forged, expired or already used")
    portal = _portal(str(claims["account_id"]))
    if portal is None or portal.status == "uninstalled":
        return _error(401, "unauthorized", "unknown account")
    payload = json_body()
    lead_id = str((payload or {}).get("lead_id") or "")
    ticket = amo_verify.issue_ticket(
        portal.id, str(claims.get("user_id") or ""), bool(claims.get("is_admin")), lead_id if lead_id.isdigit() else ""
    )
    response = jsonify(url=_app_url(ticket))
    return _cors(response, f"https://{portal.domain}")


def _app_url(ticket: str) -> str:
    return f"{current_app.config['PUBLIC_URL']}/amocrm/app?{urlencode({'ticket': ticket})}"


@bp.get("/app")
def app_page() -> ResponseReturnValue:
    """Our page inside the widget's iframe, opened with a ticket: the QA review of the lead when the
    ticket names one (the lead-card tab), else the main page (QA queue, exchange, settings, reports)."""
    payload = amo_verify.redeem_ticket(request.args.get("ticket", ""))
    if payload is None:
        return _error(401, "unauthorized", "the link has expired; reopen the tab in amoCRM")
    portal = db.session.get(Portal, payload["p"])
    if portal is None or portal.crm != Portal.AMOCRM:
        return _error(404, "not_found", "account not found")
    g.portal_id = portal.id
    g.frame_origin = f"https://{portal.domain}"
    if portal.status == "uninstalled":
        return _error(401, "unauthorized", "the integration is not installed in this account")
    user = SimpleNamespace(user_id=str(payload.get("u") or ""), is_admin=bool(payload.get("a")))
    identity = Identity(portal.id, user.user_id, is_admin=user.is_admin, issued_at=int(payload["o"]))
    token = issue_token(identity)
    lead_id = str(payload.get("l") or "")
    if lead_id.isdigit():
        case = review.latest_case_for(portal.id, lead_id)
        return render_template(
            "b24/deal_tab.html",
            lang=portal.language,
            token=token,
            case=case,
            deal_id=lead_id,
            app_link={"url": url_for("amocrm.app_ticket"), "token": token},
        )
    return render_template("b24/app.html", portal=portal, token=token, lang=portal.language, user=user)


@bp.post("/app/ticket")
def app_ticket() -> ResponseReturnValue:
    """From the lead's review page to the main page: a fresh single-use ticket for the same user and the same
    session (its start is kept: no chain of tickets outlives the session; an uninstalled account is a 401)."""
    identity = require_identity()
    portal = db.session.get(Portal, identity.portal_id)
    if portal is None or portal.crm != Portal.AMOCRM or portal.status == "uninstalled":
        return _error(404, "not_found", "account not found")
    ticket = amo_verify.issue_ticket(portal.id, identity.user_id, identity.is_admin, issued_at=identity.issued_at)
    return jsonify(url=_app_url(ticket))
