"""The sandbox: one or more emulated Bitrix24 portals plus the OAuth server, in memory and thread-safe.

Everything that changes state happens under one lock. Events are never delivered while a REST
call is being answered: they wait in the outbox until `deliver()` (or the delivery thread) sends them.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sandbox import ops
from sandbox.clock import Clock, iso, portal_zone
from sandbox.context import CallContext
from sandbox.errors import RestError
from sandbox.events import Delivery, OutgoingEvent, Transport, form_body, requests_transport
from sandbox.state import ForcedError, LeakyBucket, OfflineEvent, Portal, RobotRun, new_token, recording_link

ACCESS_TTL = 3600
REFRESH_TTL = 180 * 86400
CODE_TTL = 30


@dataclass
class AccessToken:
    """An issued access token."""

    member_id: str
    user_id: int
    expires_at: float


@dataclass
class RefreshToken:
    """An issued refresh token (single use)."""

    member_id: str
    user_id: int
    expires_at: float


@dataclass
class RestCall:
    """One executed REST method (batch commands are logged one by one too)."""

    member_id: str
    method: str
    params: dict[str, Any]
    user_id: int
    status: int
    in_batch: bool
    at: float = 0.0  # when the portal answered (the sandbox's clock)


PROXY_PAGES = {
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}


def proxy_page(status: int) -> str:
    """The HTML error page nginx in front of a Bitrix24 portal answers with (not JSON)."""
    title = f"{status} {PROXY_PAGES.get(status, 'Error')}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
        "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )


@dataclass
class ProxyFault:
    """A fault of the proxy in front of the portal, for one REST method requested over HTTP.

    kind "html": answer `status` with nginx's HTML error page; "timeout": wait `delay` seconds (longer
    than the client's read timeout, which then gives up) and answer 504 Gateway Time-out; "hold": keep
    the request waiting until `release_held()` (or `delay` seconds), then answer it normally.
    With `executed` the portal carries the call out before the answer is lost (a write that happened
    although the client saw an error)."""

    kind: str
    status: int = 502
    times: int = 1
    executed: bool = False
    delay: float = 0.0
    reached: threading.Event = field(default_factory=threading.Event)


class Sandbox:
    """Emulated Bitrix24 portals and the OAuth server."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        oauth_host: str = "oauth.bitrix.info",
        access_ttl: int = ACCESS_TTL,
        seed: int = 0,
        transport: Transport | None = None,
    ) -> None:
        self.clock = clock or Clock()
        self.oauth_host = oauth_host
        self.access_ttl = access_ttl
        self.lock = threading.RLock()
        self.portals: dict[str, Portal] = {}  # by member_id
        self.access_tokens: dict[str, AccessToken] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.auth_codes: dict[str, tuple[str, int, float]] = {}
        self.spent_refresh: dict[str, str] = {}  # used refresh token -> member_id
        self.outbox: list[OutgoingEvent] = []
        self.deliveries: list[Delivery] = []
        self.transport: Transport = transport or requests_transport()
        self.drop_rate = 0.0
        self.oauth_latency = 0.0  # seconds the OAuth server takes to answer a token request over HTTP
        self.out_of_order = False
        self.call_log: deque[RestCall] = deque(maxlen=20000)
        self._drop_next = 0
        self._event_ids = 0
        self._rng = random.Random(seed)  # noqa: S311 - simulation, not security
        self._delivery_thread: threading.Thread | None = None
        self._delivery_stop = threading.Event()
        self._deliver_lock = threading.Lock()
        self.proxy_faults: dict[tuple[str, str], list[ProxyFault]] = {}  # (member_id, method) -> faults in order
        self._released = threading.Event()

    # ---- portals ---------------------------------------------------------------------------------

    @property
    def server_endpoint(self) -> str:
        """The OAuth server's REST base, as sent in auth blocks."""
        return f"https://{self.oauth_host}/rest/"

    def add_portal(self, portal: Portal) -> Portal:
        """Register a portal."""
        with self.lock:
            self.portals[portal.member_id] = portal
        return portal

    def seed_portal(self, **kwargs: Any) -> Portal:
        """Create a realistic portal (see sandbox.seed.seed_portal) and register it."""
        from sandbox.seed import seed_portal

        kwargs.setdefault("now", self.clock.now())
        return self.add_portal(seed_portal(**kwargs))

    def portal(self, key: str | Portal) -> Portal:
        """A portal by member_id or domain."""
        if isinstance(key, Portal):
            return key
        with self.lock:
            if key in self.portals:
                return self.portals[key]
            for portal in self.portals.values():
                if portal.domain == key:
                    return portal
        raise KeyError(f"no sandbox portal {key!r}")

    def portal_by_host(self, host: str) -> Portal | None:
        """The portal served at a host name (None if none or several share it)."""
        matches = [portal for portal in self.portals.values() if portal.domain == host]
        return matches[0] if len(matches) == 1 else None

    # ---- tokens and OAuth ------------------------------------------------------------------------

    def _issue_access(self, portal: Portal, user_id: int) -> tuple[str, float]:
        token = new_token()
        expires = self.clock.now() + self.access_ttl
        self.access_tokens[token] = AccessToken(portal.member_id, user_id, expires)
        return token, expires

    def issue_tokens(self, portal: str | Portal, user_id: int | None = None) -> dict[str, Any]:
        """A fresh token pair for a user (default: the first admin), shaped like the OAuth answer."""
        with self.lock:
            portal = self.portal(portal)
            if user_id is None:
                user_id = self.admin_id(portal)
            access, expires = self._issue_access(portal, user_id)
            refresh = new_token()
            self.refresh_tokens[refresh] = RefreshToken(portal.member_id, user_id, self.clock.now() + REFRESH_TTL)
            return self._token_answer(portal, user_id, access, refresh, expires)

    def _token_answer(self, portal: Portal, user_id: int, access: str, refresh: str, expires: float) -> dict[str, Any]:
        return {
            "access_token": access,
            "expires": int(expires),
            "expires_in": self.access_ttl,
            "scope": "app",
            "domain": self.oauth_host,
            "server_endpoint": self.server_endpoint,
            "status": portal.status,
            "client_endpoint": portal.client_endpoint,
            "member_id": portal.member_id,
            "user_id": user_id,
            "refresh_token": refresh,
        }

    def admin_id(self, portal: str | Portal) -> int:
        """The first active admin of a portal."""
        portal = self.portal(portal)
        for user_id, user in sorted(portal.users.items()):
            if user.get("IS_ADMIN") and user.get("ACTIVE"):
                return user_id
        raise LookupError("the portal has no active admin")

    def expire_access_tokens(self, portal: str | Portal) -> None:
        """Make every access token of a portal expired now (refresh tokens stay valid)."""
        with self.lock:
            member_id = self.portal(portal).member_id
            now = self.clock.now()
            for token in self.access_tokens.values():
                if token.member_id == member_id:
                    token.expires_at = min(token.expires_at, now - 1)

    def revoke(self, portal: str | Portal) -> None:
        """Revoke the app's access: calls answer invalid_token, refreshes invalid_grant."""
        with self.lock:
            self.portal(portal).revoked = True

    def authorization_code(self, portal: str | Portal, user_id: int | None = None) -> str:
        """An OAuth `code` (valid 30 s), as the portal's /oauth/authorize/ would hand out."""
        with self.lock:
            portal = self.portal(portal)
            code = new_token()[:32]
            self.auth_codes[code] = (portal.member_id, user_id or self.admin_id(portal), self.clock.now() + CODE_TTL)
            return code

    def handle_oauth(self, params: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """GET /oauth/token/: authorization_code and refresh_token grants."""
        with self.lock:
            grant = str(params.get("grant_type") or "")
            client_id = str(params.get("client_id") or "")
            client_secret = str(params.get("client_secret") or "")
            if grant == "refresh_token":
                key = str(params.get("refresh_token") or "")
                if not key:
                    return 400, {"error": "invalid_request", "error_description": 'No "refresh_token" parameter found'}
                refresh = self.refresh_tokens.get(key)
                portal = self.portals.get(refresh.member_id if refresh else self.spent_refresh.get(key, ""))
                portal = portal or self._portal_by_client(client_id)
                if portal is not None:
                    portal.oauth_calls[grant] = portal.oauth_calls.get(grant, 0) + 1
                client_error = self._check_client(portal, client_id, client_secret)
                if client_error:
                    return client_error
                if refresh is None or portal is None or portal.revoked or refresh.expires_at < self.clock.now():
                    return 400, {"error": "invalid_grant", "error_description": "Invalid grant"}
                if refresh.member_id != portal.member_id:
                    return 400, {"error": "invalid_grant", "error_description": "Invalid grant"}
                del self.refresh_tokens[key]  # rotation: a refresh token works once
                self.spent_refresh[key] = portal.member_id
                return 200, self.issue_tokens(portal, refresh.user_id)
            if grant == "authorization_code":
                now = self.clock.now()
                code = str(params.get("code") or "")
                entry = self.auth_codes.pop(code, None)
                portal = self.portals.get(entry[0]) if entry else self._portal_by_client(client_id)
                if portal is not None:
                    portal.oauth_calls[grant] = portal.oauth_calls.get(grant, 0) + 1
                client_error = self._check_client(portal, client_id, client_secret)
                if client_error:
                    return client_error
                if entry is None or portal is None or portal.member_id != entry[0] or portal.revoked or entry[2] < now:
                    return 400, {"error": "invalid_grant", "error_description": "Invalid grant"}
                return 200, self.issue_tokens(portal, entry[1])
            return 400, {"error": "unsupported_grant_type", "error_description": "Unsupported grant type"}

    def _portal_by_client(self, client_id: str) -> Portal | None:
        matches = [p for p in self.portals.values() if p.client_id == client_id]
        return matches[0] if len(matches) == 1 else None

    def _check_client(
        self, portal: Portal | None, client_id: str, client_secret: str
    ) -> tuple[int, dict[str, Any]] | None:
        known = {p.client_id: p for p in self.portals.values()}
        if client_id not in known:
            return 400, {"error": "invalid_client", "error_description": "Invalid client"}
        app = portal or known[client_id]
        if app.client_id != client_id or app.client_secret != client_secret:
            return 400, {"error": "invalid_client", "error_description": "Invalid client"}
        return None

    def oauth_app_info(self, params: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """app.info on the OAuth server: who a token belongs to."""
        with self.lock:
            token = self.access_tokens.get(str(params.get("auth") or ""))
            portal = self.portals.get(token.member_id) if token else None
            if token is None or portal is None or portal.revoked:
                return 401, {"error": "invalid_token", "error_description": "The access token provided is invalid."}
            if token.expires_at < self.clock.now():
                return 401, {"error": "expired_token", "error_description": "The access token provided has expired."}
            result = {
                "client_id": portal.client_id,
                "scope": portal.scope,
                "expires": int(token.expires_at),
                "user_id": token.user_id,
                "install": {
                    "installed": portal.installed,
                    "version": portal.app_version,
                    "status": portal.status,
                    "scope": portal.scope,
                    "domain": portal.domain,
                    "uri": f"https://{portal.domain}",
                    "client_endpoint": portal.client_endpoint,
                    "member_id": portal.member_id,
                    "member_type": "PORTAL",
                },
            }
            return 200, {"result": result}

    # ---- REST ------------------------------------------------------------------------------------

    def _authenticate(self, host: str | None, params: dict[str, Any], method: str) -> CallContext:
        auth = params.pop("auth", None)
        if isinstance(auth, Mapping):
            auth = auth.get("access_token")
        if not auth:
            raise RestError(401, "NO_AUTH_FOUND", "Wrong authorization data")
        token = self.access_tokens.get(str(auth))
        portal = self.portals.get(token.member_id) if token else None
        if token is None or portal is None or portal.revoked:
            raise RestError(401, "invalid_token", "Unable to get application by token")
        by_host = self.portal_by_host(host) if host else None
        if by_host is not None and by_host is not portal:
            raise RestError(401, "invalid_token", "Unable to get application by token")
        if token.expires_at < self.clock.now():
            raise RestError(401, "expired_token", "The access token provided has expired.")
        connector = str(params.get("auth_connector") or "")
        return CallContext(self, portal, token.user_id, method, connector)

    def _time(self, start: float, finish: float) -> dict[str, Any]:
        duration = max(finish - start, 0.0)
        return {
            "start": start,
            "finish": finish,
            "duration": duration,
            "processing": duration,
            "date_start": iso(start),
            "date_finish": iso(finish),
            "operating_reset_at": int(finish) + 600,
            "operating": 0,
        }

    def handle_rest(self, host: str | None, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Answer POST /rest/<method>.json: (HTTP status, JSON body)."""
        method = method.lower().removesuffix(".json")
        started = self.clock.now()  # an answer's `time` is the portal's clock, the one that stamps events' `ts`
        params = dict(params)
        with self.lock:
            try:
                ctx = self._authenticate(host, params, method)
            except RestError as error:
                return error.status, {**error.body(), **error.extra}
            with portal_zone(ctx.portal.time_zone):
                return self._answer(ctx, method, params, started)

    def _answer(
        self, ctx: CallContext, method: str, params: dict[str, Any], started: float
    ) -> tuple[int, dict[str, Any]]:
        """The answer of one authenticated call (under the lock, dates in its portal's time zone)."""
        from sandbox import rest

        portal = ctx.portal
        try:
            if not portal.bucket.take(self.clock.now()):
                raise RestError(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
            portal.rest_calls[method] = portal.rest_calls.get(method, 0) + 1
            portal.counters["http_requests"] = portal.counters.get("http_requests", 0) + 1
            if method == "batch":
                result = rest.batch(ctx, params, self._time)
                self._log(ctx, params, 200)
                return 200, {"result": result, "time": self._time(started, self.clock.now())}
            answer = rest.dispatch(ctx, params)
        except RestError as error:
            self._log(ctx, params, error.status)
            return error.status, {**error.body(), **error.extra}
        self._log(ctx, params, 200)
        body: dict[str, Any] = {"result": answer.result}
        if answer.next is not None:
            body["next"] = answer.next
        if answer.total is not None:
            body["total"] = answer.total
        body["time"] = self._time(started, self.clock.now())
        return 200, body

    def _log(self, ctx: CallContext, params: dict[str, Any], status: int) -> None:
        self.call_log.append(
            RestCall(ctx.portal.member_id, ctx.method, params, ctx.user_id, status, ctx.in_batch, self.clock.now())
        )

    def call(
        self, portal: str | Portal, method: str, params: Mapping[str, Any] | None = None, user_id: int | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Call a REST method in-process as a user (a fresh token is issued), without HTTP."""
        tokens = self.issue_tokens(portal, user_id)
        return self.handle_rest(None, method, {**(params or {}), "auth": tokens["access_token"]})

    # ---- limits ----------------------------------------------------------------------------------

    def set_rate_limit(self, portal: str | Portal, rate: float = 2.0, burst: int = 50, enabled: bool = True) -> None:
        """Configure (or switch off) a portal's leaky bucket."""
        with self.lock:
            self.portal(portal).bucket = LeakyBucket(rate, burst, enabled)

    def force_operation_limit(
        self, portal: str | Portal, method: str, times: int = -1, reset_in: float = 600.0
    ) -> None:
        """Make a method answer 429 OPERATION_TIME_LIMIT (`times` calls, -1 until cleared with times=0).
        The answer's `time.operating_reset_at` is `reset_in` seconds after the refused call."""
        with self.lock:
            portal = self.portal(portal)
            limited = portal.operation_limited
            if times == 0:
                limited.pop(method.lower(), None)
                portal.operation_reset_in.pop(method.lower(), None)
            else:
                limited[method.lower()] = times
                portal.operation_reset_in[method.lower()] = reset_in

    def force_error(
        self, portal: str | Portal, method: str, status: int, code: str, description: str = "", times: int = 1
    ) -> None:
        """Make a method answer a documented error `{"error": code, "error_description": description}` with
        HTTP `status`, for faults the emulation has no cause for (500 INTERNAL_SERVER_ERROR, 401
        PAYMENT_REQUIRED, 503 OVERLOAD_LIMIT, ...). The next `times` calls (-1: until cleared with
        times=0) fail, also inside a batch; errors forced one after another are answered in order."""
        with self.lock:
            forced = self.portal(portal).forced_errors
            if times == 0:
                forced.pop(method.lower(), None)
                return
            forced.setdefault(method.lower(), []).append(ForcedError(status, code, description, times))

    def force_proxy_fault(
        self,
        portal: str | Portal,
        method: str,
        kind: str = "html",
        *,
        status: int = 502,
        times: int = 1,
        executed: bool = False,
        delay: float = 0.0,
    ) -> ProxyFault:
        """Make the next `times` HTTP requests of `method` (e.g. "batch", "crm.deal.get") meet a proxy
        fault (see ProxyFault). Only requests over HTTP (served by `create_sandbox_app`) are affected."""
        if kind not in ("html", "timeout", "hold"):
            raise ValueError(f"unknown proxy fault {kind!r}")
        fault = ProxyFault(kind, 504 if kind == "timeout" else status, times, executed, delay)
        with self.lock:
            self._released.clear()
            key = (self.portal(portal).member_id, method.lower())
            self.proxy_faults.setdefault(key, []).append(fault)
        return fault

    def hold(self, portal: str | Portal, method: str, times: int = 1, timeout: float = 60.0) -> ProxyFault:
        """Keep the next `times` HTTP requests of `method` waiting until `release_held()`; the returned
        fault's `reached` event is set once a request is being held."""
        return self.force_proxy_fault(portal, method, "hold", times=times, delay=timeout)

    def release_held(self) -> None:
        """Let every held request through (and drop the holds not reached yet)."""
        with self.lock:
            for key, faults in list(self.proxy_faults.items()):
                self.proxy_faults[key] = [fault for fault in faults if fault.kind != "hold"]
            self._released.set()

    def take_proxy_fault(self, host: str | None, method: str) -> ProxyFault | None:
        """The proxy fault the next request of `method` to `host` meets, if any (used by the HTTP server)."""
        with self.lock:
            portal = self.portal_by_host(host) if host else None
            if portal is None:
                return None
            key = (portal.member_id, method.lower().removesuffix(".json"))
            faults = self.proxy_faults.get(key)
            if not faults:
                return None
            fault = faults[0]
            if fault.times > 0:
                fault.times -= 1
                if fault.times == 0:
                    faults.pop(0)
            return fault

    def wait_released(self, timeout: float) -> None:
        """Block a held request until `release_held()` or `timeout`."""
        self._released.wait(timeout)

    # ---- events ----------------------------------------------------------------------------------

    def _auth_block(self, portal: Portal, user_id: int | None, refresh: bool = False) -> dict[str, Any]:
        if user_id is None:
            return {
                "domain": portal.domain,
                "client_endpoint": portal.client_endpoint,
                "server_endpoint": self.server_endpoint,
                "member_id": portal.member_id,
                "application_token": portal.application_token,
            }
        if refresh:
            tokens = self.issue_tokens(portal, user_id)
            access, expires, refresh_token = tokens["access_token"], tokens["expires"], tokens["refresh_token"]
        else:
            access, expires_at = self._issue_access(portal, user_id)
            expires, refresh_token = int(expires_at), None
        block: dict[str, Any] = {
            "access_token": access,
            "expires": expires,
            "expires_in": self.access_ttl,
            "scope": portal.scope,
            "domain": portal.domain,
            "server_endpoint": self.server_endpoint,
            "status": portal.status,
            "client_endpoint": portal.client_endpoint,
            "member_id": portal.member_id,
            "user_id": user_id,
        }
        if refresh_token:
            block["refresh_token"] = refresh_token
        block["application_token"] = portal.application_token
        return block

    def _enqueue(self, portal: Portal, url: str, payload: dict[str, Any], event: str) -> None:
        self._event_ids += 1
        self.outbox.append(
            OutgoingEvent(self._event_ids, portal.member_id, event, url, form_body(payload), self.clock.now())
        )

    def emit(
        self,
        portal: Portal,
        event: str,
        data: dict[str, Any],
        object_key: str,
        author: int | None,
        connector: str = "",
    ) -> None:
        """Queue an event for every online binding and record it for offline ones (installed apps only)."""
        if not portal.installed or portal.revoked:
            return
        now = self.clock.now()
        for binding in list(portal.bindings.values()):
            if binding.event != event:
                continue
            if binding.offline:
                if connector and binding.auth_connector == connector:
                    continue
                self._offline(portal, event, data, object_key, connector, now)
                continue
            user = None if author is None else (binding.auth_type or author)
            payload = {
                "event": event,
                "event_handler_id": binding.id,
                "data": data,
                "ts": int(now),
                "auth": self._auth_block(portal, user),
            }
            self._enqueue(portal, binding.handler, payload, event)

    def _offline(
        self, portal: Portal, event: str, data: dict[str, Any], object_key: str, connector: str, now: float
    ) -> None:
        key = f"{event}:{object_key}"
        for record in list(portal.offline_events.values()):
            if record.object_key == key and record.process_id is None:
                del portal.offline_events[record.id]
        record_id = portal.next_id("offline_event")
        portal.offline_events[record_id] = OfflineEvent(
            id=record_id,
            timestamp=now,
            event_name=event,
            data=data,
            additional={"user_id": None, "auth_connector": connector} if connector else {},
            message_id=new_token()[:32],
            object_key=key,
        )
        for binding in list(portal.bindings.values()):
            if binding.event == "ONOFFLINEEVENT" and not binding.offline:
                if now - portal.last_offline_ping < binding.min_timeout:
                    continue
                portal.last_offline_ping = now
                payload = {
                    "event": "ONOFFLINEEVENT",
                    "event_handler_id": binding.id,
                    "data": {},
                    "ts": int(now),
                    "auth": self._auth_block(portal, binding.auth_type or self.admin_id(portal), refresh=True),
                }
                self._enqueue(portal, binding.handler, payload, "ONOFFLINEEVENT")

    def drop_next(self, count: int = 1) -> None:
        """Lose the next `count` outgoing events (Bitrix24 never retries)."""
        with self.lock:
            self._drop_next += count

    def pending_events(self) -> list[OutgoingEvent]:
        """What is waiting in the outbox."""
        with self.lock:
            return list(self.outbox)

    def deliver(self, transport: Transport | None = None) -> list[Delivery]:
        """Send everything in the outbox now, in this thread; returns what happened to each event."""
        with self._deliver_lock:
            with self.lock:
                batch, self.outbox = self.outbox, []
                if self.out_of_order:
                    self._rng.shuffle(batch)
                plan: list[tuple[OutgoingEvent, bool]] = []
                for item in batch:
                    dropped = False
                    if self._drop_next > 0:
                        self._drop_next -= 1
                        dropped = True
                    elif self.drop_rate and self._rng.random() < self.drop_rate:
                        dropped = True
                    plan.append((item, dropped))
            send = transport or self.transport
            results = []
            for item, dropped in plan:
                if dropped:
                    results.append(Delivery(item, None, "dropped"))
                    continue
                try:
                    results.append(Delivery(item, send(item.url, item.body)))
                except Exception as error:  # noqa: BLE001 - a failed delivery is logged and dropped, like Bitrix24
                    results.append(Delivery(item, 0, repr(error)))
            with self.lock:
                self.deliveries.extend(results)
            return results

    def start_delivery_thread(self, interval: float = 0.05, transport: Transport | None = None) -> None:
        """Deliver events in the background (demo / out-of-process mode)."""
        if self._delivery_thread is not None:
            return
        self._delivery_stop.clear()

        def loop() -> None:
            while not self._delivery_stop.wait(interval):
                if self.outbox:
                    self.deliver(transport)

        self._delivery_thread = threading.Thread(target=loop, name="sandbox-delivery", daemon=True)
        self._delivery_thread.start()

    def stop_delivery_thread(self) -> None:
        """Stop the background delivery (pending events stay in the outbox)."""
        if self._delivery_thread is None:
            return
        self._delivery_stop.set()
        self._delivery_thread.join(timeout=5)
        self._delivery_thread = None

    # ---- install / uninstall ---------------------------------------------------------------------

    def install_app(
        self, portal: str | Portal, *, install_url: str | None = None, user_id: int | None = None
    ) -> dict[str, Any]:
        """Install (or reinstall) the app: marks it installed and queues ONAPPINSTALL to `install_url`
        and to any ONAPPINSTALL binding. Returns the auth block that was sent."""
        with self.lock:
            portal = self.portal(portal)
            portal.revoked = False
            portal.installed = True
            user_id = user_id or self.admin_id(portal)
            targets = [(url, 0) for url in [install_url] if url]
            targets += [(b.handler, b.id) for b in portal.bindings.values() if b.event == "ONAPPINSTALL"]
            auth = self._auth_block(portal, user_id, refresh=True)
            now = int(self.clock.now())
            for url, handler_id in targets:
                payload = {
                    "event": "ONAPPINSTALL",
                    "event_handler_id": handler_id,
                    "data": {"VERSION": portal.app_version, "ACTIVE": "Y", "INSTALLED": "Y", "LANGUAGE_ID": "ru"},
                    "ts": now,
                    "auth": auth,
                }
                self._enqueue(portal, url, payload, "ONAPPINSTALL")
            return auth

    def uninstall_app(self, portal: str | Portal, *, clean: bool = True) -> None:
        """Uninstall: ONAPPUNINSTALL (no tokens) to its bindings, then bindings, placements and robots go
        and every token stops working."""
        with self.lock:
            portal = self.portal(portal)
            now = int(self.clock.now())
            for binding in list(portal.bindings.values()):
                if binding.event == "ONAPPUNINSTALL" and not binding.offline:
                    payload = {
                        "event": "ONAPPUNINSTALL",
                        "event_handler_id": binding.id,
                        "data": {"LANGUAGE_ID": "ru", "CLEAN": 1 if clean else 0},
                        "ts": now,
                        "auth": self._auth_block(portal, None),
                    }
                    self._enqueue(portal, binding.handler, payload, "ONAPPUNINSTALL")
            portal.bindings.clear()
            portal.placements.clear()
            portal.robots.clear()
            portal.offline_events.clear()
            portal.installed = False
            portal.revoked = True

    # ---- acting as people ------------------------------------------------------------------------

    def act(self, portal: str | Portal, user_id: int) -> Actor:
        """Do things in the portal's UI as a user; events carry that user's token."""
        portal = self.portal(portal)
        if user_id not in portal.users:
            raise KeyError(f"no user {user_id} in {portal.domain}")
        return Actor(self, portal, user_id)

    def act_as_automation(self, portal: str | Portal, user_id: int | None = None) -> Actor:
        """Changes made by a robot or workflow: events carry no tokens. MODIFY_BY_ID is `user_id`
        (default: the deal's responsible)."""
        return Actor(self, self.portal(portal), user_id, automation=True)

    def run_robot(
        self, portal: str | Portal, code: str, deal_id: int, properties: Mapping[str, Any] | None = None
    ) -> str:
        """Automation reaches a robot of the app on a deal: queues the POST to its HANDLER and returns
        the event_token the app must answer with bizproc.event.send."""
        with self.lock:
            portal = self.portal(portal)
            robot = portal.robots.get(code)
            if robot is None:
                raise KeyError(f"no robot {code!r}")
            ops.get_deal(portal, deal_id)
            workflow_id = new_token()[:24]
            event_token = f"{workflow_id}|A{new_token()[:10]}|{new_token()[:16]}"
            props = dict(properties or {})
            portal.robot_runs[event_token] = RobotRun(event_token, code, deal_id, props)
            user_id = robot.auth_user_id or self.admin_id(portal)
            payload = {
                "workflow_id": workflow_id,
                "code": code,
                "document_id": ["crm", "CCrmDocumentDeal", f"DEAL_{deal_id}"],
                "document_type": ["crm", "CCrmDocumentDeal", "DEAL"],
                "event_token": event_token,
                "properties": props,
                "use_subscription": robot.use_subscription,
                "timeout_duration": 660,
                "ts": int(self.clock.now()),
                "auth": self._auth_block(portal, user_id, refresh=True),
            }
            self._enqueue(portal, robot.handler, payload, f"robot:{code}")
            return event_token

    # ---- inspection ------------------------------------------------------------------------------

    def rest_calls(self, portal: str | Portal, method: str | None = None) -> int:
        """How many times a method ran (batch commands included); no method: HTTP requests served."""
        with self.lock:
            portal = self.portal(portal)
            if method is None:
                return portal.counters.get("http_requests", 0)
            return portal.rest_calls.get(method.lower(), 0)

    def oauth_calls(self, portal: str | Portal, grant_type: str | None = None) -> int:
        """How many token requests reached the OAuth server for this portal."""
        with self.lock:
            calls = self.portal(portal).oauth_calls
            return sum(calls.values()) if grant_type is None else calls.get(grant_type, 0)

    def notifications(self, portal: str | Portal, user_id: int | None = None) -> list[Any]:
        """im.notify.* calls received, optionally for one user."""
        with self.lock:
            items = list(self.portal(portal).notifications)
        return [n for n in items if user_id is None or n.user_id == user_id]

    def deal(self, portal: str | Portal, deal_id: int) -> dict[str, Any]:
        """A deal as crm.deal.get would return it (dates with the portal's offset)."""
        with self.lock:
            portal = self.portal(portal)
            with portal_zone(portal.time_zone):
                return portal.deal_wire(ops.get_deal(portal, deal_id))

    def stage_of(self, portal: str | Portal, deal_id: int) -> str:
        """A deal's current STAGE_ID."""
        with self.lock:
            return ops.get_deal(self.portal(portal), deal_id).stage_id

    def event_bindings(self, portal: str | Portal) -> list[Any]:
        """event.bind registrations."""
        with self.lock:
            return list(self.portal(portal).bindings.values())

    def placements(self, portal: str | Portal) -> list[Any]:
        """placement.bind registrations."""
        with self.lock:
            return list(self.portal(portal).placements.values())

    def robots(self, portal: str | Portal) -> dict[str, Any]:
        """bizproc.robot.add registrations by CODE."""
        with self.lock:
            return dict(self.portal(portal).robots)

    def robot_result(self, portal: str | Portal, event_token: str) -> dict[str, Any] | None:
        """What the app sent back with bizproc.event.send for a robot run (None: nothing yet)."""
        with self.lock:
            run = self.portal(portal).robot_runs.get(event_token)
            return None if run is None else run.return_values

    def calls(self, portal: str | Portal | None = None, method: str | None = None) -> list[RestCall]:
        """The REST call log, optionally for one portal and method."""
        with self.lock:
            member_id = None if portal is None else self.portal(portal).member_id
            return [
                c
                for c in self.call_log
                if (member_id is None or c.member_id == member_id) and (method is None or c.method == method.lower())
            ]

    def recording_url(self, portal: str | Portal, file_id: int, activity_id: int | str = 0) -> str:
        """Where a recording file is served: an activity file's link, shaped as Bitrix24 prints it."""
        return recording_link(self.portal(portal).domain, file_id, activity_id)


class Actor:
    """A person (or automation) clicking in the portal's UI."""

    def __init__(self, sandbox: Sandbox, portal: Portal, user_id: int | None, automation: bool = False) -> None:
        self.sandbox = sandbox
        self.portal = portal
        self.user_id = user_id
        self.automation = automation

    @contextmanager
    def _acting(self) -> Iterator[None]:
        """Under the sandbox's lock, dates typed and shown in the portal's own zone, as its UI does."""
        with self.sandbox.lock, portal_zone(self.portal.time_zone):
            yield

    def _who(self, deal_id: int | None = None) -> tuple[int | None, int]:
        if not self.automation:
            assert self.user_id is not None
            return self.user_id, self.user_id
        if self.user_id is not None:
            return None, self.user_id
        if deal_id is not None and int(deal_id) in self.portal.deals:
            return None, int(self.portal.deals[int(deal_id)].assigned_by_id or self.sandbox.admin_id(self.portal))
        return None, self.sandbox.admin_id(self.portal)

    def create_deal(self, **fields: Any) -> int:
        """Create a deal (fields by Bitrix24 name, e.g. TITLE=..., STAGE_ID=..., CATEGORY_ID=...)."""
        with self._acting():
            author, actor = self._who()
            return ops.create_deal(self.sandbox, self.portal, fields, author, actor)

    def update_deal(self, deal_id: int, fields: Mapping[str, Any]) -> None:
        """Edit a deal card (a STAGE_ID of another funnel moves it there)."""
        with self._acting():
            author, actor = self._who(deal_id)
            upper = {str(k).upper(): v for k, v in fields.items()}
            stage = upper.get("STAGE_ID")
            category = None if stage is None else self.portal.stage_category(str(stage))
            row = ops.get_deal(self.portal, deal_id)
            if category is not None and category != row.category_id:
                rest = {k: v for k, v in upper.items() if k not in {"STAGE_ID", "CATEGORY_ID"}}
                ops.move_deal_to_category(self.sandbox, self.portal, deal_id, category, str(stage), rest, author, actor)
            else:
                ops.update_deal(self.sandbox, self.portal, deal_id, upper, author, actor)

    def move_deal(self, deal_id: int, stage_id: str) -> None:
        """Drag a deal to a stage on the kanban (another funnel's stage: a funnel change)."""
        with self._acting():
            author, actor = self._who(deal_id)
            ops.move_deal(self.sandbox, self.portal, deal_id, stage_id, author, actor)

    def delete_deal(self, deal_id: int) -> None:
        """Delete a deal."""
        with self._acting():
            author, _actor = self._who(deal_id)
            ops.delete_deal(self.sandbox, self.portal, deal_id, author)

    def create_task(self, **fields: Any) -> int:
        """Create a task (UPPERCASE fields like tasks.task.add)."""
        with self._acting():
            author, actor = self._who()
            return int(ops.create_task(self.sandbox, self.portal, fields, author, actor)["ID"])

    def update_task(self, task_id: int, **fields: Any) -> None:
        """Edit a task (STATUS=5 completes it)."""
        with self._acting():
            author, _actor = self._who()
            ops.update_task(self.sandbox, self.portal, task_id, fields, author)

    def complete_task(self, task_id: int) -> None:
        """Mark a task completed."""
        self.update_task(task_id, STATUS=5)

    def make_call(self, deal_id: int, **options: Any) -> dict[str, Any]:
        """Make a phone call on a deal (activity, statistics row, recording)."""
        with self._acting():
            _author, actor = self._who(deal_id)
            return ops.add_call(self.sandbox, self.portal, deal_id, actor, **options)
