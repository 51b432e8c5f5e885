"""Emulated amoCRM accounts: data, OAuth with rotating single-use refresh tokens, the API v4 semantics,
the events log, webhooks (form-encoded PHP brackets, v2 custom-field shape), Digital Pipeline widget
actions and people acting in the UI.

Formats follow reference/amocrm.md; everything that changes state happens under one lock, and webhooks
wait in the outbox until `deliver()` sends them (never while an API call is being answered).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox import events
from sandbox.clock import Clock
from sandbox.events import flatten

WON, LOST = 142, 143
ACCESS_TTL = 86400
REFRESH_TTL = 90 * 86400
CODE_TTL = 20 * 60
WIDGET_TOKEN_TTL = 30 * 60
RATE_LIMIT = 7  # requests per second per integration (reference/amocrm.md section 9)
STATUS_COLORS = (
    "#fffeb2 #fffd7f #fff000 #ffeab2 #ffdc7f #ffce5a #ffdbdb #ffc8c8 #ff8f92 #d6eaff #c1e0ff #98cbff "
    "#ebffb1 #deff81 #87f2c0 #f9deff #f3beff #ccc8f9 #eb93ff #f2f3f4 #e6e8ea"
).split()
FIELD_TYPES = {
    "text",
    "numeric",
    "checkbox",
    "select",
    "multiselect",
    "textarea",
    "date",
    "url",
    "radiobutton",
    "tracking_data",
}
RECORDING_HOST = "records.telephony.test"  # a telephony provider's public recording host
WEBHOOK_SETTINGS = {
    f"{action}_{entity}"
    for action in ("add", "update", "delete", "restore", "status", "responsible", "note")
    for entity in ("lead", "contact", "company", "customer")
} | {"add_task", "update_task", "delete_task", "responsible_task", "add_talk", "update_talk"}

# (url, form body) -> HTTP status of the handler's answer
Transport = Callable[[str, str], int]


class ApiError(Exception):
    """An error answer: HTTP status and a problem+json body (or an HTML page for a block)."""

    def __init__(self, status: int, body: dict[str, Any] | str) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def problem(status: int, title: str, detail: str = "", **extra: Any) -> ApiError:
    """A problem+json error."""
    body: dict[str, Any] = {"title": title, "type": f"https://httpstatus.es/{status}", "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return ApiError(status, body)


def validation_error(errors: list[tuple[str, str, str]], request_id: str = "0") -> ApiError:
    """400 with the documented ``validation-errors`` shape; errors are (code, path, detail)."""
    return problem(
        400,
        "Bad Request",
        "Request validation failed",
        **{
            "validation-errors": [
                {
                    "request_id": request_id,
                    "errors": [{"code": code, "path": path, "detail": detail} for code, path, detail in errors],
                }
            ]
        },
    )


def oauth_problem(status: int, hint: str, detail: str) -> ApiError:
    """The OAuth endpoint's problem shape."""
    return ApiError(
        status,
        {
            "hint": hint,
            "title": "Unauthorized" if status == 401 else "Bad Request",
            "type": "https://developers.amocrm.ru/v3/errors/OAuthProblemJson",
            "status": status,
            "detail": detail,
        },
    )


