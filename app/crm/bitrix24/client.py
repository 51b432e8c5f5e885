"""Bitrix24: the REST client `Bitrix24Rest` on the official b24pysdk (the adapter is in `adapter`).

`Bitrix24Rest` owns everything about talking to one portal:

* every request first takes a slot from the shared per-portal rate limiter (app.crm.ratelimit);
* requests go through b24pysdk's `BitrixAPIRequester` (what ``call_method`` uses: its headers, its
  error parsing) with ``max_retries=1``, so the SDK neither retries 503s nor refreshes tokens itself
  (its refresh uses a hard-coded OAuth host and has no cross-process lock); we do both here. The SDK
  opens a new connection per call (``requests.post``) and takes no session, so `_SessionRequester`
  overrides its one-request hook to send the same request through the portal's keep-alive session
  (app.crm.connections), which only ever talks to the portal's verified origin;
* 503 QUERY_LIMIT_EXCEEDED / 429 OPERATION_TIME_LIMIT are retried a bounded number of times with
  exponential back-off and jitter (OPERATION_TIME_LIMIT honours ``operating_reset_at``);
* 401 expired_token refreshes the token once under a Redis lock shared by all processes;
* invalid_token, NO_AUTH_FOUND and a refresh answered with invalid_grant flag the portal
  ``needs_reinstall`` and raise `PortalNeedsReinstall` at once; later calls fail without network.

Token reads and writes use their own short database sessions, independent of the caller's unit of
work: a refresh committed here is never rolled back by a caller, and a caller's pending changes are
never committed by us. (On SQLite, do not hold a write transaction open across CRM calls: SQLite
has one writer, so a refresh would wait for it.)
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote, urljoin, urlsplit

import requests
from b24pysdk.api.requesters import BitrixAPIRequester
from b24pysdk.errors import (
    BitrixAPIError,
    BitrixRequestError,
    BitrixResponse302JSONDecodeError,
    BitrixResponseJSONDecodeError,
)
from flask import Flask, current_app

from app.core.models import Portal
from app.crm.bitrix24.batch import (
    BATCH_LIMIT,
    PAGE_SIZE,
    BatchResult,
    ListStream,
    StreamState,
    build_command,
    id_key,
    id_of,
    page_params,
    plan_batch,
    release_streams,
    result_rows,
    start_after,
)
from app.crm.connections import OriginSession, sessions
from app.crm.errors import (
    Bitrix24Error,
    Bitrix24Throttled,
    CrmError,
    CrmUnavailable,
    ExpiredToken,
    InvalidClient,
    InvalidGrant,
    InvalidToken,
    NoAuthFound,
    NotFound,
    OperationTimeLimit,
    PortalNeedsReinstall,
    QueryLimitExceeded,
    error_for,
)
from app.crm.hosts import ForeignHost, origin_of, require_same_origin
from app.crm.oauth import NEEDS_REINSTALL, TokenKeeper
from app.crm.ratelimit import Bucket, bucket_for, limiter_for, portal_key, retry_delay

log = logging.getLogger(__name__)

REFRESH_LOCK_KEY = "rc:lock:b24-refresh:{portal_id}"
NOT_A_RECORDING = "NOT_A_RECORDING"
MAX_RECORDING_REDIRECTS = 3
# Where Bitrix24 serves call recordings: an activity's FILES[].url (crm.activity.list) is
# /bitrix/tools/crm_show_file.php?fileId=..&ownerTypeId=6&ownerId=..; voximplant's CALL_RECORD_URL and a
# Drive file's download link are /disk/downloadFile/<id>/?&ncc=1&filename=... Nothing else is fetched.
RECORDING_PATHS = (
    re.compile(r"/bitrix/tools/crm_show_file\.php"),
    re.compile(r"/disk/downloadFile/[0-9]{1,18}/?"),
)
# A recording is served as audio/*. Bitrix24 serves Drive downloads (CFile's forced download) as
# application/octet-stream with the real name in Content-Disposition; such an answer is taken only when
# that name (or the link's `filename`) ends in one of these, and the browser gets the audio type.
AUDIO_EXTENSIONS = {
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "ogg": "audio/ogg",
    "oga": "audio/ogg",
    "opus": "audio/ogg",
    "m4a": "audio/mp4",
    "aac": "audio/aac",
    "webm": "audio/webm",
}
OCTET_STREAM = "application/octet-stream"
_FILENAME = re.compile(r"filename\*?=(?:UTF-8'')?\"?([^\";]+)", re.IGNORECASE)


@dataclass
class _PortalAuth:
    access_token: str
    domain: str
    status: str
    rest_base: str = ""


class NotARecording(CrmError):
    """The portal's answer (or the link) is not a call recording; our token was not sent anywhere else."""

    default_code = NOT_A_RECORDING


