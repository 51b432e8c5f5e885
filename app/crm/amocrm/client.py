"""amoCRM (and Kommo): the API v4 client on `requests` and the CrmClient adapter.

`AmoRest` owns everything about talking to one account (reference/amocrm.md):

* every request first takes a slot from the shared limiter (app.crm.ratelimit, 7 req/s per account);
* the account's own host (the OAuth ``referer``) is the base, checked again right before every call and
  every token refresh (`AmoRest._verified_host`: an allowed amoCRM host, `app.crm.hosts`, that is the
  origin of the REST base stored at install), so a tampered row sends nothing; bodies are JSON, answers
  ``application/hal+json`` or ``application/problem+json``; an empty list is HTTP 204 with no body;
* 429 is retried a bounded number of times with exponential back-off and jitter (``Retry-After``
  wins); a 403 *block* (an HTML page, not a JSON problem) pauses every call to the account for
  AMO_BLOCK_PAUSE_SECONDS through a Redis key and is reported on the portal row, never hammered;
* tokens: refresh tokens are single-use and rotate. A refresh runs under a Redis lock shared by all
  processes, re-reads the portal row in a fresh session (another worker may have refreshed while we
  waited), and stores the new pair in the same transaction as the read. A refresh token that amoCRM
  reports revoked flags the account ``needs_reinstall`` and raises `PortalNeedsReinstall`; later
  calls fail without network. A network error keeps the old pair (amoCRM honours it until the new
  pair is used), so a retry is safe.

The adapter decides two things worth knowing:

* Who moved a lead: the re-read lead's ``updated_by`` (0, a robot or the system, becomes
  ``AUTOMATION``). That keeps the guard at two calls per decision (read, write); the events API is
  used for the stage history (`stage_before`).
* Missed webhooks (`drain_deal_changes`): the events API, type ``lead_status_changed``, from a
  watermark kept in the portal settings. Status changes are the only thing the guard reacts to, so
  this reads one row per move instead of every lead touched since the last sweep (a lead whose
  fields were edited a thousand times costs nothing), and amoCRM keeps these events even when it
  drops or coalesces the hooks (reference/amocrm.md pitfall 5).
"""

from __future__ import annotations

import ipaddress
import logging
import random
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import qs_codec
import requests
import sqlalchemy as sa
from flask import Flask, current_app
from redis.exceptions import LockError
from redis.exceptions import RedisError as _RedisError
from requests.adapters import HTTPAdapter
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from app.core.db import db
from app.core.models import Portal
from app.core.queue import get_redis
from app.crm.errors import (
    AmoBlocked,
    AmoError,
    AmoForbidden,
    AmoNotFound,
    AmoPaymentRequired,
    AmoThrottled,
    AmoTokenRevoked,
    AmoUnauthorized,
    AmoValidationError,
    CrmError,
    CrmUnavailable,
    PortalNeedsReinstall,
)
from app.crm.hosts import ForeignHost, amo_account_host, origin_of, require_amo_host, require_same_origin
from app.crm.port import (
    AUTOMATION,
    Call,
    Deal,
    DealChange,
    Department,
    NewTask,
    NewTodo,
    Notice,
    Pipeline,
    Recording,
    Source,
    Stage,
    StageSemantics,
    Task,
    User,
)
from app.crm.ratelimit import Bucket, amo_bucket, amo_key, limiter_for

log = logging.getLogger(__name__)

WON = "142"
LOST = "143"
PAGE_LIMIT = 250
EVENTS_LIMIT = 100
BATCH_IDS = 250
NEEDS_REINSTALL = "needs_reinstall"
REFRESH_LOCK_KEY = "rc:lock:amo-refresh:{portal_id}"
BLOCK_KEY = "rc:amo:blocked:{portal_id}"
REFRESH_MARGIN = timedelta(minutes=5)
EVENTS_WATERMARK = "amo_events_since"
TASK_TYPE_CALL = 1
NOTICE_TASK_HOURS = 4
UTM_SOURCE = "UTM_SOURCE"  # the code of amoCRM's built-in tracking_data field "utm_source"
SOURCE_MAX_LENGTH = 64  # what our tables keep of a source id
SOURCE_SCAN_DAYS = 180
SOURCE_SCAN_PAGES = 8
FOREIGN_URL = "FOREIGN_URL"
RECORDING_REDIRECTS = 3
RECORDING_TYPES = ("application/octet-stream",)  # besides audio/*: the opaque binary providers serve files as
# The only paths fetched with our token on the account's own host: where recordings are kept (never /api/).
OWN_RECORDING_PATHS = ("/recordings/",)
NOTICE_BATCH = 50  # tasks per POST: amoCRM takes up to 250, its SDK advises at most 50
STATUS_INCOMING = 1  # status type of "Incoming leads" (Неразобранное)
STATUS_FILTER_CHUNK = 40  # (pipeline, status) pairs per lead list request: keeps the URL near 4.5 KB
TASK_TITLE_LENGTH = 250


# ---------------------------------------------------------------- wire helpers