@lru_cache(maxsize=1)
def _signing_key() -> rsa.RSAPrivateKey:
    """The RSA key amoCRM signs access tokens with (RS256)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class RefreshToken:
    """An issued refresh token: works once; after that only until the pair it produced is used."""

    account_id: int
    user_id: int
    expires_at: float
    state: str = "active"  # active | superseded (grace, successor unused) | dead
    predecessor: str | None = None
    uses: int = 0


@dataclass
class AccessToken:
    """An issued access token (the JWT string is the key)."""

    account_id: int
    user_id: int
    expires_at: float
    refresh: str | None  # the refresh token issued with it


@dataclass
class Webhook:
    """A /api/v4/webhooks registration."""

    id: int
    destination: str
    settings: list[str]
    created_by: int
    created_at: int
    disabled: bool = False
    sort: int = 10


@dataclass
class DigitalPipelineAction:
    """A widget action an admin put on a status in the Digital Pipeline: when a lead enters the status,
    amoCRM POSTs the action's settings to the manifest's `dp.webhook_url`."""

    id: int
    pipeline_id: int
    status_id: int
    url: str
    settings: dict[str, str]


@dataclass
class OutgoingHook:
    """One POST waiting in the outbox."""

    id: int
    account_id: int
    url: str
    body: str


@dataclass
class HookDelivery:
    """What happened to a webhook POST."""

    hook: OutgoingHook
    status: int | None  # None: dropped; 0: transport error

    @property
    def delivered(self) -> bool:
        """Whether the handler answered 100-299 (what amoCRM accepts)."""
        return self.status is not None and 100 <= self.status < 300


@dataclass
class Account:
    """One amoCRM account with the integration's credentials."""

    id: int
    subdomain: str
    domain: str
    client_id: str
    client_secret: str
    redirect_uri: str
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    groups: dict[int, str] = field(default_factory=dict)
    pipelines: dict[int, dict[str, Any]] = field(default_factory=dict)
    leads: dict[int, dict[str, Any]] = field(default_factory=dict)
    # Contacts and companies: {id, name, responsible_user_id, created_at, updated_at, phones, emails}; a lead
    # names its own in lead["contacts"] (ids, the main one first) and lead["company_id"].
    contacts: dict[int, dict[str, Any]] = field(default_factory=dict)
    companies: dict[int, dict[str, Any]] = field(default_factory=dict)
    custom_fields: dict[int, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[int, dict[str, Any]] = field(default_factory=dict)
    notes: dict[int, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    webhooks: dict[str, Webhook] = field(default_factory=dict)
    dp_actions: list[DigitalPipelineAction] = field(default_factory=list)
    installed: bool = True
    blocked: bool = False
    rate_limit: int | None = RATE_LIMIT
    recent: deque[float] = field(default_factory=deque)
    calls: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path, status)
    lead_writes: dict[int, int] = field(default_factory=dict)  # lead id -> leads PATCHed (alone or in a list)
    loss_reasons: dict[int, str] = field(default_factory=dict)
    timezone: str = "Europe/Moscow"

    def field_by_code(self, code: str) -> dict[str, Any] | None:
        """A lead custom field by its code (UTM_SOURCE is built in)."""
        return next((f for f in self.custom_fields.values() if f.get("code") == code), None)

    def status(self, status_id: int, pipeline_id: int | None = None) -> dict[str, Any] | None:
        """A status by id (142/143 exist in every pipeline: `pipeline_id` says which)."""
        if pipeline_id is not None and pipeline_id in self.pipelines:
            return self.pipelines[pipeline_id]["statuses"].get(status_id)
        for pipeline in self.pipelines.values():
            if status_id in pipeline["statuses"]:
                return pipeline["statuses"][status_id]
        return None

    def main_pipeline(self) -> int:
        """The main pipeline's id."""
        return next(pid for pid, p in self.pipelines.items() if p["is_main"])


class AmoSandbox:
    """Emulated amoCRM accounts, their OAuth server and their webhooks."""

    def __init__(self, *, clock: Clock | None = None, transport: Transport | None = None) -> None:
        self.clock = clock or Clock()
        self.lock = threading.RLock()
        self.accounts: dict[int, Account] = {}
        self.access_tokens: dict[str, AccessToken] = {}
        self.recordings: dict[str, bytes] = {}  # recording URL -> the file
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.codes: dict[str, tuple[int, int, float]] = {}
        self.outbox: list[OutgoingHook] = []
        self.deliveries: list[HookDelivery] = []
        self.transport: Transport = transport or requests_transport()
        self.refresh_log: list[tuple[str, int]] = []  # (refresh token, answer status)
        self._ids = 1000
        self._hook_ids = 0
        self._drop_next = 0
        self.token_delay = 0.0  # seconds the token endpoint takes (to widen refresh races in tests)

    def next_id(self) -> int:
        """A fresh id (unique across entities, like amoCRM's large ids)."""
        self._ids += 1
        return self._ids

    # ---- accounts --------------------------------------------------------------------------------

    def seed_account(
        self,
        *,
        subdomain: str = "acme",
        domain: str | None = None,
        account_id: int = 30441694,
        client_id: str | None = None,
        client_secret: str | None = None,
        redirect_uri: str = "https://app.example.test/amocrm/oauth",
    ) -> Account:
        """An account with people, two pipelines and a few leads-worth of setup.

        Users: 1 admin, 2 and 3 managers, 7 and 8 QA, 9 head, 10 inactive QA. Groups: sales (1), QA (2),
        heads (3). Pipelines: "Воронка" (main) and "Повторные продажи", each with Incoming leads, three
        working statuses, 142 and 143.
        """
        from sandbox.amocrm.seed import seed

        with self.lock:
            account = Account(
                id=account_id,
                subdomain=subdomain,
                domain=domain or f"{subdomain}.amocrm.ru",
                client_id=client_id or secrets.token_hex(16),
                client_secret=client_secret or secrets.token_urlsafe(48),
                redirect_uri=redirect_uri,
            )
            seed(self, account)
            self.accounts[account.id] = account
            return account

    def account(self, key: int | str | Account) -> Account:
        """An account by id, subdomain or domain."""
        if isinstance(key, Account):
            return key
        with self.lock:
            for account in self.accounts.values():
                if key in (account.id, account.subdomain, account.domain):
                    return account
        raise KeyError(f"no sandbox account {key!r}")

    def account_by_host(self, host: str) -> Account | None:
        """The account served at a host."""
        for account in self.accounts.values():
            if account.domain == host:
                return account
        return None

    # ---- OAuth -----------------------------------------------------------------------------------

    def _access_jwt(self, account: Account, user_id: int, expires: float) -> str:
        now = int(self.clock.now())
        claims = {
            "aud": account.client_id,
            "jti": secrets.token_hex(16),
            "iat": now,
            "nbf": now,
            "exp": int(expires),
            "sub": str(user_id),
            "grant_type": "",
            "account_id": account.id,
            "base_domain": account.domain.split(".", 1)[1] if "." in account.domain else account.domain,
            "version": 2,
            "scopes": ["crm", "files", "files_delete", "notifications", "push_notifications"],
            "api_domain": account.domain,
        }
        return jwt.encode(claims, _signing_key(), algorithm="RS256")

    def _issue(self, account: Account, user_id: int, predecessor: str | None = None) -> dict[str, Any]:
        now = self.clock.now()
        refresh = secrets.token_urlsafe(96)
        self.refresh_tokens[refresh] = RefreshToken(account.id, user_id, now + REFRESH_TTL, predecessor=predecessor)
        access = self._access_jwt(account, user_id, now + ACCESS_TTL)
        self.access_tokens[access] = AccessToken(account.id, user_id, now + ACCESS_TTL, refresh)
        return {
            "token_type": "Bearer",
            "expires_in": ACCESS_TTL,
            "access_token": access,
            "refresh_token": refresh,
            "server_time": int(now),
        }

    def authorization_code(self, account: int | str | Account, user_id: int | None = None) -> str:
        """A `code` (valid 20 minutes, single use), as amoCRM hands out after a user allows access.

        Only an administrator installs the integration; any active user may authorise it once it is installed
        (the code, and the tokens it buys, carry that user's rights). A non-admin on an account where it is
        not installed gets a 403 problem, as amoCRM's consent page refuses him."""
        with self.lock:
            account = self.account(account)
            user_id = user_id or self.admin_id(account)
            if not account.installed and not account.users[user_id]["rights"]["is_admin"]:
                raise problem(403, "Forbidden", "Only an administrator can install the integration")
            account.installed = True
            code = secrets.token_urlsafe(180)
            self.codes[code] = (account.id, user_id, self.clock.now() + CODE_TTL)
            return code

    def admin_id(self, account: Account) -> int:
        """The first active admin."""
        return min(uid for uid, u in account.users.items() if u["rights"]["is_admin"] and u["rights"]["is_active"])

    def _used(self, refresh: str | None) -> None:
        """The pair of `refresh` was used: the token it replaced stops working."""
        token = self.refresh_tokens.get(refresh or "")
        if token is not None and token.predecessor:
            previous = self.refresh_tokens.get(token.predecessor)
            if previous is not None:
                previous.state = "dead"
            token.predecessor = None

    def token_endpoint(self, host: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST /oauth2/access_token."""
        with self.lock:
            account = self.account_by_host(host)
            if account is None:
                raise problem(404, "Not Found")
            if (
                body.get("client_id") != account.client_id
                or body.get("client_secret") != account.client_secret
                or body.get("redirect_uri") != account.redirect_uri
            ):
                raise oauth_problem(401, "Client authentication failed", "Client authentication failed")
            grant = body.get("grant_type")
            if grant == "authorization_code":
                entry = self.codes.pop(str(body.get("code") or ""), None)
                if entry is None or entry[0] != account.id or entry[2] < self.clock.now():
                    raise oauth_problem(400, "Authorization code has been revoked", "The authorization code is invalid")
                return self._issue(account, entry[1])
            if grant == "refresh_token":
                key = str(body.get("refresh_token") or "")
                token = self.refresh_tokens.get(key)
                if token is None or token.account_id != account.id:
                    self.refresh_log.append((key, 400))
                    raise oauth_problem(400, "Cannot decrypt the refresh token", "The refresh token is invalid.")
                token.uses += 1
                if token.state == "dead" or token.expires_at < self.clock.now() or not account.installed:
                    self.refresh_log.append((key, 401))
                    raise oauth_problem(401, "Token has been revoked", "The refresh token is invalid.")
                # Rotation: a new pair; this token keeps working only until the new pair is used.
                self._used(key)
                for other in self.refresh_tokens.values():
                    if other.predecessor == key:
                        other.state = "dead"  # an earlier, never used successor of this token
                token.state = "superseded"
                self.refresh_log.append((key, 200))
                return self._issue(account, token.user_id, predecessor=key)
            raise oauth_problem(400, "Unsupported grant type", "The authorization grant type is not supported")

    def authenticate(self, host: str, header: str) -> tuple[Account, int]:
        """Who calls the API: (account, user id), or a 401 problem."""
        with self.lock:
            account = self.account_by_host(host)
            if account is None:
                raise problem(404, "Not Found")
            if account.blocked:
                raise ApiError(403, "<html><head><title>403 Forbidden</title></head><body>403 Forbidden</body></html>")
            token = self.access_tokens.get(header.removeprefix("Bearer ").strip())
            if token is None or token.account_id != account.id or not account.installed:
                raise problem(401, "Unauthorized", "Unauthorized")
            if token.expires_at < self.clock.now():
                raise problem(401, "Unauthorized", "Token has expired")
            self._used(token.refresh)
            if account.rate_limit is not None:
                now = self.clock.now()
                while account.recent and account.recent[0] <= now - 1:
                    account.recent.popleft()
                if len(account.recent) >= account.rate_limit:
                    raise problem(429, "Too Many Requests", "Too many requests")
                account.recent.append(now)
            return account, token.user_id

    def issue_tokens(self, account: int | str | Account, user_id: int | None = None) -> dict[str, Any]:
        """A token pair without the code flow (tests)."""
        with self.lock:
            account = self.account(account)
            return self._issue(account, user_id or self.admin_id(account))

    def expire_access_tokens(self, account: int | str | Account) -> None:
        """Every access token of the account expires now."""
        with self.lock:
            account_id = self.account(account).id
            for token in self.access_tokens.values():
                if token.account_id == account_id:
                    token.expires_at = self.clock.now() - 1

    def refresh_uses(self, token: str) -> int:
        """How many times a refresh token was presented."""
        with self.lock:
            found = self.refresh_tokens.get(token)
            return found.uses if found else 0

    def widget_token(
        self,
        account: int | str | Account,
        user_id: int,
        audience: str,
        *,
        lifetime: int = WIDGET_TOKEN_TTL,
        secret: str | None = None,
        **overrides: Any,
    ) -> str:
        """The disposable token `$authorizedAjax` sends in X-Auth-Token (HS256 with the client secret)."""
        account = self.account(account)
        now = int(self.clock.now())
        claims = {
            "iss": f"https://{account.domain}",
            "aud": audience,
            "jti": secrets.token_hex(16),
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "account_id": account.id,
            "subdomain": account.subdomain,
            "client_uuid": account.client_id,
            "user_id": user_id,
            "is_admin": bool(account.users[user_id]["rights"]["is_admin"]),
            **overrides,
        }
        return jwt.encode(claims, secret or account.client_secret, algorithm="HS256")

    def uninstall(self, account: int | str | Account, hook_url: str, *, secret: str | None = None) -> str:
        """The admin removes the integration: tokens die; returns the uninstall hook URL amoCRM calls."""
        with self.lock:
            account = self.account(account)
            account.installed = False
            account.webhooks.clear()
            message = f"{account.client_id}|{account.id}".encode()
            signature = hmac.new((secret or account.client_secret).encode(), message, hashlib.sha256).hexdigest()
            query = urllib.parse.urlencode(
                {"client_uuid": account.client_id, "account_id": account.id, "signature": signature}
            )
            return f"{hook_url}?{query}"

    # ---- webhooks --------------------------------------------------------------------------------

    def _hook_lead(self, account: Account, lead: dict[str, Any], old: dict[str, Any] | None, section: str) -> dict:
        entry: dict[str, Any] = {
            "id": lead["id"],
            "name": lead["name"],
            "status_id": lead["status_id"],
            "price": lead["price"] or "",
            "responsible_user_id": lead["responsible_user_id"],
            "last_modified": lead["updated_at"],
            "modified_user_id": lead["updated_by"],
            "created_user_id": lead["created_by"],
            "date_create": lead["created_at"],
            "pipeline_id": lead["pipeline_id"],
            "account_id": account.id,
            "created_at": lead["created_at"],
            "updated_at": lead["updated_at"],
        }
        if section == "status" and old is not None:
            entry["old_status_id"] = old["status_id"]
            if old["pipeline_id"] != lead["pipeline_id"]:
                entry["old_pipeline_id"] = old["pipeline_id"]
        if section == "responsible" and old is not None:
            entry["old_responsible_user_id"] = old["responsible_user_id"]
        custom = []
        for field_id, values in (lead.get("cf") or {}).items():
            spec = account.custom_fields.get(field_id) or {}
            rendered = []
            for value in values:
                item: dict[str, Any] = {"value": value.get("value", "")}
                if value.get("enum_id") is not None:
                    item["enum"] = value["enum_id"]
                rendered.append(item)
            custom.append({"id": field_id, "name": spec.get("name", ""), "values": rendered})
        if custom:
            entry["custom_fields"] = custom
        return entry

    # ---- Digital Pipeline -------------------------------------------------------------------------

    def add_dp_action(
        self,
        account: int | str | Account,
        status_id: int,
        settings: Mapping[str, Any],
        *,
        url: str,
        pipeline_id: int | None = None,
    ) -> DigitalPipelineAction:
        """The admin adds our widget as an action on a status (the pipeline that owns it unless named), with the
        action form's values (`dp.settings` of the manifest) and the manifest's `dp.webhook_url`."""
        with self.lock:
            account = self.account(account)
            if pipeline_id is None:
                owner = account.status(status_id)
                if owner is None:
                    raise KeyError(f"no status {status_id}")
                pipeline_id = owner["pipeline_id"]
            action = DigitalPipelineAction(
                self.next_id(), pipeline_id, status_id, url, {key: str(value) for key, value in settings.items()}
            )
            account.dp_actions.append(action)
            return action

    def dp_body(
        self,
        account: int | str | Account,
        action: DigitalPipelineAction,
        element_id: int,
        *,
        type_code: str = "lead_status_changed",
        element_type: int = 2,
        at: int | None = None,
    ) -> str:
        """The form-encoded body amoCRM POSTs for one widget action (reference/amocrm.md section 8)."""
        account = self.account(account)
        types = {"lead_added": 1, "lead_status_changed": 14, "lead_appeared_in_status": 15}
        payload = {
            "event": {
                "type": types.get(type_code, 14),
                "type_code": type_code,
                "data": {
                    "id": element_id,
                    "element_type": element_type,
                    "status_id": action.status_id,
                    "pipeline_id": action.pipeline_id,
                },
                "time": int(self.clock.now()) if at is None else at,
            },
            "action": {"settings": {"widget": {"settings": dict(action.settings)}}},
            "subdomain": account.subdomain,
            "account_id": account.id,
        }
        return urllib.parse.urlencode(flatten(payload))

    def _fire_dp(self, account: Account, changes: list[tuple[str, dict[str, Any], dict[str, Any] | None]]) -> None:
        """A lead created in, or moved into, a status with widget actions: one POST per action (whoever moved
        it: a person, automation or an integration's API call)."""
        for kind, lead, old in changes:
            if kind == "add":
                type_code = "lead_added"
            elif old is not None and (old["status_id"], old["pipeline_id"]) != (lead["status_id"], lead["pipeline_id"]):
                type_code = "lead_status_changed"
            else:
                continue
            for action in account.dp_actions:
                if (action.pipeline_id, action.status_id) == (lead["pipeline_id"], lead["status_id"]):
                    self._hook_ids += 1
                    body = self.dp_body(account, action, lead["id"], type_code=type_code)
                    self.outbox.append(OutgoingHook(self._hook_ids, account.id, action.url, body))

    def _fire(self, account: Account, changes: list[tuple[str, dict[str, Any], dict[str, Any] | None]]) -> None:
        """One POST per webhook for one operation, with every lead it touched (PHP-bracket form); then the
        Digital Pipeline actions of the statuses the leads entered."""
        if not changes:
            return
        self._fire_dp(account, changes)
        for hook in account.webhooks.values():
            if hook.disabled:
                continue
            sections: dict[str, list[dict[str, Any]]] = {}
            for kind, lead, old in changes:
                wanted = ["add"] if kind == "add" else ["update"]
                if kind != "add" and old is not None and old["status_id"] != lead["status_id"]:
                    wanted.append("status")
                if kind != "add" and old is not None and old["responsible_user_id"] != lead["responsible_user_id"]:
                    wanted.append("responsible")
                if kind == "delete":
                    wanted = ["delete"]
                for section in wanted:
                    if f"{section}_lead" in hook.settings:
                        sections.setdefault(section, []).append(self._hook_lead(account, lead, old, section))
            if not sections:
                continue
            payload = {
                "leads": sections,
                "account": {
                    "subdomain": account.subdomain,
                    "id": account.id,
                    "_links": {"self": f"https://{account.domain}"},
                },
            }
            self._hook_ids += 1
            body = urllib.parse.urlencode(flatten(payload))
            self.outbox.append(OutgoingHook(self._hook_ids, account.id, hook.destination, body))

    def drop_next(self, count: int = 1) -> None:
        """Lose the next webhook POSTs (amoCRM sometimes drops or coalesces hooks)."""
        with self.lock:
            self._drop_next += count

    def pending_hooks(self) -> list[OutgoingHook]:
        """What waits in the outbox."""
        with self.lock:
            return list(self.outbox)

    def deliver(self, transport: Transport | None = None) -> list[HookDelivery]:
        """Send everything in the outbox now."""
        with self.lock:
            batch, self.outbox = self.outbox, []
            plan = []
            for hook in batch:
                dropped = self._drop_next > 0
                if dropped:
                    self._drop_next -= 1
                plan.append((hook, dropped))
        send = transport or self.transport
        results = []
        for hook, dropped in plan:
            if dropped:
                results.append(HookDelivery(hook, None))
                continue
            try:
                results.append(HookDelivery(hook, send(hook.url, hook.body)))
            except Exception:  # noqa: BLE001 - a failed delivery is recorded, like amoCRM's retry table
                results.append(HookDelivery(hook, 0))
        with self.lock:
            self.deliveries.extend(results)
        return results

    # ---- leads -----------------------------------------------------------------------------------

    def _event(self, account: Account, kind: str, lead_id: int, by: int, before: Any, after: Any) -> None:
        now = self.clock.now()
        # ULID-like: time-ordered and unique; the sequence keeps two events of one millisecond in order.
        event_id = f"{int(now * 1000):012x}{self.next_id():014x}"
        account.events.append(
            {
                "id": event_id,
                "type": kind,
                "entity_id": lead_id,
                "entity_type": "lead",
                "created_by": by,
                "created_at": int(now),
                "value_before": before,
                "value_after": after,
                "account_id": account.id,
                "_embedded": {"entity": {"id": lead_id}},
            }
        )

    @staticmethod
    def _field_values(account: Account, field_id: int, values: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A custom field's values as a `custom_field_{id}_value_changed` event reports them."""
        spec = account.custom_fields.get(field_id) or {}
        return [
            {
                "custom_field_value": {
                    "field_id": field_id,
                    "field_type": spec.get("type", ""),
                    **({"enum_id": value["enum_id"]} if value.get("enum_id") is not None else {}),
                    "text": str(value.get("value", "")),
                }
            }
            for value in values
        ]

    def apply_lead(self, account: Account, lead_id: int, changes: Mapping[str, Any], by: int) -> tuple[dict, dict]:
        """Apply validated changes to a lead as user `by` (0: automation); returns (old, new) copies."""
        lead = account.leads[lead_id]
        old = {**lead, "cf": {k: list(v) for k, v in (lead.get("cf") or {}).items()}}
        for key in ("name", "price", "responsible_user_id", "status_id", "pipeline_id", "loss_reason_id"):
            if key in changes:
                lead[key] = changes[key]
        if "cf" in changes:
            merged = dict(lead.get("cf") or {})
            for field_id, values in changes["cf"].items():
                if values:
                    merged[field_id] = values
                else:
                    merged.pop(field_id, None)
            lead["cf"] = merged
        if lead["status_id"] not in (WON, LOST):
            lead["loss_reason_id"] = None
            lead["closed_at"] = None
        elif old["status_id"] != lead["status_id"]:
            lead["closed_at"] = int(self.clock.now())
        lead["updated_at"] = int(self.clock.now())
        lead["updated_by"] = by
        if (old["status_id"], old["pipeline_id"]) != (lead["status_id"], lead["pipeline_id"]):
            self._event(
                account,
                "lead_status_changed",
                lead_id,
                by,
                [{"lead_status": {"id": old["status_id"], "pipeline_id": old["pipeline_id"]}}],
                [{"lead_status": {"id": lead["status_id"], "pipeline_id": lead["pipeline_id"]}}],
            )
        for field_id in sorted(set(old["cf"]) | set(lead.get("cf") or {})):
            before, after = old["cf"].get(field_id) or [], (lead.get("cf") or {}).get(field_id) or []
            if before != after:
                self._event(
                    account,
                    f"custom_field_{field_id}_value_changed",
                    lead_id,
                    by,
                    self._field_values(account, field_id, before),
                    self._field_values(account, field_id, after),
                )
        if old["responsible_user_id"] != lead["responsible_user_id"]:
            self._event(
                account,
                "entity_responsible_changed",
                lead_id,
                by,
                [{"responsible_user": {"id": old["responsible_user_id"]}}],
                [{"responsible_user": {"id": lead["responsible_user_id"]}}],
            )
        return old, dict(lead)

    def create_lead(self, account: Account, fields: Mapping[str, Any], by: int) -> dict[str, Any]:
        """Create a lead (validated fields) as user `by`; queues add_lead."""
        now = int(self.clock.now())
        pipeline_id = fields.get("pipeline_id") or account.main_pipeline()
        first = min(
            (s for s in account.pipelines[pipeline_id]["statuses"].values() if s["type"] == 0),
            key=lambda s: s["sort"],
        )
        lead = {
            "id": self.next_id(),
            "name": fields.get("name") or f"Сделка #{self._ids}",
            "price": fields.get("price") or 0,
            "responsible_user_id": fields.get("responsible_user_id") or by or self.admin_id(account),
            "group_id": 0,
            "status_id": fields.get("status_id") or first["id"],
            "pipeline_id": pipeline_id,
            "loss_reason_id": None,
            "created_by": by,
            "updated_by": by,
            "created_at": now,
            "updated_at": now,
            "closed_at": None,
            "is_deleted": False,
            "cf": dict(fields.get("cf") or {}),
        }
        account.leads[lead["id"]] = lead
        self._event(account, "lead_added", lead["id"], by, [], [{"lead_status": {"id": lead["status_id"]}}])
        return dict(lead)

    # ---- acting as people ------------------------------------------------------------------------

    def act(self, account: int | str | Account, user_id: int) -> AmoActor:
        """Do things in the account's UI as a user; webhooks carry modified_user_id = that user."""
        account = self.account(account)
        if user_id not in account.users:
            raise KeyError(f"no user {user_id} in {account.subdomain}")
        return AmoActor(self, account, user_id)

    def act_as_automation(self, account: int | str | Account) -> AmoActor:
        """Changes by a Digital Pipeline robot or Salesbot: no human author (created_by / updated_by 0)."""
        return AmoActor(self, self.account(account), 0)

    # ---- inspection ------------------------------------------------------------------------------

    def lead(self, account: int | str | Account, lead_id: int) -> dict[str, Any]:
        """A lead's internal row (status_id, pipeline_id, cf, ...)."""
        with self.lock:
            return dict(self.account(account).leads[int(lead_id)])

    def status_of(self, account: int | str | Account, lead_id: int) -> tuple[int, int]:
        """(pipeline_id, status_id) of a lead."""
        lead = self.lead(account, lead_id)
        return lead["pipeline_id"], lead["status_id"]

    def api_calls(self, account: int | str | Account, method: str | None = None, path: str | None = None) -> int:
        """How many API requests matched (path: exact, or a prefix ending in '*')."""
        with self.lock:
            calls = list(self.account(account).calls)
        count = 0
        for call_method, call_path, _status in calls:
            if method is not None and call_method != method:
                continue
            if path is not None:
                if path.endswith("*"):
                    if not call_path.startswith(path[:-1]):
                        continue
                elif call_path != path:
                    continue
            count += 1
        return count

    def tasks_for(self, account: int | str | Account, user_id: int | None = None, lead_id: int | None = None) -> list:
        """Tasks, optionally for one responsible user and/or one lead."""
        with self.lock:
            tasks = list(self.account(account).tasks.values())
        return [
            t
            for t in tasks
            if (user_id is None or t["responsible_user_id"] == user_id)
            and (lead_id is None or (t["entity_type"] == "leads" and t["entity_id"] == lead_id))
        ]


class AmoActor:
    """A person (user id) or automation (0) working in the account's UI."""

    def __init__(self, sandbox: AmoSandbox, account: Account, user_id: int) -> None:
        self.sandbox = sandbox
        self.account = account
        self.user_id = user_id

    def create_lead(self, name: str, status_id: int | None = None, pipeline_id: int | None = None, **more: Any) -> int:
        """A new lead (responsible: this user unless given); ``utm_source="..."`` fills the tracking field."""
        with self.sandbox.lock:
            utm_source = more.pop("utm_source", None)
            if utm_source:
                tracking = self.account.field_by_code("UTM_SOURCE")
                if tracking is None:
                    raise KeyError("the account has no UTM_SOURCE field")
                more["cf"] = {**(more.get("cf") or {}), tracking["id"]: [{"value": str(utm_source)}]}
            fields = {"name": name, "status_id": status_id, "pipeline_id": pipeline_id, **more}
            if pipeline_id is None and status_id is not None:
                owner = self.account.status(status_id)
                fields["pipeline_id"] = owner["pipeline_id"] if owner else None
            lead = self.sandbox.create_lead(self.account, fields, self.user_id)
            self.sandbox._fire(self.account, [("add", lead, None)])
            return int(lead["id"])

    def move_lead(self, lead_id: int, status_id: int, pipeline_id: int | None = None) -> None:
        """Drag a lead on the kanban (142/143 in the lead's own pipeline unless another is named)."""
        self.move_leads([(lead_id, status_id, pipeline_id)])

    def move_leads(self, moves: Iterable[tuple[int, int, int | None]]) -> None:
        """Several leads moved in one action (a mass action): one webhook body with all of them."""
        with self.sandbox.lock:
            changes = []
            for lead_id, status_id, pipeline_id in moves:
                lead = self.account.leads[int(lead_id)]
                if pipeline_id is None and status_id in (WON, LOST):
                    pipeline_id = lead["pipeline_id"]
                elif pipeline_id is None:
                    owner = self.account.status(status_id)
                    if owner is None:
                        raise KeyError(f"no status {status_id}")
                    pipeline_id = owner["pipeline_id"]
                old, new = self.sandbox.apply_lead(
                    self.account, int(lead_id), {"status_id": status_id, "pipeline_id": pipeline_id}, self.user_id
                )
                changes.append(("update", new, old))
            self.sandbox._fire(self.account, changes)

    def lose_lead(self, lead_id: int, loss_reason_id: int | None) -> None:
        """Close a lead as lost from its card, picking one of the account's loss reasons in the dialog amoCRM
        shows when the account has them (``loss_reason_id`` on the lead)."""
        with self.sandbox.lock:
            lead = self.account.leads[int(lead_id)]
            if loss_reason_id is not None and loss_reason_id not in self.account.loss_reasons:
                raise KeyError(f"no loss reason {loss_reason_id}")
            old, new = self.sandbox.apply_lead(
                self.account,
                int(lead_id),
                {"status_id": LOST, "pipeline_id": lead["pipeline_id"], "loss_reason_id": loss_reason_id},
                self.user_id,
            )
            self.sandbox._fire(self.account, [("update", new, old)])

    def delete_lead(self, lead_id: int) -> None:
        """Delete a lead from its card: it is gone from the API and a `leads[delete]` webhook goes out (with this
        user as modified_user_id), like the account's own delete."""
        with self.sandbox.lock:
            lead = self.account.leads[int(lead_id)]
            lead["is_deleted"] = True
            lead["updated_at"] = int(self.sandbox.clock.now())
            lead["updated_by"] = self.user_id
            self.sandbox._event(self.account, "lead_deleted", int(lead_id), self.user_id, [], [])
            self.sandbox._fire(self.account, [("delete", dict(lead), None)])

    def set_fields(self, lead_id: int, values: Mapping[int, Any]) -> None:
        """Fill in custom fields in the lead card: {field_id: text, or {"enum_id": n}, or None to clear}."""
        with self.sandbox.lock:
            cf: dict[int, list[dict[str, Any]]] = {}
            for field_id, value in values.items():
                spec = self.account.custom_fields[int(field_id)]
                if value is None or value == "":
                    cf[int(field_id)] = []
                elif isinstance(value, Mapping):
                    enum = next(e for e in spec["enums"] if e["id"] == int(value["enum_id"]))
                    cf[int(field_id)] = [{"value": enum["value"], "enum_id": enum["id"]}]
                else:
                    cf[int(field_id)] = [{"value": str(value)}]
            old, new = self.sandbox.apply_lead(self.account, int(lead_id), {"cf": cf}, self.user_id)
            self.sandbox._fire(self.account, [("update", new, old)])

    def set_price(self, lead_id: int, price: int) -> None:
        """Change the lead's budget in the card."""
        with self.sandbox.lock:
            old, new = self.sandbox.apply_lead(self.account, int(lead_id), {"price": int(price)}, self.user_id)
            self.sandbox._fire(self.account, [("update", new, old)])

    def reassign(self, lead_id: int, user_id: int) -> None:
        """Change the responsible user."""
        with self.sandbox.lock:
            old, new = self.sandbox.apply_lead(
                self.account, int(lead_id), {"responsible_user_id": user_id}, self.user_id
            )
            self.sandbox._fire(self.account, [("update", new, old)])

    def add_task(
        self,
        lead_id: int | None,
        text: str,
        complete_till: float,
        responsible: int | None = None,
        task_type_id: int = 1,
    ) -> int:
        """Set a task in the lead card (or, with no lead, in the task list): due at `complete_till` (unix)."""
        with self.sandbox.lock:
            responsible = responsible or self.user_id
            if responsible not in self.account.users:
                raise KeyError(f"no user {responsible} in {self.account.subdomain}")
            if lead_id is not None and int(lead_id) not in self.account.leads:
                raise KeyError(f"no lead {lead_id} in {self.account.subdomain}")
            task_id = self.sandbox.next_id()
            now = int(self.sandbox.clock.now())
            self.account.tasks[task_id] = {
                "id": task_id,
                "created_by": self.user_id,
                "updated_by": self.user_id,
                "created_at": now,
                "updated_at": now,
                "responsible_user_id": responsible,
                "group_id": 0,
                "entity_id": None if lead_id is None else int(lead_id),
                "entity_type": None if lead_id is None else "leads",
                "duration": 0,
                "is_completed": False,
                "task_type_id": task_type_id,
                "text": text,
                "result": [],
                "complete_till": int(complete_till),
            }
            return task_id

    def complete_task(self, task_id: int, result: str = "Выполнено") -> None:
        """Mark a task done with a result, as in the task card."""
        with self.sandbox.lock:
            task = self.account.tasks[int(task_id)]
            task["is_completed"] = True
            task["result"] = {"text": result}
            task["updated_by"] = self.user_id
            task["updated_at"] = int(self.sandbox.clock.now())

    def make_call(
        self,
        lead_id: int,
        *,
        direction: str = "out",
        duration: int = 95,
        with_recording: bool = True,
        recording_host: str | None = None,
        link: str | None = None,
    ) -> int:
        """A call note on the lead (call_in / call_out) with a recording link: on the account's host by
        default, on a telephony provider's host (`recording_host`, e.g. RECORDING_HOST), or any `link`."""
        with self.sandbox.lock:
            note_id = self.sandbox.next_id()
            now = int(self.sandbox.clock.now())
            if link is None and with_recording:
                link = f"https://{recording_host or self.account.domain}/recordings/{note_id}.mp3"
                self.sandbox.recordings[link] = b"ID3\x04\x00\x00\x00\x00\x00\x00" + f"call {note_id} ".encode() * 64
            self.account.notes[note_id] = {
                "id": note_id,
                "entity_id": int(lead_id),
                "created_by": self.user_id,
                "updated_by": self.user_id,
                "created_at": now,
                "updated_at": now,
                "responsible_user_id": self.user_id,
                "group_id": 0,
                "note_type": "call_in" if direction == "in" else "call_out",
                "params": {
                    "uniq": secrets.token_hex(8),
                    "duration": duration,
                    "source": "telephony",
                    "link": link or "",
                    "phone": "+79991234567",
                    "call_status": 4,
                    "call_result": "",
                },
                "account_id": self.account.id,
            }
            return note_id


def requests_transport(timeout: float = 2.0, verify: bool | str = True) -> Transport:
    """Deliver over real HTTP(S); amoCRM waits at most 2 seconds."""
    return events.requests_transport(timeout=timeout, verify=verify, user_agent="amoCRM-Webhooks/3.0")


def flask_client_transport(client: Any) -> Transport:
    """Deliver into a Flask test client, timing the answer against amoCRM's 2-second budget."""

    def send(url: str, body: str) -> int:
        parts = urllib.parse.urlsplit(url)
        started = time.monotonic()
        response = client.post(
            parts.path or "/",
            query_string=parts.query,
            data=body,
            content_type="application/x-www-form-urlencoded",
            headers={"User-Agent": "amoCRM-Webhooks/3.0"},
            base_url=f"{parts.scheme}://{parts.netloc}",
        )
        if time.monotonic() - started > 2.0:
            return 0  # amoCRM drops answers slower than 2 s
        return response.status_code

    return send