def recording_path(url: str) -> bool:
    """Whether `url`'s path is one of the places Bitrix24 serves recordings from (no `..`, no escapes)."""
    path = urlsplit(url).path
    return "%" not in path and any(pattern.fullmatch(path) for pattern in RECORDING_PATHS)


def _file_name(response: requests.Response) -> str:
    """The served file's name: Content-Disposition's, else the link's `filename`, else its last path part."""
    match = _FILENAME.search(response.headers.get("Content-Disposition", ""))
    if match:
        return unquote(match.group(1)).strip()
    query = dict(parse_qsl(urlsplit(response.url or "").query))
    return query.get("filename") or urlsplit(response.url or "").path.rsplit("/", 1)[-1]


def audio_type(response: requests.Response) -> str | None:
    """The audio content type to serve a recording with, or None when the answer is not audio."""
    served = (response.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    if served.startswith("audio/") and len(served) > len("audio/"):
        return served
    if served == OCTET_STREAM:
        extension = _file_name(response).rsplit(".", 1)[-1].lower()
        return AUDIO_EXTENSIONS.get(extension)
    return None


# ---------------------------------------------------------------- REST client

SESSION_KIND = "bitrix24"


class _SessionRequester(BitrixAPIRequester):
    """b24pysdk's REST requester, sending through a keep-alive session instead of ``requests.post``.

    Everything else is the SDK's: the JSON body, its headers (request id, SDK version), no redirects,
    ``requests`` errors raised as BitrixRequestError/BitrixRequestTimeout, and its response parsing into
    typed BitrixAPIError subclasses. `_request` is the SDK's hook for "one HTTP request" (each requester
    implements it); tests/crm/test_connections.py checks we send what ``call_method`` would.
    """

    __slots__ = ("_session",)

    def __init__(self, url: str, *, session: OriginSession, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._session = session

    def _request(self) -> requests.Response:
        return self._session.post(
            url=self._url,
            json=self._params,
            headers=self._headers,
            timeout=self._timeout,
            allow_redirects=self._ALLOW_REDIRECTS,
        )


class Bitrix24Rest:
    """Low-level Bitrix24 REST client for one portal (by id)."""

    def __init__(self, portal_id: int, *, app: Flask | None = None) -> None:
        self.portal_id = portal_id
        self.app: Flask = app or current_app._get_current_object()  # type: ignore[attr-defined]
        config = self.app.config
        self.timeout = float(config["B24_HTTP_TIMEOUT"])
        self.retry_attempts = max(1, int(config["B24_RETRY_ATTEMPTS"]))
        self.retry_base_delay = float(config["B24_RETRY_BASE_DELAY"])
        self.retry_max_delay = float(config["B24_RETRY_MAX_DELAY"])
        self.lock_seconds = float(config["B24_REFRESH_LOCK_SECONDS"])
        self.tokens = TokenKeeper(
            portal_id,
            self.app,
            crm="bitrix24",
            lock_key=REFRESH_LOCK_KEY.format(portal_id=portal_id),
            lock_seconds=self.lock_seconds,
            refresh=self._refresh_portal,
            store=self._store_tokens,
            refused=(InvalidGrant,),
            describe_refusal=self._describe_refusal,
            reinstall_message=f"portal {portal_id} must be reinstalled",
        )
        self._auth: _PortalAuth | None = None
        self._bucket: Bucket | None = None
        self.requests_sent = 0

    # ---- portal state, always through short sessions of our own

    def _load(self) -> _PortalAuth:
        portal = self.tokens.load()
        self._bucket = bucket_for(portal.settings, self.app)
        return self._auth_from(portal)

    @staticmethod
    def _auth_from(portal: Portal) -> _PortalAuth:
        if portal.crm != Portal.BITRIX24:
            raise CrmError(f"portal {portal.id} is not a Bitrix24 portal")
        origin = origin_of(portal.rest_base or "")
        if origin is None:
            raise CrmError(f"portal {portal.id} has no HTTPS REST endpoint")
        _, host, port = origin
        return _PortalAuth(
            access_token=portal.access_token or "",
            domain=host if port == 443 else f"{host}:{port}",
            status=portal.status,
            rest_base=portal.rest_base or "",
        )

    def _current(self) -> _PortalAuth:
        if self._auth is None:
            self._auth = self._load()
        if self._auth.status == NEEDS_REINSTALL:
            raise PortalNeedsReinstall(f"portal {self.portal_id} must be reinstalled")
        return self._auth

    def _flag_reinstall(self, reason: CrmError) -> PortalNeedsReinstall:
        error = self.tokens.flag_reinstall(reason)
        if self._auth is not None:
            self._auth.status = NEEDS_REINSTALL
        return error

    @staticmethod
    def _describe_refusal(reason: CrmError) -> str:
        detail = f"Bitrix24 refused the app's authorisation ({reason.code or type(reason).__name__})"
        if reason.description:
            detail += f": {reason.description}"
        return detail + "; open the app in Bitrix24 or reinstall it."

    # ---- token refresh (app.crm.oauth.TokenKeeper)

    def _refresh(self, failed_token: str) -> None:
        """Get a working access token after `failed_token` expired: exactly one refresh across processes."""
        try:
            portal = self.tokens.refresh(failed_token)
        except PortalNeedsReinstall:
            if self._auth is not None:
                self._auth.status = NEEDS_REINSTALL
            raise
        self._auth = self._auth_from(portal)

    def _refresh_portal(self, portal: Portal) -> dict[str, Any]:
        return self._oauth_refresh(portal.refresh_token or "")

    def _oauth_refresh(self, refresh_token: str) -> dict[str, Any]:
        config = self.app.config
        if not refresh_token:
            raise InvalidGrant("no refresh token stored")
        server = config["B24_OAUTH_SERVER"].rstrip("/")
        url = require_same_origin(server + "/oauth/token/", server, what="the client secret and refresh token")
        try:
            response = requests.get(
                url,
                allow_redirects=False,
                params={
                    "grant_type": "refresh_token",
                    "client_id": config["B24_CLIENT_ID"],
                    "client_secret": config["B24_CLIENT_SECRET"],
                    "refresh_token": refresh_token,
                },
                timeout=(10, min(self.timeout, max(5.0, self.lock_seconds - 5))),
            )
        except requests.RequestException as error:
            raise CrmUnavailable(f"OAuth server unreachable: {type(error).__name__}") from error
        try:
            answer = response.json()
        except ValueError as error:
            raise CrmUnavailable("OAuth server answered without JSON", http_status=response.status_code) from error
        if not isinstance(answer, dict):
            raise CrmUnavailable("OAuth server answered with an unexpected shape", http_status=response.status_code)
        if answer.get("error") or response.status_code >= 400:
            raise error_for(
                str(answer.get("error") or ""), str(answer.get("error_description") or ""), response.status_code
            )
        if not answer.get("access_token") or not answer.get("refresh_token"):
            raise InvalidClient("OAuth server answered without tokens", http_status=response.status_code)
        return answer

    def _store_tokens(self, portal: Portal, answer: Mapping[str, Any]) -> None:
        member_id = answer.get("member_id")
        if member_id and str(member_id) != portal.external_id:
            raise CrmError("OAuth refresh answered for another portal")
        portal.access_token = str(answer["access_token"])
        portal.refresh_token = str(answer["refresh_token"])
        if answer.get("expires"):
            portal.token_expires_at = datetime.fromtimestamp(int(answer["expires"]), UTC)
        else:
            portal.token_expires_at = datetime.now(UTC) + timedelta(seconds=int(answer.get("expires_in") or 3600))
        # The configured OAuth server is trusted to say where the portal lives now (a domain change), but
        # only a clean https origin is taken; anything else keeps the REST base we had.
        endpoint = str(answer.get("client_endpoint") or "")
        origin = origin_of(endpoint)
        if origin is None:
            if endpoint:
                log.warning("bitrix24 refresh named a REST endpoint that is not plain https; kept ours")
            return
        endpoint = endpoint if endpoint.endswith("/") else endpoint + "/"
        if endpoint != portal.rest_base:
            portal.rest_base = endpoint
            portal.domain = origin[1]

    # ---- the request loop

    def _backoff(self, attempt: int, error: Bitrix24Throttled) -> float | None:
        """Seconds to sleep before retry number `attempt` (1-based), or None to give up."""
        return retry_delay(
            attempt,
            error.retry_after,
            attempts=self.retry_attempts,
            base_delay=self.retry_base_delay,
            max_delay=self.retry_max_delay,
        )

    def _send(self, auth: _PortalAuth, method: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """One HTTP request after a rate-limiter slot; SDK errors become CrmErrors."""
        if self._bucket is None:
            self._load()
        assert self._bucket is not None
        # What b24pysdk's call_method calls for an OAuth token: https://{domain}/rest/{method}.json with
        # the token as `auth` in the JSON body; on the verified REST base's origin, checked anyway.
        url = require_same_origin(f"https://{auth.domain}/rest/{method}.json", auth.rest_base, what="access tokens")
        session = self._http(auth)
        limiter_for(self.app).acquire(portal_key(self.portal_id), self._bucket)
        self.requests_sent += 1
        try:
            return _SessionRequester(
                url,
                session=session,
                params={**(params or {}), "auth": auth.access_token},
                timeout=(min(10.0, self.timeout), self.timeout),
                max_retries=1,
            ).call()
        except BitrixAPIError as error:
            raise self._api_error(error) from error
        except BitrixResponse302JSONDecodeError as error:
            raise Bitrix24Error(
                f"portal moved to {error.new_domain or 'another address'}; reopen the app to update it",
                code="PORTAL_MOVED",
                http_status=302,
            ) from error
        except BitrixResponseJSONDecodeError as error:
            raise CrmUnavailable("Bitrix24 answered without JSON", http_status=error.status_code) from error
        except BitrixRequestError as error:
            sessions.discard(SESSION_KIND, self.portal_id, session)
            raise CrmUnavailable(f"Bitrix24 unreachable: {type(error).__name__}") from error

    def _http(self, auth: _PortalAuth) -> OriginSession:
        """This process's keep-alive session for the portal, bound to its verified REST origin."""
        return sessions.get(SESSION_KIND, self.portal_id, auth.rest_base)

    @staticmethod
    def _api_error(error: BitrixAPIError) -> CrmError:
        mapped = error_for(error.error, error.error_description, error.status_code)
        if isinstance(mapped, OperationTimeLimit):
            body = error.json_response if isinstance(error.json_response, dict) else {}
            reset_at = (
                (body.get("time") or {}).get("operating_reset_at") if isinstance(body.get("time"), dict) else None
            )
            if reset_at:
                mapped.retry_after = max(0.0, float(reset_at) - time.time())
        return mapped

    def call_full(self, method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Call a method; returns the whole answer (``result``, ``total``, ``next``, ``time``)."""
        auth = self._current()
        refreshed = False
        attempt = 0
        while True:
            try:
                return self._send(auth, method, params)
            except ExpiredToken:
                if refreshed:
                    raise
                self._refresh(auth.access_token)
                auth = self._current()
                refreshed = True
            except (InvalidToken, NoAuthFound) as error:
                raise self._flag_reinstall(error) from error
            except (QueryLimitExceeded, OperationTimeLimit) as error:
                attempt += 1
                delay = self._backoff(attempt, error)
                if delay is None:
                    raise
                log.info(
                    "bitrix24 throttled, retrying",
                    extra={"portal_id": self.portal_id, "method": method, "code": error.code, "delay": round(delay, 2)},
                )
                time.sleep(delay)

    def download(self, url: str) -> requests.Response:
        """GET a call recording on the portal with the app's token (streamed; the caller closes the response).

        The address comes from CRM data, so it is checked before our token goes anywhere: the verified
        portal origin only (app.crm.hosts), a recording path only (RECORDING_PATHS), and redirects are
        not followed blindly: each hop is checked the same way, at most MAX_RECORDING_REDIRECTS of them.
        The answer must be audio (see `audio_type`). Refusals raise ForeignHost or NotARecording.
        """
        auth = self._current()
        target = url
        for _hop in range(MAX_RECORDING_REDIRECTS + 1):
            target = self._recording_target(target, auth)
            session = self._http(auth)
            limiter_for(self.app).acquire(portal_key(self.portal_id), self._bucket or bucket_for({}, self.app))
            try:
                response = session.get(
                    target, params={"auth": auth.access_token}, stream=True, timeout=self.timeout, allow_redirects=False
                )
            except requests.RequestException as error:
                sessions.discard(SESSION_KIND, self.portal_id, session)
                raise CrmUnavailable(f"Bitrix24 unreachable: {type(error).__name__}") from error
            if response.is_redirect:
                location = response.headers.get("Location", "")
                response.close()
                target = urljoin(target, location)
                continue
            if response.status_code != 200:
                response.close()
                if response.status_code == 404:
                    raise NotFound("the recording file is gone", code="NOT_FOUND", http_status=404)
                raise CrmUnavailable("Bitrix24 did not serve the file", http_status=response.status_code)
            if audio_type(response) is None:
                response.close()
                raise NotARecording("the portal did not answer with an audio file")
            return response
        raise NotARecording(f"the recording link redirects more than {MAX_RECORDING_REDIRECTS} times")

    @staticmethod
    def _recording_target(url: str, auth: _PortalAuth) -> str:
        """`url` when our token may be sent there for a recording: the verified origin and a recording path."""
        try:
            require_same_origin(url, auth.rest_base, what="access tokens")
        except ForeignHost as error:
            raise ForeignHost(f"the recording is not stored on the portal: {error.description}") from error
        if not recording_path(url):
            raise NotARecording("the link is not a Bitrix24 recording address")
        parts = urlsplit(url)
        # Rebuilt on the verified origin: the request connects to exactly the host and port we checked.
        query = f"?{parts.query}" if parts.query else ""
        return f"https://{auth.domain}{parts.path}{query}"

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Call a method; returns its ``result``."""
        return self.call_full(method, params).get("result")

    # ---- batch

    def batch(self, commands: Mapping[str, tuple[str, Mapping[str, Any] | None]], halt: bool = False) -> BatchResult:
        """Run commands in batches of at most 50 (one request each, in order).

        ``$result[key]`` references work only between commands of the same chunk of 50.
        With ``halt`` the remaining chunks are skipped after the first failed command.
        """
        merged = BatchResult()
        items = list(commands.items())
        for start in range(0, len(items), BATCH_LIMIT):
            chunk = items[start : start + BATCH_LIMIT]
            full = self.call_full(
                "batch",
                {
                    "halt": 1 if halt else 0,
                    "cmd": {key: build_command(method, params) for key, (method, params) in chunk},
                },
            )
            answer = full.get("result")
            merged.merge(answer if isinstance(answer, dict) else {})
            merged.note_time(full.get("time"))
            if halt and merged.result_error:
                break
        return merged

    # ---- listing

    def iter_list(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        id_field: str = "ID",
        result_key: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Stream every row of a list method, oldest id first, one fast page per request.

        Uses the documented fast scan (``order {ID: ASC}``, ``filter {'>ID': last}``, ``start=-1``: no
        COUNT, no offset) and stops at the first page with fewer than 50 rows.
        """
        last = start_after(params, id_field)
        while True:
            answer = self.call_full(method, page_params(params, id_field, last, -1))
            rows = result_rows(answer.get("result"), result_key)
            yield from rows
            if len(rows) < PAGE_SIZE:
                return
            last = max(last, id_of(rows[-1], id_field))

    def iter_list_batched(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        id_field: str = "ID",
        result_key: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Stream every row like `iter_list`, packing up to 50 list pages into each batch request.

        Approach: the first page is fetched alone with ``start=0`` so Bitrix24 reports ``total``
        (the one COUNT of the scan). The rest is planned from that count: each batch holds
        ``min(50, pages left)`` commands chained by id, page k filtering
        ``'>ID': $result[p{k-1}][49][ID]`` (the last id of the page before it, resolved by Bitrix24
        inside the batch). Pages run in order inside a batch, so every page starts right after the
        previous one: no gaps, no overlaps. A chain only breaks after a short page, which ends the
        scan; whatever follows it in that batch is ignored, and rows are also de-duplicated by id.
        Each batch plans one page more than the count, which confirms the end in the same request;
        if rows were added during the scan, a last full page simply leads to another batch.
        Requests: about ``1 + ceil(pages / 50)``, i.e. the floor ``pages / 50`` plus one; within
        10 % of the floor from 10 batches (500 pages) on. ID windows (``>=ID a, <ID a+50`` side by
        side) were rejected: filtered scans (modified since, open only) hit mostly empty windows.
        """
        last = start_after(params, id_field)
        first = self.call_full(method, page_params(params, id_field, last, 0))
        rows = result_rows(first.get("result"), result_key)
        yield from rows
        if len(rows) < PAGE_SIZE:
            return
        row_key = id_key(rows[-1], id_field)
        last = max(last, int(rows[-1][row_key]))
        remaining = max(0, int(first.get("total") or 0) - len(rows))
        path = f"[{result_key}]" if result_key else ""
        while True:
            # One page more than counted: it confirms the end (or picks up rows added meanwhile).
            count = min(BATCH_LIMIT, math.ceil(remaining / PAGE_SIZE) + 1)
            commands: dict[str, tuple[str, Mapping[str, Any] | None]] = {}
            for k in range(count):
                after: int | str = last if k == 0 else f"$result[p{k - 1}]{path}[{PAGE_SIZE - 1}][{row_key}]"
                commands[f"p{k}"] = (method, page_params(params, id_field, after, -1))
            result = self.batch(commands)
            for k in range(count):
                page = result_rows(result.get(f"p{k}"), result_key)
                for row in page:
                    row_id = int(row[row_key])
                    if row_id > last:
                        last = row_id
                        yield row
                if len(page) < PAGE_SIZE:
                    return
                remaining = max(0, remaining - len(page))

    def iter_streams_batched(self, streams: Sequence[ListStream]) -> Iterator[tuple[str, dict[str, Any]]]:
        """Stream several list methods at once, packing pages of all of them into shared batches.

        Yields ``(stream name, row)``; rows of a stream come oldest id first. Streams run in phases:
        no row of a stream is yielded before every stream of an earlier phase has ended, so a
        caller can, say, read every task before the first deal. Pages of a later phase are only
        requested in a batch where the earlier phases are planned to end, so at most one batch of
        rows is ever held back.

        The first request is one batch holding, per stream, a first page with ``start=0`` (its
        ``total`` is the scan's only COUNT) and chained fast pages after it (``'>ID':
        $result[prev][49][ID]``, ``start=-1``) sharing the 50 commands. From the counts, every
        later batch gets exactly the pages still needed (plus one page per stream that confirms its
        end) across all streams, 50 to a request. So the whole scan costs about
        ``ceil((pages + streams) / 50)`` requests against a floor of ``pages / 50``; commands past a
        short page (a chain that ended early) are ignored, and rows are de-duplicated by id.
        """
        states = [StreamState(stream, start_after(stream.params, stream.id_field)) for stream in streams]
        held: list[tuple[str, dict[str, Any]]] = []
        first = True
        while any(not state.done for state in states):
            plan = plan_batch(states, first)
            commands: dict[str, tuple[str, Mapping[str, Any] | None]] = {}
            for state, count in plan:
                stream = state.stream
                path = f"[{stream.result_key}]" if stream.result_key else ""
                for k in range(count):
                    key = f"{stream.name}{state.issued + k}"
                    if k == 0:
                        after: int | str = state.last
                    else:
                        after = f"$result[{stream.name}{state.issued + k - 1}]{path}[{PAGE_SIZE - 1}][{stream.row_key}]"
                    start = 0 if first and k == 0 else -1
                    commands[key] = (stream.method, page_params(stream.params, stream.id_field, after, start))
            result = self.batch(commands)
            for state, count in plan:
                stream = state.stream
                for k in range(count):
                    if state.done:
                        continue  # the chain ended on a short page; the rest of it is void
                    key = f"{stream.name}{state.issued + k}"
                    page = result_rows(result.get(key), stream.result_key)
                    if first and k == 0:
                        state.remaining = max(0, int(result.result_total.get(key, len(page))) - len(page))
                    else:
                        state.remaining = max(0, state.remaining - len(page))
                    for row in page:
                        row_id = int(row[stream.row_key])
                        if row_id > state.last:
                            state.last = row_id
                            held.append((stream.name, row))
                    if len(page) < PAGE_SIZE:
                        state.done = True
                state.issued += count
            first = False
            released = [name for name, ready in release_streams(states).items() if ready]
            if released:
                keep: list[tuple[str, dict[str, Any]]] = []
                for name, row in held:
                    if name in released:
                        yield name, row
                    else:
                        keep.append((name, row))
                held = keep

    def iter_pages(
        self, method: str, params: Mapping[str, Any] | None = None, *, result_key: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Stream rows of a method that only pages by ``start``/``next`` (user.get, department.get)."""
        start = 0
        while True:
            answer = self.call_full(method, {**(params or {}), "start": start})
            yield from result_rows(answer.get("result"), result_key)
            if answer.get("next") is None:
                return
            start = int(answer["next"])