def _json_or_none(response: requests.Response) -> Any:
    """The decoded body, or None when it is empty or not JSON (an HTML 403 page, a 204)."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def error_from_response(response: requests.Response, *, token_request: bool = False) -> AmoError:
    """The typed error for a failed answer (problem+json, the OAuth problem shape, or no JSON at all)."""
    status = response.status_code
    body = _json_or_none(response)
    problem = body if isinstance(body, dict) else {}
    detail = str(problem.get("detail") or problem.get("hint") or problem.get("title") or "").strip()
    if status == 400 and isinstance(problem.get("validation-errors"), list):
        errors = [
            {"code": str(e.get("code", "")), "path": str(e.get("path", "")), "detail": str(e.get("detail", ""))}
            for block in problem["validation-errors"]
            if isinstance(block, dict)
            for e in block.get("errors") or []
            if isinstance(e, dict)
        ]
        summary = "; ".join(f"{e['path']}: {e['code']}" for e in errors) or detail
        return AmoValidationError(summary, errors=errors, http_status=status)
    if token_request and status in (400, 401):
        return AmoTokenRevoked(detail or "the token was refused", http_status=status)
    if status == 401:
        return AmoUnauthorized(detail, http_status=status)
    if status == 402:
        return AmoPaymentRequired(detail, http_status=status)
    if status == 403:
        if body is None:
            return AmoBlocked("amoCRM answered 403 with a non-JSON page (account or IP blocked)", http_status=status)
        return AmoForbidden(detail, http_status=status)
    if status == 404:
        return AmoNotFound(detail or "not found", http_status=status)
    if status == 429:
        retry_after = response.headers.get("Retry-After")
        error = AmoThrottled(detail or "too many requests", http_status=status)
        if retry_after and retry_after.strip().isdigit():
            error.retry_after = float(retry_after)
        return error
    if status >= 500:
        return CrmUnavailable(detail or "amoCRM server error", http_status=status)  # type: ignore[return-value]
    return AmoError(detail or f"HTTP {status}", http_status=status)


def account_host(raw: str, app: Flask | None = None) -> str | None:
    """The amoCRM account host `raw` names, or None when our credentials may not go there
    (`app.crm.hosts.amo_account_host` with AMO_HOST_SUFFIXES and AMO_ALLOW_HOST_PORT)."""
    config = (app or current_app).config
    return amo_account_host(raw, config["AMO_HOST_SUFFIXES"], allow_port=bool(config.get("AMO_ALLOW_HOST_PORT")))


def checked_host(raw: str, app: Flask | None = None) -> str:
    """`account_host`, right before a call: ForeignHost (nothing is sent) when `raw` does not pass."""
    config = (app or current_app).config
    return require_amo_host(raw, config["AMO_HOST_SUFFIXES"], allow_port=bool(config.get("AMO_ALLOW_HOST_PORT")))


def oauth_token_request(host: str, payload: Mapping[str, Any], app: Flask | None = None) -> dict[str, Any]:
    """POST https://{host}/oauth2/access_token (JSON); the answer, or a typed error."""
    config = (app or current_app).config
    host = checked_host(host, app)  # the client secret goes nowhere else
    body = {
        "client_id": config["AMO_CLIENT_ID"],
        "client_secret": config["AMO_CLIENT_SECRET"],
        "redirect_uri": config["AMO_REDIRECT_URI"],
        **payload,
    }
    try:
        response = requests.post(f"https://{host}/oauth2/access_token", json=body, timeout=(10, 30))
    except requests.RequestException as error:
        raise CrmUnavailable(f"amoCRM unreachable: {type(error).__name__}") from error
    if response.status_code >= 400:
        if response.status_code >= 500:
            raise CrmUnavailable("amoCRM token endpoint failed", http_status=response.status_code)
        raise error_from_response(response, token_request=True)
    answer = _json_or_none(response)
    if not isinstance(answer, dict) or not answer.get("access_token") or not answer.get("refresh_token"):
        raise CrmUnavailable("amoCRM answered the token request without tokens", http_status=response.status_code)
    return answer


def store_token_answer(portal: Portal, answer: Mapping[str, Any]) -> None:
    """Put a token answer on the portal row (the caller commits, in the transaction that read the row)."""
    portal.access_token = str(answer["access_token"])
    portal.refresh_token = str(answer["refresh_token"])
    portal.token_expires_at = datetime.now(UTC) + timedelta(seconds=int(answer.get("expires_in") or 86400))


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _ts(value: Any) -> datetime | None:
    number = _int(value)
    return datetime.fromtimestamp(number, UTC) if number else None


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def semantics_of(status_id: str) -> StageSemantics:
    """142 is won, 143 lost, everything else in progress."""
    if status_id == WON:
        return "success"
    if status_id == LOST:
        return "failure"
    return "process"


def resolve_addresses(host: str) -> set[str]:
    """The addresses `host` resolves to for HTTPS (empty when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, 443, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return set()
    return {str(info[4][0]).split("%", 1)[0] for info in infos}


def recording_type(content_type: str) -> bool:
    """Whether a recording answer's media type (lower case, no parameters) may be streamed back."""
    return content_type.startswith("audio/") or content_type in RECORDING_TYPES


def own_recording_path(path: str) -> bool:
    """Whether `path` on the account's own host may be fetched with our token: under OWN_RECORDING_PATHS,
    with no dot segment or backslash, encoded or not, that a server could resolve to another path."""
    plain = unquote(path)
    return plain.startswith(OWN_RECORDING_PATHS) and ".." not in plain and "\\" not in plain and "%" not in plain


class PinnedAdapter(HTTPAdapter):
    """A transport that connects to one checked address for one host name.

    The URL keeps the host name; only the TCP connection goes to `address` (requests' public
    `build_connection_pool_key_attributes` hook hands urllib3 the address as the pool's host). TLS still
    sends the host name as SNI and verifies the certificate against it (urllib3's ``server_hostname``),
    and the ``Host`` header names it. A request for any other host name is refused before connecting.
    """

    def __init__(self, hostname: str, address: str) -> None:
        super().__init__(max_retries=0)
        self.hostname = hostname
        self.address = address

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: bool | str, cert: str | tuple[str, str] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if host_params.get("scheme") != "https" or str(host_params.get("host") or "").lower() != self.hostname:
            raise ForeignHost(f"a connection pinned for {self.hostname} is never used for another host")
        host_params["host"] = self.address
        pool_kwargs["server_hostname"] = self.hostname
        return host_params, pool_kwargs

    def add_headers(self, request: requests.PreparedRequest, **kwargs: Any) -> None:
        port = urlsplit(request.url or "").port
        request.headers["Host"] = self.hostname if port in (None, 443) else f"{self.hostname}:{port}"


def fetch_recording(
    url: str, headers: Mapping[str, str], pinned: str | None, *, timeout: tuple[float, float]
) -> requests.Response:
    """One GET of a recording hop, streamed, no redirects followed; through `PinnedAdapter` when `pinned`
    names the checked address of the URL's host (a foreign host), plainly for the account's own host."""
    if pinned is None:
        return requests.get(url, headers=dict(headers), stream=True, allow_redirects=False, timeout=timeout)
    session = requests.Session()
    session.trust_env = False  # no proxy from the environment: the connection goes to the checked address
    session.mount("https://", PinnedAdapter((urlsplit(url).hostname or "").lower(), pinned))
    try:
        response = session.get(url, headers=dict(headers), stream=True, allow_redirects=False, timeout=timeout)
    except BaseException:
        session.close()
        raise
    close_response = response.close

    def close() -> None:
        close_response()
        session.close()

    response.close = close  # type: ignore[method-assign]
    return response


def _hostname(host: str) -> str:
    return (urlsplit(f"https://{host}").hostname or "").lower()


@dataclass
class _AccountAuth:
    access_token: str
    host: str
    status: str
    expires_at: datetime | None
    rest_base: str = ""


# ---------------------------------------------------------------- REST client


