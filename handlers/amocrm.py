"""amoCRM edge: OAuth install, uninstall hook, webhooks, the Digital Pipeline robots, the widget's session and
the main page.

Verify before touching state, persist, enqueue, answer: amoCRM drops webhook answers slower than 2 s.
"""

from __future__ import annotations

import logging
import re
import secrets
from datetime import UTC, datetime
from types import SimpleNamespace
from urllib.parse import urlencode, urlsplit

import requests
import sqlalchemy as sa
from flask import Blueprint, Response, current_app, g, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError

from app.core import i18n, inbox
from app.core.db import db
from app.core.models import Portal
from app.core.queue import enqueue
from app.core.security import Identity, issue_token, require_identity, same_secret
from app.core.validation import json_body
from app.crm.amocrm import AmoRest, account_host, checked_host, oauth_token_request, store_token_answer
from app.crm.errors import AmoError, AmoTokenRevoked, AmoUnauthorized, CrmError, CrmUnavailable, PortalNeedsReinstall
from app.crm.factory import client_for
from app.domain import audit, review, timezones
from app.domain.reports import AMO_WIDGET_CODE
from app.domain.robots import REGISTRY
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
WIDGET_CODE = re.compile(r"[a-z0-9_]{1,64}")  # what amoCRM names a widget (self.get_settings().widget_code)

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
            "Открыть приложение: очередь ОКК, биржа, отчёты, настройки",
            "Open the app: QA queue, exchange, reports, settings",
        ),
        "amo_bad_referer": (
            "referer — не адрес аккаунта amoCRM; ничего не отправлено.",
            "referer is not an amoCRM account host; nothing was sent.",
        ),
        "amo_uninstall_unconfirmed": (
            "amoCRM не подтвердил удаление: интеграция в аккаунте работает, её токены действуют.",
            "amoCRM did not confirm the removal: the integration still works in the account, its tokens are valid.",
        ),
        "amo_uninstall_unchecked": (
            "Не удалось проверить удаление в amoCRM; повторите позже.",
            "Could not check the removal with amoCRM; try again later.",
        ),
        "amo_admin_only": (
            "Подключить или переподключить интеграцию может только администратор аккаунта amoCRM",
            "Only an amoCRM account administrator can connect or reconnect the integration",
        ),
        "amo_oauth_access_denied": (
            "Доступ не разрешён: интеграция не подключена.",
            "Access was not allowed: the integration is not connected.",
        ),
        "amo_oauth_not_configured": (
            "Интеграция с amoCRM не настроена на этом сервере. Обратитесь к поставщику приложения.",
            "The amoCRM integration is not configured on this server. Contact the app's vendor.",
        ),
        "amo_oauth_bad_request": (
            "Ссылка подключения неполная или не из amoCRM; ничего не отправлено. "
            "Подключите интеграцию заново из amoCRM.",
            "The connection link is incomplete or not from amoCRM; nothing was sent. Connect the integration again "
            "from amoCRM.",
        ),
        "amo_oauth_unauthorized": (
            "Ссылка подключения устарела. Подключите интеграцию заново.",
            "The connection link has expired. Connect the integration again.",
        ),
        "amo_oauth_code_refused": (
            "amoCRM не принял код подключения. Подключите интеграцию заново.",
            "amoCRM did not accept the connection code. Connect the integration again.",
        ),
        "amo_oauth_crm_unavailable": (
            "amoCRM не ответил. Попробуйте подключить интеграцию позже.",
            "amoCRM did not answer. Try connecting the integration again later.",
        ),
        "amo_oauth_forbidden": (
            "Подключить или переподключить интеграцию может только администратор аккаунта amoCRM. Ничего не "
            "изменено: попросите администратора подключить её.",
            "Only an amoCRM account administrator can connect or reconnect the integration. Nothing was changed: "
            "ask an administrator to connect it.",
        ),
        "amo_frame_link_expired": (
            "Ссылка на страницу устарела или уже открыта.",
            "The link to this page has expired or was already used.",
        ),
        "amo_frame_unknown_portal": (
            "Этот аккаунт amoCRM не подключён к «Контролю отказов».",
            "This amoCRM account is not connected to Refusal Control.",
        ),
        "amo_frame_not_installed": (
            "Интеграция отключена в этом аккаунте amoCRM.",
            "The integration was disconnected from this amoCRM account.",
        ),
        "amo_frame_what_to_do": (
            "Обновите страницу amoCRM и откройте вкладку сделки или раздел «Контроль отказов» снова. Если не "
            "помогло — попросите администратора аккаунта переподключить интеграцию.",
            "Reload the amoCRM page and open the lead tab or the Refusal Control section again. If that does not "
            "help, ask the account administrator to reconnect the integration.",
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


def _oauth_error(status: int, error: str, message: str) -> ResponseReturnValue:
    """A refused /amocrm/oauth: a person's browser lands here, so it gets a page in Russian and English saying
    what to do; a program asking for JSON gets the JSON error as on every other route."""
    accepts = request.accept_mimetypes
    if accepts.best_match(["application/json", "text/html"]) != "text/html":
        return _error(status, error, message)
    if status == 401:
        log.warning("amocrm call refused", extra={"reason": message, "path": request.path})
    key = f"amo_oauth_{error}"
    explanation = {lang: i18n.translate(key, lang) for lang in ("ru", "en")}
    return render_template("amocrm/oauth_refused.html", lang="ru", explanation=explanation), status


def _both(key: str) -> str:
    """A message for a caller whose language we do not know: Russian first, then English."""
    return f"{i18n.translate(key, 'ru')} / {i18n.translate(key, 'en')}"


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


def _verified_account(host: str, access_token: str) -> tuple[str, str]:
    """(account id, granting user id) from ``GET https://{host}/api/v4/account`` with the token just issued.

    Never from the token's claims: we cannot verify the access token's signature (amoCRM signs it with its
    own key), so its `account_id` is whatever the sender wrote. The answer of the verified host is what
    amoCRM says about the account that host serves.
    """
    url = f"https://{checked_host(host)}/api/v4/account"
    try:
        response = requests.get(
            url,
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/hal+json"},
            timeout=(10, 30),
            allow_redirects=False,
        )
        answer = response.json() if response.status_code == 200 else None
    except (requests.RequestException, ValueError) as error:
        raise CrmUnavailable("amoCRM did not tell the account id") from error
    account_id = str(answer.get("id") or "") if isinstance(answer, dict) else ""
    if not account_id.isdigit():
        raise CrmUnavailable("amoCRM did not tell the account id")
    user_id = str(answer.get("current_user_id") or "")  # type: ignore[union-attr]
    return account_id, user_id if user_id.isdigit() else ""


def _granted_by_admin(host: str, access_token: str) -> bool:
    """Whether the user who granted `access_token` is an administrator of the account, asked of amoCRM itself.

    A token carries the rights of the user who allowed access, and any user of an account where the
    integration is installed may authorise it again. ``GET /api/v4/users`` is for administrators only
    (others get 403), so one row of it with the token just issued tells: 200 or 204 yes, 403 no. Same host
    check as every other call, no redirects followed; anything else means amoCRM did not tell
    (CrmUnavailable).
    """
    url = f"https://{checked_host(host)}/api/v4/users"
    try:
        response = requests.get(
            url,
            params={"limit": 1},
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/hal+json"},
            timeout=(10, 30),
            allow_redirects=False,
        )
    except requests.RequestException as error:
        raise CrmUnavailable("amoCRM did not tell the user's rights") from error
    if response.status_code in (200, 204):
        return True
    if response.status_code == 403:
        return False
    raise CrmUnavailable(f"amoCRM did not tell the user's rights (HTTP {response.status_code})")


def _take_host(portal: Portal, host: str, actor: str) -> None:
    """Store `host` as the account's API host; a change of host for a known account is audited.

    The host was checked (a bare name under AMO_HOST_SUFFIXES) and the account id came from that very
    host's ``/api/v4/account``, answering with a token it issued to our client id for our secret. On the
    real amoCRM only amoCRM's own servers answer under those suffixes, so a known account appearing on
    another host means its subdomain was renamed in amoCRM, and we follow it. Nobody else can produce
    that answer: an attacker's host never passes the host check, and a token he got for his own account
    names his own account id, which only ever selects his own row. The move is audited (old and new
    host) so an administrator can see it.
    """
    previous = portal.domain
    portal.domain = host
    portal.rest_base = f"https://{host}"
    if portal.id is not None and previous and previous != host:
        log.warning("amocrm account moved to another host", extra={"portal_id": portal.id})
        audit.record(
            portal.id,
            actor,
            "host_change",
            "accepted",
            f"the account's host changed from {previous} to {host}, confirmed by {host}/api/v4/account",
            previous_host=previous,
            host=host,
        )


@bp.get("/oauth")
def oauth() -> ResponseReturnValue:
    """The redirect after the admin allowed access: check, exchange the code, store, run the installer.

    `referer` must be a bare amoCRM account host (`account_host`) before anything is sent; the code, our
    client secret and the new token go there only, and the account id is what that host's
    ``/api/v4/account`` answers (`_verified_account`). A call with `from_widget` and no `state` is what
    amoCRM sends after a widget install and stays accepted: it can only exchange a code amoCRM itself
    issued to our client id on the host it names, and what it stores is the row of the account that host
    serves, so a stranger's request either fails at amoCRM or installs the account its code belongs to.
    Any user may authorise an integration that is already installed, and the token has that user's rights:
    only a code granted by an account administrator (`_granted_by_admin`) is stored, anything else is
    refused with 403 and changes nothing.
    """
    args = request.args
    if args.get("error"):
        return _oauth_error(400, "access_denied", "the administrator did not allow access")
    client_id = current_app.config["AMO_CLIENT_ID"]
    if not client_id or not current_app.config["AMO_CLIENT_SECRET"]:
        return _oauth_error(503, "not_configured", "the amoCRM integration is not configured on this server")
    code, state = args.get("code", ""), args.get("state", "")
    if not code or len(code) > 4096:
        return _oauth_error(400, "bad_request", "code is missing")
    referer = account_host(args.get("referer", ""))
    if referer is None:
        return _oauth_error(400, "bad_request", _both("amo_bad_referer"))
    if args.get("client_id") and not same_secret(args["client_id"], client_id):
        return _oauth_error(400, "bad_request", "client_id is not ours")
    if state:
        if not amo_verify.state_valid(state):
            return _oauth_error(401, "unauthorized", "state is not one we issued")
    elif not args.get("from_widget"):
        return _oauth_error(400, "bad_request", "state is missing")
    try:
        answer = oauth_token_request(referer, {"grant_type": "authorization_code", "code": code})
        account_id, user_id = _verified_account(referer, str(answer["access_token"]))
        admin = _granted_by_admin(referer, str(answer["access_token"]))
    except AmoError as error:
        return _oauth_error(400, "code_refused", f"amoCRM refused the authorisation code ({error.code})")
    except CrmUnavailable as error:
        return _oauth_error(502, "crm_unavailable", f"amoCRM did not answer: {error.description}")
    except CrmError as error:  # ForeignHost: the host stopped passing between the checks; nothing was sent
        return _oauth_error(400, "bad_request", f"{_both('amo_bad_referer')} ({error.code})")
    actor = user_id or "admin"
    if not admin:
        return _refuse_non_admin(account_id, actor)
    portal = _portal(account_id) or Portal(crm=Portal.AMOCRM, external_id=account_id, settings={})
    _take_host(portal, referer, actor)
    store_token_answer(portal, answer)
    portal.status = "installing"
    portal.status_detail = ""
    portal.uninstalled_at = None
    portal.language = "en" if referer.endswith((".kommo.com", ".amocrm.com")) else "ru"
    db.session.add(portal)
    db.session.flush()
    audit.record(portal.id, actor, "install", "queued")
    db.session.commit()
    enqueue("default", "app.jobs.install_amocrm", portal.id)
    return render_template("amocrm/connected.html", lang=portal.language)


def _refuse_non_admin(account_id: str, actor: str) -> ResponseReturnValue:
    """A user who is not an administrator allowed access: nothing is stored (the admin's tokens, the status and
    the host stay), nothing is revoked, no installer runs; a known account gets a "refused" audit row."""
    portal = _portal(account_id)
    if portal is not None:
        audit.record(
            portal.id,
            actor,
            "install",
            "refused",
            "the user who allowed access is not an administrator of the amoCRM account",
        )
        db.session.commit()
    log.warning("amocrm authorisation by a non-administrator refused", extra={"account_id": account_id})
    return _oauth_error(403, "forbidden", _both("amo_admin_only"))


def _still_installed(portal: Portal) -> bool | None:
    """Whether amoCRM still honours our tokens for the account: True (still installed), False (revoked), or
    None when amoCRM could not be asked (unreachable, throttled, blocked).

    One ``GET /api/v4/account`` through the adapter, on the verified host only; an expired access token is
    refreshed first, so only a revoked pair answers False.
    """
    if not portal.access_token and not portal.refresh_token:
        return False
    try:
        answer = AmoRest(portal.id).get("/api/v4/account")
    except (PortalNeedsReinstall, AmoUnauthorized, AmoTokenRevoked):
        return False
    except CrmError as error:
        log.warning("amocrm uninstall not confirmed", extra={"portal_id": portal.id, "code": error.code})
        return None
    return isinstance(answer, dict) and str(answer.get("id") or "") == portal.external_id


@bp.get("/uninstall")
def uninstall() -> ResponseReturnValue:
    """The uninstall hook: client_uuid and the HMAC signature of "client_id|account_id" must match.

    amoCRM signs only "client_id|account_id": no time, no nonce, nothing that differs between two removals
    of the same account, so every genuine uninstall URL of an account is the same string and a captured
    one can be replayed after a reinstall. Remembering honoured signatures cannot tell a replay from the
    next genuine removal (they are identical), so the signature alone decides nothing: amoCRM is asked.
    A removal revokes the integration's tokens; while amoCRM still accepts ours (`_still_installed`), the
    integration is installed and the call is a replay, which changes nothing and is audited. When amoCRM
    cannot be asked, nothing changes either (503): a genuine removal still shows, because the next call
    with the revoked tokens flags the account for reinstallation.
    """
    client_uuid = request.args.get("client_uuid", "")
    account_id = request.args.get("account_id", "")
    signature = request.args.get("signature", "")
    if not amo_verify.uninstall_signature_valid(client_uuid, account_id, signature):
        return _error(401, "unauthorized", "signature does not match")
    portal = _portal(account_id)
    if portal is None:
        return _error(401, "unauthorized", "unknown account")
    if portal.status == "uninstalled":
        return jsonify(ok=True)
    installed = _still_installed(portal)
    db.session.refresh(portal)  # the probe may have refreshed the tokens or flagged the row in its own session
    if installed is None:
        return _error(503, "crm_unavailable", _both("amo_uninstall_unchecked"))
    if installed:
        audit.record(portal.id, "amocrm", "uninstall", "refused", "amoCRM still accepts the integration's tokens")
        db.session.commit()
        log.warning("amocrm uninstall refused: the account still accepts our tokens", extra={"portal_id": portal.id})
        return _error(409, "still_installed", _both("amo_uninstall_unconfirmed"))
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
    body = request.get_data(cache=True, as_text=True)  # capped while read (app/core/limits.py)
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
    body = request.get_data(cache=True, as_text=True)  # capped while read (app/core/limits.py)
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
    return origin if parts.scheme == "https" and account_host(parts.netloc) is not None else None


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
    remember_widget_code(portal, str((payload or {}).get("widget_code") or ""))
    ticket = amo_verify.issue_ticket(
        portal.id, str(claims.get("user_id") or ""), bool(claims.get("is_admin")), lead_id if lead_id.isdigit() else ""
    )
    response = jsonify(url=_app_url(ticket, portal.language))
    return _cors(response, f"https://{portal.domain}")


def remember_widget_code(portal: Portal, code: str) -> None:
    """Keep the code amoCRM gave our widget in this account (the left-menu page's address names it, and the
    scheduled summaries link to that page). Only a plain code is kept; a change is committed at once."""
    settings = dict(portal.settings or {})
    if not WIDGET_CODE.fullmatch(code) or settings.get(AMO_WIDGET_CODE) == code:
        return
    settings[AMO_WIDGET_CODE] = code
    portal.settings = settings
    db.session.commit()


def _app_url(ticket: str, language: str = "ru") -> str:
    """Our page for a ticket; `lang` (the account's language) lets a refusal speak it even once the ticket is
    spent or has expired."""
    query = urlencode({"ticket": ticket, "lang": "en" if language == "en" else "ru"})
    return f"{current_app.config['PUBLIC_URL']}/amocrm/app?{query}"


def frame_refused(status: int, reason: str, detail: str, language: str | None = None) -> ResponseReturnValue:
    """A page inside amoCRM that cannot be shown: an HTML page in the account's language (else the `lang` of
    the link) saying why and what to do, as Bitrix24's frames do (reasons: link_expired, unknown_portal,
    not_installed); the English `detail` goes to the log. A program asking for JSON gets the JSON error."""
    if request.accept_mimetypes.best_match(["application/json", "text/html"]) == "application/json":
        return _error(status, "unauthorized" if status == 401 else "not_found", detail)
    log.warning("amocrm frame refused", extra={"reason": detail, "path": request.path})
    lang = language or ("en" if (request.args.get("lang") or "").lower() == "en" else "ru")
    return render_template("amocrm/frame_error.html", lang=lang, reason=reason), status


@bp.get("/app")
def app_page() -> ResponseReturnValue:
    """Our page inside the widget's iframe, opened with a ticket: the QA review of the lead when the
    ticket names one (the lead-card tab), else the main page (QA queue, exchange, settings, reports)."""
    payload = amo_verify.redeem_ticket(request.args.get("ticket", ""))
    if payload is None:
        return frame_refused(401, "link_expired", "the link has expired; reopen the tab in amoCRM")
    portal = db.session.get(Portal, payload["p"])
    if portal is None or portal.crm != Portal.AMOCRM:
        return frame_refused(404, "unknown_portal", "account not found")
    g.portal_id = portal.id
    g.frame_origin = f"https://{portal.domain}"
    if portal.status == "uninstalled":
        return frame_refused(401, "not_installed", "the integration is not installed in this account", portal.language)
    if timezones.read_on_first_open(portal, client_for(portal)):
        db.session.commit()
    user = SimpleNamespace(user_id=str(payload.get("u") or ""), is_admin=bool(payload.get("a")))
    lead_id = str(payload.get("l") or "")
    lead_id = lead_id if lead_id.isdigit() else ""
    identity = Identity(portal.id, user.user_id, is_admin=user.is_admin, issued_at=int(payload["o"]), deal_id=lead_id)
    token = issue_token(identity)
    if lead_id:
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
    return jsonify(url=_app_url(ticket, portal.language))
