"""amoCRM (and Kommo): the API v4 client `AmoRest` on `requests` (the adapter is in `adapter`).

`AmoRest` owns everything about talking to one account (reference/amocrm.md):

* every request first takes a slot from the shared limiter (app.crm.ratelimit, 7 req/s per account);
* API calls go through this process's keep-alive session for the account (app.crm.connections: bound
  to the verified host, no redirects, no cookies; dropped after a transport error); token requests and
  recording downloads keep their own one-off connections (a recording's pinned address is per hop);
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
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urljoin, urlsplit

import qs_codec
import requests
import sqlalchemy as sa
from flask import Flask, current_app
from redis.exceptions import RedisError as _RedisError
from requests.adapters import HTTPAdapter
from sqlalchemy.orm import Session

from app.core.models import Portal
from app.core.queue import get_redis
from app.crm.connections import sessions
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
from app.crm.oauth import NEEDS_REINSTALL, TokenKeeper
from app.crm.ratelimit import Bucket, amo_bucket, amo_key, limiter_for, retry_delay

if TYPE_CHECKING:
    from requests.adapters import _HostParams, _PoolKwargs  # the stubs' types (not importable at runtime)

log = logging.getLogger(__name__)

PAGE_LIMIT = 250
REFRESH_LOCK_KEY = "rc:lock:amo-refresh:{portal_id}"
BLOCK_KEY = "rc:amo:blocked:{portal_id}"
REFRESH_MARGIN = timedelta(minutes=5)
FOREIGN_URL = "FOREIGN_URL"
RECORDING_REDIRECTS = 3
RECORDING_TYPES = ("application/octet-stream",)  # besides audio/*: the opaque binary providers serve files as
# The only paths fetched with our token on the account's own host: where recordings are kept (never /api/).
OWN_RECORDING_PATHS = ("/recordings/",)
SESSION_KIND = "amocrm"


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
        # No redirect is followed: a 307 would carry the client secret to whatever host it names.
        response = requests.post(
            f"https://{host}/oauth2/access_token", json=body, timeout=(10, 30), allow_redirects=False
        )
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
    ) -> tuple[_HostParams, _PoolKwargs]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if host_params.get("scheme") != "https" or str(host_params.get("host") or "").lower() != self.hostname:
            raise ForeignHost(f"a connection pinned for {self.hostname} is never used for another host")
        host_params["host"] = self.address
        # urllib3's HTTPSConnectionPool takes server_hostname (SNI and the certificate check); the requests
        # stubs' _PoolKwargs lists only the keys requests itself sets.
        pool_kwargs["server_hostname"] = self.hostname  # type: ignore[typeddict-unknown-key]
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
        self.lock_seconds = float(config["AMO_REFRESH_LOCK_SECONDS"])
        self.tokens = TokenKeeper(
            portal_id,
            self.app,
            crm="amocrm",
            lock_key=REFRESH_LOCK_KEY.format(portal_id=portal_id),
            lock_seconds=self.lock_seconds,
            refresh=self._refresh_portal,
            store=store_token_answer,
            refused=(AmoTokenRevoked,),
            describe_refusal=self._describe_refusal,
            reinstall_message=f"amoCRM account of portal {portal_id} must be authorised again",
            fresh=lambda portal: not self._expiring(portal.token_expires_at),
        )
        self._auth: _AccountAuth | None = None
        self._bucket: Bucket | None = None
        self.requests_sent = 0

    # ---- account state, through short sessions of our own

    def _session(self) -> Session:
        return self.tokens.session()

    def _load(self) -> _AccountAuth:
        portal = self.tokens.load()
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
        error = self.tokens.flag_reinstall(reason)
        if self._auth is not None:
            self._auth.status = NEEDS_REINSTALL
        return error

    @staticmethod
    def _describe_refusal(reason: CrmError) -> str:
        return (
            f"amoCRM refused the integration's tokens ({reason.code}: {reason.description}); "
            "an administrator must open the integration in amoCRM and authorise it again."
        )

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
        """Replace `failed_token` (expired or refused): exactly one refresh across every process
        (app.crm.oauth.TokenKeeper; a stored token about to expire is refreshed again)."""
        try:
            portal = self.tokens.refresh(failed_token)
        except PortalNeedsReinstall:
            if self._auth is not None:
                self._auth.status = NEEDS_REINSTALL
            raise
        self._auth = self._auth_from(portal)

    def _refresh_portal(self, portal: Portal) -> dict[str, Any]:
        """The token answer for the row's refresh token (AmoTokenRevoked when amoCRM refuses it)."""
        if not portal.refresh_token:
            raise AmoTokenRevoked("no refresh token stored")
        # The refresh token and our client secret go only to the verified account host.
        host = self._verified_host(portal.domain, portal.rest_base or "")
        return oauth_token_request(
            host, {"grant_type": "refresh_token", "refresh_token": portal.refresh_token}, self.app
        )

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
        """Seconds to sleep before retry number `attempt` (1-based), or None to give up."""
        return retry_delay(
            attempt,
            error.retry_after,
            attempts=self.retry_attempts,
            base_delay=self.retry_base_delay,
            max_delay=self.retry_max_delay,
        )

    def _send(
        self, auth: _AccountAuth, method: str, path: str, params: Mapping[str, Any] | None, body: Any
    ) -> requests.Response:
        if self._bucket is None:
            self._load()
        assert self._bucket is not None
        base = f"https://{self._verified_host(auth.host, auth.rest_base)}"
        url = base + path
        # This process's keep-alive session for the account, bound to the verified host (it refuses any other).
        session = sessions.get(SESSION_KIND, self.portal_id, base + "/")
        limiter_for(self.app).acquire(amo_key(self.portal_id), self._bucket)
        self.requests_sent += 1
        if params:
            url += "?" + qs_codec.encode(dict(params), qs_codec.EncodeOptions(skip_nulls=True))
        try:
            return session.request(
                method,
                url,
                json=body,
                headers={"Authorization": f"Bearer {auth.access_token}", "Accept": "application/hal+json"},
                timeout=(min(10.0, self.timeout), self.timeout),
                allow_redirects=False,  # a redirect would take the token (and a body) to a host not checked here
            )
        except requests.RequestException as error:
            sessions.discard(SESSION_KIND, self.portal_id, session)
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