class AmoRest:
    """Low-level amoCRM API v4 client for one account (by our portal id)."""

    def __init__(self, portal_id: int, *, app: Flask | None = None) -> None:
        self.portal_id = portal_id
        self.app: Flask = app or current_app._get_current_object()  # type: ignore[attr-defined]
        config = self.app.config
        self.timeout = float(config["AMO_HTTP_TIMEOUT"])
        self.retry_attempts = max(1, int(config["AMO_RETRY_ATTEMPTS"]))
        self.retry_base_delay = float(config["AMO_RETRY_BASE_DELAY"])
        self.retry_max_delay = float(config["AMO_RETRY_MAX_DELAY"])
        self.block_pause = int(config["AMO_BLOCK_PAUSE_SECONDS"])
        self.lock_seconds = float(config.get("B24_REFRESH_LOCK_SECONDS", 30.0))
        self._auth: _AccountAuth | None = None
        self._bucket: Bucket | None = None
        self.requests_sent = 0

    # ---- account state, through short sessions of our own

    def _session(self) -> Session:
        return Session(db.engine, expire_on_commit=False)

    def _load(self) -> _AccountAuth:
        with self._session() as session:
            portal = session.get(Portal, self.portal_id)
            if portal is None:
                raise CrmError(f"portal {self.portal_id} does not exist")
            self._bucket = amo_bucket(portal.settings, self.app)
            return self._auth_from(portal)

    @staticmethod
    def _auth_from(portal: Portal) -> _AccountAuth:
        if portal.crm != Portal.AMOCRM:
            raise CrmError(f"portal {portal.id} is not an amoCRM account")
        if not portal.domain:
            raise CrmError(f"portal {portal.id} has no API host")
        return _AccountAuth(
            portal.access_token or "", portal.domain, portal.status, portal.token_expires_at, portal.rest_base or ""
        )

    def _current(self) -> _AccountAuth:
        if self._auth is None:
            self._auth = self._load()
        if self._auth.status == NEEDS_REINSTALL:
            raise PortalNeedsReinstall(f"amoCRM account of portal {self.portal_id} must be authorised again")
        return self._auth

    @property
    def host(self) -> str:
        """The account's API host."""
        return self._current().host

    def _flag_reinstall(self, reason: CrmError) -> PortalNeedsReinstall:
        detail = (
            f"amoCRM refused the integration's tokens ({reason.code}: {reason.description}); "
            "an administrator must open the integration in amoCRM and authorise it again."
        )
        with self._session() as session, session.begin():
            session.execute(
                sa.update(Portal)
                .where(Portal.id == self.portal_id)
                .values(status=NEEDS_REINSTALL, status_detail=detail)
            )
        if self._auth is not None:
            self._auth.status = NEEDS_REINSTALL
        log.warning("amocrm account needs reauthorisation", extra={"portal_id": self.portal_id, "code": reason.code})
        error = PortalNeedsReinstall(detail)
        error.__cause__ = reason
        return error

    def _verified_host(self, host: str, rest_base: str) -> str:
        """The account host, checked right before our token or secret goes there: an allowed amoCRM host
        (`checked_host`) that is also the origin of the REST base stored at install; else ForeignHost."""
        checked = checked_host(host, self.app)
        require_same_origin(f"https://{checked}/", rest_base, what="amoCRM tokens")
        return checked

    # ---- token refresh

    def _expiring(self, expires_at: datetime | None) -> bool:
        return expires_at is not None and expires_at - REFRESH_MARGIN <= datetime.now(UTC)

    def refresh(self, failed_token: str) -> None:
        """Replace `failed_token` (expired or refused): exactly one refresh across every process."""
        lock = get_redis(self.app).lock(
            REFRESH_LOCK_KEY.format(portal_id=self.portal_id),
            timeout=self.lock_seconds,
            blocking_timeout=self.lock_seconds + 5,
        )
        try:
            acquired = lock.acquire()
        except _RedisError as error:
            raise CrmUnavailable(f"token refresh lock unavailable: {error}") from error
        if not acquired:
            raise CrmUnavailable(f"token refresh of portal {self.portal_id} is stuck in another process")
        try:
            refused: CrmError | None = None
            with self._session() as session, session.begin():
                portal = session.scalars(
                    sa.select(Portal).where(Portal.id == self.portal_id).with_for_update()
                ).one_or_none()
                if portal is None:
                    raise CrmError(f"portal {self.portal_id} does not exist")
                if portal.status == NEEDS_REINSTALL:
                    self._auth = self._auth_from(portal)
                    raise PortalNeedsReinstall(f"amoCRM account of portal {self.portal_id} must be authorised again")
                if portal.access_token and portal.access_token != failed_token:
                    if not self._expiring(portal.token_expires_at):
                        # Another worker refreshed while we waited for the lock.
                        self._auth = self._auth_from(portal)
                        return
                if not portal.refresh_token:
                    refused = AmoTokenRevoked("no refresh token stored")
                else:
                    # The refresh token and our client secret go only to the verified account host.
                    host = self._verified_host(portal.domain, portal.rest_base or "")
                    try:
                        answer = oauth_token_request(
                            host,
                            {"grant_type": "refresh_token", "refresh_token": portal.refresh_token},
                            self.app,
                        )
                    except AmoTokenRevoked as error:
                        refused = error
                    else:
                        store_token_answer(portal, answer)
                        self._auth = self._auth_from(portal)
            if refused is not None:
                raise self._flag_reinstall(refused)
            log.info("amocrm token refreshed", extra={"portal_id": self.portal_id})
        finally:
            try:
                lock.release()
            except LockError:
                log.warning("amocrm refresh lock expired before release", extra={"portal_id": self.portal_id})

    # ---- 403 blocks

    def _blocked(self) -> bool:
        try:
            return bool(get_redis(self.app).exists(BLOCK_KEY.format(portal_id=self.portal_id)))
        except _RedisError:
            return False

    def _record_block(self, error: AmoBlocked) -> None:
        get_redis(self.app).set(BLOCK_KEY.format(portal_id=self.portal_id), "1", ex=self.block_pause)
        detail = (
            f"amoCRM blocked API access (HTTP 403) at {datetime.now(UTC).isoformat(timespec='seconds')}; "
            f"calls paused for {self.block_pause // 60} min. If it persists, ask amoCRM support to lift the block."
        )
        with self._session() as session, session.begin():
            session.execute(sa.update(Portal).where(Portal.id == self.portal_id).values(status_detail=detail))
        log.error("amocrm account blocked us", extra={"portal_id": self.portal_id})

    # ---- the request loop

    def _backoff(self, attempt: int, error: AmoThrottled) -> float | None:
        if attempt >= self.retry_attempts:
            return None
        if error.retry_after is not None:
            return error.retry_after if error.retry_after <= self.retry_max_delay else None
        delay = min(self.retry_max_delay, self.retry_base_delay * 2 ** (attempt - 1))
        return delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not cryptography

    def _send(
        self, auth: _AccountAuth, method: str, path: str, params: Mapping[str, Any] | None, body: Any
    ) -> requests.Response:
        if self._bucket is None:
            self._load()
        assert self._bucket is not None
        url = f"https://{self._verified_host(auth.host, auth.rest_base)}{path}"
        limiter_for(self.app).acquire(amo_key(self.portal_id), self._bucket)
        self.requests_sent += 1
        if params:
            url += "?" + qs_codec.encode(dict(params), qs_codec.EncodeOptions(skip_nulls=True))
        try:
            return requests.request(
                method,
                url,
                json=body,
                headers={"Authorization": f"Bearer {auth.access_token}", "Accept": "application/hal+json"},
                timeout=(min(10.0, self.timeout), self.timeout),
            )
        except requests.RequestException as error:
            raise CrmUnavailable(f"amoCRM unreachable: {type(error).__name__}") from error

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None) -> Any:
        """One API call; returns the decoded JSON, or None for 204 (an empty list)."""
        if self._blocked():
            raise AmoBlocked(f"calls to the amoCRM account of portal {self.portal_id} are paused after a 403 block")
        auth = self._current()
        if self._expiring(auth.expires_at):
            self.refresh(auth.access_token)
            auth = self._current()
        refreshed = False
        attempt = 0
        while True:
            response = self._send(auth, method, path, params, body)
            if response.status_code == 204:
                return None
            if response.status_code < 300:
                answer = _json_or_none(response)
                if answer is None:
                    raise CrmUnavailable("amoCRM answered without JSON", http_status=response.status_code)
                return answer
            error = error_from_response(response)
            if isinstance(error, AmoUnauthorized):
                if refreshed:
                    raise self._flag_reinstall(error) from error
                self.refresh(auth.access_token)
                auth = self._current()
                refreshed = True
                continue
            if isinstance(error, AmoThrottled):
                attempt += 1
                delay = self._backoff(attempt, error)
                if delay is None:
                    raise error
                log.info("amocrm throttled, retrying", extra={"portal_id": self.portal_id, "delay": round(delay, 2)})
                time.sleep(delay)
                continue
            if isinstance(error, AmoBlocked):
                self._record_block(error)
            raise error

    def _recording_address(self, host: str) -> str:
        """The one address a foreign recording host is fetched from: resolved once, every answer public.

        The host must match AMO_RECORDING_HOSTS when that is set, and every address it resolves to must be
        global (no loopback, private, link-local or cloud-metadata ranges: no SSRF into our network). The
        fetch then connects to exactly this address (`PinnedAdapter`), so a second DNS answer cannot move it.
        """
        suffixes = self.app.config.get("AMO_RECORDING_HOSTS") or ()
        if suffixes and not any(host == s.lstrip(".") or host.endswith("." + s.lstrip(".")) for s in suffixes):
            raise CrmError(f"recordings are not fetched from {host}", code=FOREIGN_URL)
        try:
            if not ipaddress.ip_address(host).is_global:
                raise CrmError(f"recordings are not fetched from {host}", code=FOREIGN_URL)
            return host
        except ValueError:
            pass
        addresses = resolve_addresses(host)
        try:
            public = bool(addresses) and all(ipaddress.ip_address(address).is_global for address in addresses)
        except ValueError:
            public = False
        if not public:
            raise CrmError(f"recordings are not fetched from {host}", code=FOREIGN_URL)
        return sorted(addresses)[0]

    def download(self, url: str) -> requests.Response:
        """GET a call recording (streamed; the caller closes the response).

        The link comes from a call note, which any user or telephony integration can write, so:

        * only ``https`` on the default port, no credentials in the address;
        * on the account's own (verified) host the request carries our token (that host already has it),
          only for a recording path (OWN_RECORDING_PATHS: never an API path), and takes a slot from the
          account's rate limit;
        * on any other host (the telephony provider the note names: amoCRM keeps no recordings of its
          own for them) the request carries **no** credentials, the host must match AMO_RECORDING_HOSTS
          when that is set, and it is resolved once: every address must be public and the connection goes
          to the checked address (`PinnedAdapter`; TLS SNI and the certificate are still checked against
          the host name), so DNS rebinding between the check and the connection cannot reach our network;
        * redirects are followed by hand, at most three, each hop checked, resolved and pinned again (the
          token is never sent to a host a redirect names, unless it is the account's own);
        * only audio (``audio/*``, or ``application/octet-stream``, the opaque binary telephony providers
          serve files as) is streamed back, never an HTML page or JSON.
        """
        auth = self._current()
        own_host = _hostname(self._verified_host(auth.host, auth.rest_base))
        for _hop in range(RECORDING_REDIRECTS + 1):
            parts = urlsplit(url)
            try:
                port = parts.port
            except ValueError:
                port = -1
            host = (parts.hostname or "").lower()
            if parts.scheme != "https" or not host or parts.username or parts.password or port not in (None, 443):
                raise CrmError("the recording link is not a plain https address", code=FOREIGN_URL)
            if origin_of(url) is None:
                raise CrmError("the recording link is not a plain https address", code=FOREIGN_URL)
            own = host == own_host
            headers = {"Accept": "audio/*, application/octet-stream"}
            pinned: str | None = None
            if own:
                if not own_recording_path(parts.path):
                    raise CrmError("only recording paths are fetched from the account's host", code=FOREIGN_URL)
                if self._blocked():
                    raise AmoBlocked(f"calls to the amoCRM account of portal {self.portal_id} are paused")
                if self._bucket is None:
                    self._load()
                assert self._bucket is not None
                limiter_for(self.app).acquire(amo_key(self.portal_id), self._bucket)
                headers["Authorization"] = f"Bearer {auth.access_token}"
            else:
                pinned = self._recording_address(host)
            try:
                response = fetch_recording(url, headers, pinned, timeout=(10.0, self.timeout))
            except requests.RequestException as error:
                raise CrmUnavailable(f"the recording host is unreachable: {type(error).__name__}") from error
            if response.is_redirect:
                location = response.headers.get("Location", "")
                response.close()
                url = urljoin(url, location)
                continue
            if response.status_code != 200:
                response.close()
                if response.status_code in (404, 410):
                    raise AmoNotFound("the recording file is gone", http_status=response.status_code)
                raise CrmUnavailable("the recording host did not serve the file", http_status=response.status_code)
            content_type = (response.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
            if not recording_type(content_type):
                response.close()
                raise CrmError(f"the recording link answered {content_type or 'no content type'}", code=FOREIGN_URL)
            return response
        raise CrmError("the recording link redirects too many times", code=FOREIGN_URL)

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET; None for 204."""
        return self.request("GET", path, params=params)

    def iter_pages(
        self, path: str, key: str, params: Mapping[str, Any] | None = None, limit: int = PAGE_LIMIT
    ) -> Iterator[dict[str, Any]]:
        """Every item of a paged list (``_embedded[key]``): stops at a 204 or a short page, not at `next`."""
        page = 1
        while True:
            answer = self.get(path, {**(params or {}), "page": page, "limit": limit})
            items = ((answer or {}).get("_embedded") or {}).get(key) or [] if isinstance(answer, dict) else []
            yield from items
            if len(items) < limit:
                return
            page += 1


# ---------------------------------------------------------------- the adapter


class AmoCrm:
    """The CrmClient port for an amoCRM / Kommo account."""

    def __init__(self, portal: Portal, rest: AmoRest | None = None) -> None:
        self.portal_id = portal.id
        self.rest = rest or AmoRest(portal.id)
        self.domain = portal.domain
        fields = (portal.settings or {}).get("amo_fields") or {}
        self._field: dict[str, int] = {
            name: int(spec["field"]) for name, spec in fields.items() if _int(spec.get("field")) is not None
        }
        self._enum: dict[str, dict[str, int]] = {
            name: {str(code): int(enum_id) for code, enum_id in (spec.get("enum") or {}).items()}
            for name, spec in fields.items()
        }
        self._enum_codes: dict[str, dict[int, str]] = {
            name: {enum_id: code for code, enum_id in mapping.items()} for name, mapping in self._enum.items()
        }
        self._raw_pipelines: dict[str, list[tuple[int, int]]] | None = None

    # ---- custom fields

    def _values(self, raw: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
        field_id = self._field.get(name)
        if field_id is None:
            return []
        for entry in raw.get("custom_fields_values") or []:
            if isinstance(entry, dict) and _int(entry.get("field_id")) == field_id:
                return [v for v in entry.get("values") or [] if isinstance(v, dict)]
        return []

    def _decode_enum(self, raw: Mapping[str, Any], name: str) -> str | None:
        values = self._values(raw, name)
        if not values:
            return None
        enum_id = _int(values[0].get("enum_id"))
        code = self._enum_codes.get(name, {}).get(enum_id) if enum_id is not None else None
        if code is None:
            log.warning("unknown enum value", extra={"portal_id": self.portal_id, "field": name, "enum_id": enum_id})
        return code

    def _decode_text(self, raw: Mapping[str, Any], name: str) -> str:
        values = self._values(raw, name)
        return _text(values[0].get("value")) if values else ""

    def _require_field(self, name: str) -> int:
        field_id = self._field.get(name)
        if field_id is None:
            raise CrmError(f"custom field {name} is not installed on portal {self.portal_id}")
        return field_id

    def _encode_enum(self, name: str, code: str) -> dict[str, Any]:
        field_id = self._require_field(name)
        if code == "":
            return {"field_id": field_id, "values": None}
        try:
            return {"field_id": field_id, "values": [{"enum_id": self._enum[name][code]}]}
        except KeyError as error:
            raise CrmError(f"{name} code {code!r} is not installed on portal {self.portal_id}") from error

    def _encode_text(self, name: str, text: str) -> dict[str, Any]:
        field_id = self._require_field(name)
        return {"field_id": field_id, "values": [{"value": text}] if text else None}

    # ---- leads

    def deal_from_raw(self, raw: Mapping[str, Any]) -> Deal:
        """Decode one lead of GET /api/v4/leads."""
        status_id = _text(raw.get("status_id"))
        updated_by = _int(raw.get("updated_by"))
        modified_by = AUTOMATION if updated_by == 0 else (str(updated_by) if updated_by else None)
        cpl_values = self._values(raw, "cpl")
        return Deal(
            id=_text(raw.get("id")),
            title=_text(raw.get("name")),
            pipeline_id=_text(raw.get("pipeline_id")),
            stage_id=status_id,
            stage_semantics=semantics_of(status_id),
            responsible_id=_text(raw.get("responsible_user_id")),
            modified_by_id=modified_by,
            modified_at=_ts(raw.get("updated_at")),
            created_at=_ts(raw.get("created_at")),
            amount=_decimal(raw.get("price")) or Decimal("0"),
            source_id=self.source_of(raw),
            refusal_reason=self._decode_enum(raw, "refusal_reason"),
            refusal_comment=self._decode_text(raw, "refusal_comment"),
            qa_verdict=self._decode_enum(raw, "qa_verdict"),
            cpl=_decimal(cpl_values[0].get("value")) if cpl_values else None,
            # amoCRM keeps no "last activity" time on a lead; `updated_at` moves with every change to it
            # (a move, a field, a new responsible), which is the closest documented equivalent.
            last_activity_at=_ts(raw.get("updated_at")),
        )

    @staticmethod
    def source_of(raw: Mapping[str, Any]) -> str:
        """The lead's source: its ``utm_source`` tracking value (field code UTM_SOURCE), "" without one."""
        for entry in raw.get("custom_fields_values") or []:
            if isinstance(entry, dict) and str(entry.get("field_code") or "").upper() == UTM_SOURCE:
                for value in entry.get("values") or []:
                    text = _text(value.get("value") if isinstance(value, dict) else "").strip()
                    if text:
                        return text[:SOURCE_MAX_LENGTH]
        return ""

    def get_deal(self, deal_id: str) -> Deal:
        """Re-read one lead (GET /api/v4/leads/{id}; 204/404 mean it is gone)."""
        raw = self.rest.get(f"/api/v4/leads/{int(deal_id)}")
        if not isinstance(raw, dict) or not raw.get("id"):
            raise AmoNotFound(f"lead {deal_id} not found")
        return self.deal_from_raw(raw)

    def get_deals(self, deal_ids: Sequence[str]) -> dict[str, Deal]:
        """Many leads, 250 ids per request (``filter[id][]``)."""
        ids = list(dict.fromkeys(int(deal_id) for deal_id in deal_ids))
        deals: dict[str, Deal] = {}
        for start in range(0, len(ids), BATCH_IDS):
            chunk = ids[start : start + BATCH_IDS]
            for raw in self.rest.iter_pages("/api/v4/leads", "leads", {"filter": {"id": chunk}}):
                deal = self.deal_from_raw(raw)
                deals[deal.id] = deal
        return deals

    def lead_patch(self, change: DealChange) -> dict[str, Any]:
        """The PATCH body for a change (custom fields in the v4 ``custom_fields_values`` shape)."""
        body: dict[str, Any] = {}
        if change.stage_id is not None:
            body["status_id"] = int(change.stage_id)
        if change.pipeline_id is not None:
            body["pipeline_id"] = int(change.pipeline_id)
        if change.responsible_id is not None:
            body["responsible_user_id"] = int(change.responsible_id)
        values = []
        if change.refusal_reason is not None:
            values.append(self._encode_enum("refusal_reason", change.refusal_reason))
        if change.refusal_comment is not None:
            values.append(self._encode_text("refusal_comment", change.refusal_comment))
        if change.qa_verdict is not None:
            values.append(self._encode_enum("qa_verdict", change.qa_verdict))
        if values:
            body["custom_fields_values"] = values
        return body

    def update_deal(self, deal_id: str, change: DealChange) -> None:
        """PATCH /api/v4/leads/{id}. 142/143 are shared by every pipeline, so they always carry pipeline_id
        (read from the lead when the change does not name it); we never send loss_reason_id."""
        body = self.lead_patch(change)
        if not body:
            return
        if change.stage_id in (WON, LOST) and "pipeline_id" not in body:
            body["pipeline_id"] = int(self.get_deal(deal_id).pipeline_id)
        self.rest.request("PATCH", f"/api/v4/leads/{int(deal_id)}", body=body)

    def iter_deals(self, *, modified_since: datetime | None = None, open_only: bool = False) -> Iterator[Deal]:
        """Stream leads oldest id first (``order[id]=asc``, ``filter[updated_at][from]``)."""
        params: dict[str, Any] = {"order": {"id": "asc"}}
        if modified_since is not None:
            if modified_since.tzinfo is None:
                raise ValueError("modified_since must be aware")
            params["filter"] = {"updated_at": {"from": int(modified_since.timestamp())}}
        for raw in self.rest.iter_pages("/api/v4/leads", "leads", params):
            if open_only and _text(raw.get("status_id")) in (WON, LOST):
                continue
            yield self.deal_from_raw(raw)

    def _open_status_types(self) -> dict[str, list[tuple[int, int]]]:
        """(status id, status type) of every status but 142 and 143, per pipeline id; read once per adapter."""
        if self._raw_pipelines is None:
            answer = self.rest.get("/api/v4/leads/pipelines")
            self._raw_pipelines = {
                _text(raw.get("id")): [
                    (int(status["id"]), _int(status.get("type")) or 0)
                    for status in ((raw.get("_embedded") or {}).get("statuses") or [])
                    if _int(status.get("id")) is not None and _text(status.get("id")) not in (WON, LOST)
                ]
                for raw in ((answer or {}).get("_embedded") or {}).get("pipelines") or []
                if _int(raw.get("id")) is not None
            }
        return self._raw_pipelines

    def _open_statuses(self, pipeline_id: str) -> list[int]:
        """Every status of a pipeline but 142 and 143 (Incoming leads included: such a lead is open too)."""
        return [status_id for status_id, _type in self._open_status_types().get(pipeline_id, [])]

    def count_open_deals(self, responsible_id: str, pipeline_id: str) -> int:
        """Open leads of one pipeline a user is responsible for.

        amoCRM answers no totals and selects no columns, so this pages ``GET /api/v4/leads`` at 250 a page
        with ``filter[responsible_user_id][]`` and ``filter[statuses][i][pipeline_id|status_id]`` for each
        open status of the pipeline (the filter shape of the official SDK's LeadsFilter), and counts;
        a manager's open leads are few, so that is one request in practice.
        """
        statuses = self._open_statuses(pipeline_id)
        if not statuses:
            return 0
        params = {
            "filter": {
                "responsible_user_id": [int(responsible_id)],
                "statuses": [{"pipeline_id": int(pipeline_id), "status_id": status} for status in statuses],
            },
            "order": {"id": "asc"},
        }
        return sum(1 for _lead in self.rest.iter_pages("/api/v4/leads", "leads", params))

    def list_sources(self) -> list[Source]:
        """The lead sources in use: the distinct ``utm_source`` values of recently updated leads.

        amoCRM has no account-wide list of lead sources (its ``/api/v4/sources`` holds only the chat
        sources an integration creates itself). What a lead carries that says where it came from is the
        built-in tracking field ``utm_source`` (type tracking_data, code UTM_SOURCE), which site forms,
        ads and chat integrations fill in. Its values are free text, so the list is collected from the
        leads updated in the last SOURCE_SCAN_DAYS days, newest first, at most SOURCE_SCAN_PAGES pages
        of 250; the id and the name of a source are the value itself, sorted by name.
        """
        since = int((datetime.now(UTC) - timedelta(days=SOURCE_SCAN_DAYS)).timestamp())
        found: dict[str, str] = {}
        for page in range(1, SOURCE_SCAN_PAGES + 1):
            answer = self.rest.get(
                "/api/v4/leads",
                {
                    "filter": {"updated_at": {"from": since}},
                    "order": {"updated_at": "desc"},
                    "page": page,
                    "limit": PAGE_LIMIT,
                },
            )
            leads = ((answer or {}).get("_embedded") or {}).get("leads") or [] if isinstance(answer, dict) else []
            for raw in leads:
                source = self.source_of(raw) if isinstance(raw, dict) else ""
                if source:
                    found.setdefault(source.casefold(), source)
            if len(leads) < PAGE_LIMIT:
                break
        return [Source(id=name, name=name) for name in sorted(found.values(), key=str.casefold)]

    # ---- events

    def _status_events(self, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        base = {"filter": {"type": "lead_status_changed", "entity": "lead", **(params.get("filter") or {})}}
        yield from self.rest.iter_pages("/api/v4/events", "events", base, limit=EVENTS_LIMIT)

    @staticmethod
    def _event_status(values: Any) -> tuple[str, str] | None:
        for value in values or []:
            status = value.get("lead_status") if isinstance(value, dict) else None
            if isinstance(status, dict) and status.get("id") is not None:
                return _text(status.get("id")), _text(status.get("pipeline_id"))
        return None

    def stage_before(self, deal_id: str, stage_id: str) -> str | None:
        """From the newest ``lead_status_changed`` event into `stage_id`: its ``value_before``."""
        for event in self._status_events({"filter": {"entity_id": [int(deal_id)]}}):
            after = self._event_status(event.get("value_after"))
            if after is not None and after[0] == stage_id:
                before = self._event_status(event.get("value_before"))
                return before[0] if before else None
        return None

    def drain_deal_changes(self, handle: Callable[[list[str]], None]) -> int | None:
        """Status changes since the stored watermark (events API), 100 per page; the watermark moves on
        only after `handle` returned for a page."""
        since = self._watermark()
        drained = 0
        newest = since
        page = 1
        while True:
            answer = self.rest.get(
                "/api/v4/events",
                {
                    "filter": {"type": "lead_status_changed", "entity": "lead", "created_at": {"from": since}},
                    "page": page,
                    "limit": EVENTS_LIMIT,
                },
            )
            events = ((answer or {}).get("_embedded") or {}).get("events") or [] if isinstance(answer, dict) else []
            lead_ids = sorted({_text(e.get("entity_id")) for e in events if e.get("entity_id")}, key=int)
            if lead_ids:
                handle(lead_ids)
            newest = max([newest, *(_int(e.get("created_at")) or 0 for e in events)])
            drained += len(events)
            if newest > since:
                self._set_watermark(newest)
            if len(events) < EVENTS_LIMIT:
                return drained
            page += 1

    def _watermark(self) -> int:
        with self.rest._session() as session:
            portal = session.get(Portal, self.portal_id)
            if portal is None:
                raise CrmError(f"portal {self.portal_id} does not exist")
            stored = _int((portal.settings or {}).get(EVENTS_WATERMARK))
            if stored:
                return stored
            start = portal.installed_at or datetime.now(UTC)
            return int(start.timestamp())

    def _set_watermark(self, value: int) -> None:
        with self.rest._session() as session, session.begin():
            portal = session.scalars(sa.select(Portal).where(Portal.id == self.portal_id).with_for_update()).one()
            settings = dict(portal.settings or {})
            settings[EVENTS_WATERMARK] = value
            portal.settings = settings
            flag_modified(portal, "settings")

    # ---- pipelines

    def list_pipelines(self) -> list[Pipeline]:
        """GET /api/v4/leads/pipelines with the statuses embedded."""
        answer = self.rest.get("/api/v4/leads/pipelines")
        pipelines = []
        for raw in ((answer or {}).get("_embedded") or {}).get("pipelines") or []:
            pipeline_id = _text(raw.get("id"))
            stages = [
                Stage(
                    id=_text(status.get("id")),
                    pipeline_id=pipeline_id,
                    name=_text(status.get("name")),
                    sort=_int(status.get("sort")) or 0,
                    semantics=semantics_of(_text(status.get("id"))),
                )
                for status in ((raw.get("_embedded") or {}).get("statuses") or [])
                # "Incoming leads" (type 1) is not a stage anyone works in.
                if _int(status.get("type")) != 1
            ]
            stages.sort(key=lambda stage: stage.sort)
            pipelines.append(
                Pipeline(
                    id=pipeline_id,
                    name=_text(raw.get("name")),
                    stages=tuple(stages),
                    is_default=bool(raw.get("is_main")),
                )
            )
        pipelines.sort(key=lambda p: (not p.is_default, int(p.id)))
        return pipelines

    # ---- people

    def list_users(self) -> list[User]:
        """GET /api/v4/users (admin grant), 250 per page; a user's group is his department."""
        users = []
        for row in self.rest.iter_pages("/api/v4/users", "users", {"with": "group"}):
            rights = row.get("rights") if isinstance(row.get("rights"), dict) else {}
            group_id = rights.get("group_id")
            users.append(
                User(
                    id=_text(row.get("id")),
                    name=_text(row.get("name")) or _text(row.get("email")) or _text(row.get("id")),
                    active=bool(rights.get("is_active", True)),
                    department_ids=(_text(group_id),) if group_id not in (None, "") else (),
                    is_admin=bool(rights.get("is_admin")),
                )
            )
        return users

    def list_departments(self) -> list[Department]:
        """The account's user groups (GET /api/v4/account?with=users_groups)."""
        answer = self.rest.get("/api/v4/account", {"with": "users_groups"})
        groups = ((answer or {}).get("_embedded") or {}).get("users_groups") or []
        return [Department(id=_text(g.get("id")), name=_text(g.get("name"))) for g in groups if isinstance(g, dict)]

    def deal_url(self, deal_id: str) -> str:
        """The lead card."""
        return f"https://{self.domain}/leads/detail/{deal_id}"

    def notify(self, user_id: str, message: str, key: str = "") -> None:
        """amoCRM has no notification API (reference/amocrm.md section 10): a task for the user is the notice.
        Tasks have no tag, so `key` cannot make a resent notice replace the first one here."""
        self.rest.request("POST", "/api/v4/tasks", body=[self._notice_task(user_id, message)])

    def notify_many(self, notices: Sequence[tuple[str, str]]) -> None:
        """Several notices as tasks, NOTICE_BATCH to a POST (amoCRM takes a list of tasks in one request)."""
        for start in range(0, len(notices), NOTICE_BATCH):
            chunk = notices[start : start + NOTICE_BATCH]
            self.rest.request("POST", "/api/v4/tasks", body=[self._notice_task(user, text) for user, text in chunk])

    def update_deal_and_notify(
        self, deal_id: str, change: DealChange, notices: Sequence[Notice]
    ) -> list[Exception | None]:
        """The change, then every notice in one POST of tasks; notices are not sent when the change failed."""
        try:
            self.update_deal(deal_id, change)
        except CrmError as error:
            return [error] * (1 + len(notices))
        if not notices:
            return [None]
        try:
            self.notify_many([(notice.user_id, notice.message) for notice in notices])
        except CrmError as error:
            return [None, *([error] * len(notices))]
        return [None] * (1 + len(notices))

    def _notice_task(self, user_id: str, message: str) -> dict[str, Any]:
        deadline = datetime.now(UTC) + timedelta(hours=NOTICE_TASK_HOURS)
        return {
            "text": message,
            "complete_till": int(deadline.timestamp()),
            "responsible_user_id": int(user_id),
            "task_type_id": TASK_TYPE_CALL,
        }

    # ---- tasks

    def create_task(self, task: NewTask) -> str:
        """POST /api/v4/tasks linked to the lead; returns the task id."""
        text = task.title if not task.description else f"{task.title}\n{task.description}"
        item: dict[str, Any] = {
            "text": text,
            "complete_till": int(task.deadline.timestamp()),
            "entity_type": "leads",
            "entity_id": int(task.deal_id),
            "responsible_user_id": int(task.responsible_id),
            "task_type_id": TASK_TYPE_CALL,
        }
        if task.created_by:
            item["created_by"] = int(task.created_by)
        answer = self.rest.request("POST", "/api/v4/tasks", body=[item])
        created = ((answer or {}).get("_embedded") or {}).get("tasks") or [] if isinstance(answer, dict) else []
        if not created or not created[0].get("id"):
            raise CrmError("POST /api/v4/tasks answered without a task id")
        return _text(created[0]["id"])

    def create_todo(self, todo: NewTodo) -> str:
        """A to-do is a task of type 1 ("call") for the user on the lead, due at the deadline
        (``POST /api/v4/tasks``); returns the task id."""
        text = todo.title if not todo.description else f"{todo.title}\n{todo.description}"
        item = {
            "text": text,
            "complete_till": int(todo.deadline.timestamp()),
            "entity_type": "leads",
            "entity_id": int(todo.deal_id),
            "responsible_user_id": int(todo.responsible_id),
            "task_type_id": TASK_TYPE_CALL,
        }
        answer = self.rest.request("POST", "/api/v4/tasks", body=[item])
        created = ((answer or {}).get("_embedded") or {}).get("tasks") or [] if isinstance(answer, dict) else []
        if not created or not created[0].get("id"):
            raise CrmError("POST /api/v4/tasks answered without a task id")
        return _text(created[0]["id"])

    def list_deal_tasks(self, deal_id: str) -> list[Task]:
        """Tasks of the lead (``filter[entity_type]=leads&filter[entity_id][]``)."""
        params = {"filter": {"entity_type": "leads", "entity_id": [int(deal_id)]}}
        return [
            Task(
                id=_text(row.get("id")),
                title=_text(row.get("text")),
                responsible_id=_text(row.get("responsible_user_id")),
                deal_id=deal_id,
                deadline=_ts(row.get("complete_till")),
                is_open=not bool(row.get("is_completed")),
                created_by=_text(row.get("created_by")) or None,
            )
            for row in self.rest.iter_pages("/api/v4/tasks", "tasks", params)
        ]

    # ---- task control

    OPEN_LEAD_TASKS: Mapping[str, Any] = {"entity_type": "leads", "is_completed": 0}

    @staticmethod
    def _open_task(row: Mapping[str, Any], now: datetime) -> Task | None:
        """An open task of ``GET /api/v4/tasks`` bound to a lead; None for any other (a notice bound to
        nothing, a contact's task, a completed one).

        amoCRM tasks have one text and no title: the first line of the text is the title. There are no
        auditors and no "overdue" flag: a task is overdue once ``complete_till`` (unix seconds, the exact
        end of an all-day task too) has passed.
        """
        lead_id = _int(row.get("entity_id"))
        if row.get("entity_type") != "leads" or not lead_id or row.get("is_completed"):
            return None
        deadline = _ts(row.get("complete_till"))
        lines = _text(row.get("text")).strip().splitlines()
        created_by = _int(row.get("created_by"))
        return Task(
            id=_text(row.get("id")),
            title=(lines[0] if lines else "")[:TASK_TITLE_LENGTH],
            responsible_id=_text(row.get("responsible_user_id")),
            deal_id=str(lead_id),
            deadline=deadline,
            is_open=True,
            created_by=str(created_by) if created_by else None,
            overdue=deadline is not None and deadline < now,
        )

    def open_deal_tasks(self, deal_id: str) -> list[Task]:
        """Open tasks of one lead: ``filter[entity_type]=leads&filter[entity_id][]=ID&filter[is_completed]=0``
        (the filter names of the official SDK's TasksFilter), one request unless it has over 250."""
        params = {"filter": {**self.OPEN_LEAD_TASKS, "entity_id": [int(deal_id)]}, "order": {"id": "asc"}}
        now = datetime.now(UTC)
        return [
            task
            for row in self.rest.iter_pages("/api/v4/tasks", "tasks", params)
            if (task := self._open_task(row, now)) is not None and task.deal_id == str(int(deal_id))
        ]

    def _working_status_chunks(self) -> list[list[dict[str, int]]]:
        """``filter[statuses]`` pairs of every working status (not 142/143, not Incoming leads), in chunks."""
        pairs = [
            {"pipeline_id": int(pipeline_id), "status_id": status_id}
            for pipeline_id, statuses in sorted(self._open_status_types().items(), key=lambda item: int(item[0]))
            for status_id, status_type in statuses
            if status_type != STATUS_INCOMING
        ]
        return [pairs[start : start + STATUS_FILTER_CHUNK] for start in range(0, len(pairs), STATUS_FILTER_CHUNK)]

    def iter_open_work(self) -> Iterator[Task | Deal]:
        """Every open task bound to a lead, then every open lead, 250 a page, one page in memory at a time.

        Tasks: ``GET /api/v4/tasks?filter[entity_type]=leads&filter[is_completed]=0&order[id]=asc``. Leads:
        ``GET /api/v4/leads`` with ``filter[statuses]`` naming each working status of each pipeline (read
        once from the pipelines), so closed leads are never read; leads in Incoming leads are requests waiting
        to be accepted or declined, not deals in work, and are left out. Paging stops at a 204 or a short page;
        every request takes a slot from the account's shared limiter. amoCRM pages by offset only (no id
        range filter), so a task completed while the scan reads can shift one row past a page boundary.
        """
        now = datetime.now(UTC)
        params = {"filter": dict(self.OPEN_LEAD_TASKS), "order": {"id": "asc"}}
        for row in self.rest.iter_pages("/api/v4/tasks", "tasks", params):
            task = self._open_task(row, now)
            if task is not None:
                yield task
        for chunk in self._working_status_chunks():
            for raw in self.rest.iter_pages(
                "/api/v4/leads", "leads", {"filter": {"statuses": chunk}, "order": {"id": "asc"}}
            ):
                if _text(raw.get("status_id")) not in (WON, LOST):
                    yield self.deal_from_raw(raw)

    # ---- calls

    def list_deal_calls(self, deal_id: str) -> list[Call]:
        """Call notes of the lead (call_in / call_out); ``params.link`` is the recording."""
        params = {"filter": {"note_type": ["call_in", "call_out"]}}
        calls = []
        for note in self.rest.iter_pages(f"/api/v4/leads/{int(deal_id)}/notes", "notes", params):
            info = note.get("params") if isinstance(note.get("params"), dict) else {}
            responsible = _int(info.get("call_responsible")) or _int(note.get("responsible_user_id"))
            calls.append(
                Call(
                    id=_text(note.get("id")),
                    deal_id=deal_id,
                    user_id=str(responsible) if responsible else None,
                    direction="in" if note.get("note_type") == "call_in" else "out",
                    started_at=_ts(note.get("created_at")),
                    duration_seconds=_int(info.get("duration")) or 0,
                    recording_url=_text(info.get("link")) or None,
                    phone=_text(info.get("phone")),
                )
            )
        return calls

    def open_recording(self, call: Call) -> Recording:
        """Stream the recording the call note links to (``params.link``); see `AmoRest.download` for which
        hosts are fetched and how."""
        if not call.recording_url:
            raise AmoNotFound("the call has no recording", http_status=404)
        response = self.rest.download(call.recording_url)
        length = response.headers.get("Content-Length")
        return Recording(
            content_type=(response.headers.get("Content-Type") or "application/octet-stream").split(";", 1)[0],
            chunks=response.iter_content(chunk_size=64 * 1024),
            close=response.close,
            length=int(length) if length and length.isdigit() else None,
        )

    # ---- notes

    def add_note(self, deal_id: str, text: str) -> str:
        """A common note on the lead (``POST /api/v4/leads/notes``, note_type "common"); returns its id."""
        item = {"entity_id": int(deal_id), "note_type": "common", "params": {"text": text}}
        answer = self.rest.request("POST", "/api/v4/leads/notes", body=[item])
        created = ((answer or {}).get("_embedded") or {}).get("notes") or [] if isinstance(answer, dict) else []
        if not created or not created[0].get("id"):
            raise CrmError("POST /api/v4/leads/notes answered without a note id")
        return _text(created[0]["id"])

    def find_note(self, deal_id: str, text: str) -> str | None:
        """The id of a common note on the lead with exactly this text, if there is one."""
        params = {"filter": {"note_type": ["common"]}}
        for note in self.rest.iter_pages(f"/api/v4/leads/{int(deal_id)}/notes", "notes", params):
            info = note.get("params") if isinstance(note.get("params"), dict) else {}
            if _text(info.get("text")) == text:
                return _text(note.get("id"))
        return None
