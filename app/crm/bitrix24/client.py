"""Bitrix24: the REST client (on the official b24pysdk) and the CrmClient adapter.

`Bitrix24Rest` owns everything about talking to one portal:

* every request first takes a slot from the shared per-portal rate limiter (app.crm.ratelimit);
* requests go through ``b24pysdk.api.callers.call_method`` with ``max_retries=1``, so the SDK neither
  retries 503s nor refreshes tokens itself (its refresh uses a hard-coded OAuth host and has no
  cross-process lock); we do both here;
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

import hashlib
import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl, unquote, urljoin, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import qs_codec
import requests
import sqlalchemy as sa
from b24pysdk.api.callers import call_method
from b24pysdk.errors import (
    BitrixAPIError,
    BitrixRequestError,
    BitrixResponse302JSONDecodeError,
    BitrixResponseJSONDecodeError,
)
from flask import Flask, current_app
from redis.exceptions import LockError
from redis.exceptions import RedisError as _RedisError
from sqlalchemy.orm import Session

from app.core.db import db
from app.core.models import Portal
from app.core.queue import get_redis
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
from app.crm.port import (
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
from app.crm.ratelimit import Bucket, bucket_for, limiter_for, portal_key

log = logging.getLogger(__name__)

PAGE_SIZE = 50
BATCH_LIMIT = 50
NEEDS_REINSTALL = "needs_reinstall"
REFRESH_LOCK_KEY = "rc:lock:b24-refresh:{portal_id}"
DEAL_ENTITY_TYPE_ID = 2
CALL_ACTIVITY_TYPE_ID = 2
TASK_COMPLETED = "5"
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


# ---------------------------------------------------------------- helpers


def build_command(method: str, params: Mapping[str, Any] | None = None) -> str:
    """A batch ``cmd`` value: ``method?`` plus the parameters as a PHP-bracket query string."""
    if not params:
        return method
    return f"{method}?{qs_codec.encode(dict(params), qs_codec.EncodeOptions(skip_nulls=True))}"


def notice_tag(key: str) -> str:
    """The im.notify TAG for a notice key: short, unique per key, recognisably ours."""
    return "RC|" + hashlib.sha1(key.encode()).hexdigest()[:32]  # noqa: S324 - a tag, not a secret


def _as_map(value: Any) -> dict[str, Any]:
    """Bitrix24 sends empty maps as ``[]`` and maps with keys 0..n-1 as lists; make both dicts."""
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        return {str(index): item for index, item in enumerate(value)}
    return {}


def _rows(result: Any, result_key: str | None) -> list[dict[str, Any]]:
    """The rows of a list method's ``result`` (some methods wrap them: tasks, items, categories)."""
    if result_key is not None:
        result = result.get(result_key) if isinstance(result, dict) else None
    if isinstance(result, dict):
        return list(result.values())
    return list(result or [])


def _row_key(row: Mapping[str, Any], id_field: str) -> str:
    """The key holding the id in a row (crm.* use "ID", tasks and crm.item use "id")."""
    for candidate in (id_field, id_field.lower(), id_field.upper()):
        if candidate in row:
            return candidate
    raise CrmError(f"list row without {id_field!r}")


def _row_id(row: Mapping[str, Any], id_field: str) -> int:
    return int(row[_row_key(row, id_field)])


@dataclass
class BatchResult:
    """The merged answer of one or more batch requests, keyed like the commands."""

    result: dict[str, Any] = field(default_factory=dict)
    result_error: dict[str, dict[str, Any]] = field(default_factory=dict)
    result_total: dict[str, int] = field(default_factory=dict)
    result_next: dict[str, int] = field(default_factory=dict)
    result_time: dict[str, Any] = field(default_factory=dict)

    def merge(self, payload: Mapping[str, Any]) -> None:
        """Add one batch answer's ``result`` object."""
        self.result.update(_as_map(payload.get("result")))
        self.result_error.update(_as_map(payload.get("result_error")))
        self.result_total.update({k: int(v) for k, v in _as_map(payload.get("result_total")).items()})
        self.result_next.update({k: int(v) for k, v in _as_map(payload.get("result_next")).items()})
        self.result_time.update(_as_map(payload.get("result_time")))

    def error(self, key: str) -> CrmError | None:
        """The error of one command, as an exception, or None when it succeeded."""
        raw = self.result_error.get(key)
        if raw is None:
            return None
        if isinstance(raw, Mapping):
            return error_for(str(raw.get("error") or ""), str(raw.get("error_description") or ""))
        return error_for("", str(raw))

    def errors(self) -> dict[str, CrmError]:
        """Every failed command's error."""
        return {key: err for key in self.result_error if (err := self.error(key)) is not None}

    def get(self, key: str) -> Any:
        """The result of one command; raises its error if it failed."""
        err = self.error(key)
        if err is not None:
            raise err
        if key not in self.result:
            raise CrmError(f"batch command {key!r} has no result")
        return self.result[key]


@dataclass(frozen=True)
class ListStream:
    """One list method read by `Bitrix24Rest.iter_streams_batched`.

    `name` prefixes the batch keys (letters only); `row_key` is the id key in the answer rows
    ("ID" for crm.*, "id" for tasks); streams of a lower `phase` end before a higher one yields.
    """

    name: str
    method: str
    params: Mapping[str, Any]
    id_field: str = "ID"
    row_key: str = "ID"
    result_key: str | None = None
    phase: int = 0


@dataclass
class _StreamState:
    stream: ListStream
    last: int
    issued: int = 0
    remaining: int = 0
    done: bool = False


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
        self._auth: _PortalAuth | None = None
        self._bucket: Bucket | None = None
        self.requests_sent = 0

    # ---- portal state, always through short sessions of our own

    def _session(self) -> Session:
        return Session(db.engine, expire_on_commit=False)

    def _load(self) -> _PortalAuth:
        with self._session() as session:
            portal = session.get(Portal, self.portal_id)
            if portal is None:
                raise CrmError(f"portal {self.portal_id} does not exist")
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
        detail = f"Bitrix24 refused the app's authorisation ({reason.code or type(reason).__name__})"
        if reason.description:
            detail += f": {reason.description}"
        detail += "; open the app in Bitrix24 or reinstall it."
        with self._session() as session, session.begin():
            session.execute(
                sa.update(Portal)
                .where(Portal.id == self.portal_id)
                .values(status=NEEDS_REINSTALL, status_detail=detail)
            )
        if self._auth is not None:
            self._auth.status = NEEDS_REINSTALL
        log.warning("bitrix24 portal needs reinstall", extra={"portal_id": self.portal_id, "reason": reason.code})
        error = PortalNeedsReinstall(detail)
        error.__cause__ = reason
        return error

    # ---- token refresh

    def _refresh(self, failed_token: str) -> None:
        """Get a working access token after `failed_token` expired: exactly one refresh across processes."""
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
                portal = session.get(Portal, self.portal_id)
                if portal is None:
                    raise CrmError(f"portal {self.portal_id} does not exist")
                if portal.status == NEEDS_REINSTALL:
                    self._auth = self._auth_from(portal)
                    raise PortalNeedsReinstall(f"portal {self.portal_id} must be reinstalled")
                if portal.access_token and portal.access_token != failed_token:
                    # Another worker refreshed while we waited for the lock.
                    self._auth = self._auth_from(portal)
                    return
                try:
                    answer = self._oauth_refresh(portal.refresh_token or "")
                except InvalidGrant as error:
                    refused = error
                else:
                    self._store_tokens(portal, answer)
                    self._auth = self._auth_from(portal)
            if refused is not None:
                raise self._flag_reinstall(refused)
            log.info("bitrix24 token refreshed", extra={"portal_id": self.portal_id})
        finally:
            try:
                lock.release()
            except LockError:
                log.warning("bitrix24 refresh lock expired before release", extra={"portal_id": self.portal_id})

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
        if attempt >= self.retry_attempts:
            return None
        if error.retry_after is not None:
            return error.retry_after if error.retry_after <= self.retry_max_delay else None
        delay = min(self.retry_max_delay, self.retry_base_delay * 2 ** (attempt - 1))
        return delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not cryptography

    def _send(self, auth: _PortalAuth, method: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """One HTTP request after a rate-limiter slot; SDK errors become CrmErrors."""
        if self._bucket is None:
            self._load()
        assert self._bucket is not None
        # b24pysdk calls https://{domain}/rest/{method}.json: the verified REST base's origin, checked anyway.
        require_same_origin(f"https://{auth.domain}/rest/", auth.rest_base, what="access tokens")
        limiter_for(self.app).acquire(portal_key(self.portal_id), self._bucket)
        self.requests_sent += 1
        try:
            return call_method(
                domain=auth.domain,
                auth_token=auth.access_token,
                is_webhook=False,
                api_method=method,
                params=dict(params or {}),
                timeout=(min(10.0, self.timeout), self.timeout),
                max_retries=1,
            )
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
            raise CrmUnavailable(f"Bitrix24 unreachable: {type(error).__name__}") from error

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
            limiter_for(self.app).acquire(portal_key(self.portal_id), self._bucket or bucket_for({}, self.app))
            try:
                response = requests.get(
                    target, params={"auth": auth.access_token}, stream=True, timeout=self.timeout, allow_redirects=False
                )
            except requests.RequestException as error:
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
            answer = self.call(
                "batch",
                {
                    "halt": 1 if halt else 0,
                    "cmd": {key: build_command(method, params) for key, (method, params) in chunk},
                },
            )
            merged.merge(answer if isinstance(answer, dict) else {})
            if halt and merged.result_error:
                break
        return merged

    # ---- listing

    @staticmethod
    def _page_params(params: Mapping[str, Any] | None, id_field: str, after: int | str, start: int) -> dict[str, Any]:
        page = {k: v for k, v in (params or {}).items() if k not in ("filter", "order", "start")}
        base_filter = dict((params or {}).get("filter") or {})
        base_filter.pop(f">{id_field}", None)
        page["filter"] = {**base_filter, f">{id_field}": after}
        page["order"] = {id_field: "ASC"}
        page["start"] = start
        select = page.get("select")
        if select and "*" not in select and id_field not in select:
            page["select"] = [*select, id_field]
        return page

    @staticmethod
    def _start_after(params: Mapping[str, Any] | None, id_field: str) -> int:
        return int(((params or {}).get("filter") or {}).get(f">{id_field}") or 0)

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
        last = self._start_after(params, id_field)
        while True:
            answer = self.call_full(method, self._page_params(params, id_field, last, -1))
            rows = _rows(answer.get("result"), result_key)
            yield from rows
            if len(rows) < PAGE_SIZE:
                return
            last = max(last, _row_id(rows[-1], id_field))

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
        last = self._start_after(params, id_field)
        first = self.call_full(method, self._page_params(params, id_field, last, 0))
        rows = _rows(first.get("result"), result_key)
        yield from rows
        if len(rows) < PAGE_SIZE:
            return
        row_key = _row_key(rows[-1], id_field)
        last = max(last, int(rows[-1][row_key]))
        remaining = max(0, int(first.get("total") or 0) - len(rows))
        path = f"[{result_key}]" if result_key else ""
        while True:
            # One page more than counted: it confirms the end (or picks up rows added meanwhile).
            count = min(BATCH_LIMIT, math.ceil(remaining / PAGE_SIZE) + 1)
            commands: dict[str, tuple[str, Mapping[str, Any] | None]] = {}
            for k in range(count):
                after: int | str = last if k == 0 else f"$result[p{k - 1}]{path}[{PAGE_SIZE - 1}][{row_key}]"
                commands[f"p{k}"] = (method, self._page_params(params, id_field, after, -1))
            result = self.batch(commands)
            for k in range(count):
                page = _rows(result.get(f"p{k}"), result_key)
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
        states = [_StreamState(stream, self._start_after(stream.params, stream.id_field)) for stream in streams]
        held: list[tuple[str, dict[str, Any]]] = []
        first = True
        while any(not state.done for state in states):
            plan = self._plan_batch(states, first)
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
                    commands[key] = (stream.method, self._page_params(stream.params, stream.id_field, after, start))
            result = self.batch(commands)
            for state, count in plan:
                stream = state.stream
                for k in range(count):
                    if state.done:
                        continue  # the chain ended on a short page; the rest of it is void
                    key = f"{stream.name}{state.issued + k}"
                    page = _rows(result.get(key), stream.result_key)
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
            released = [name for name, ready in self._release(states).items() if ready]
            if released:
                keep: list[tuple[str, dict[str, Any]]] = []
                for name, row in held:
                    if name in released:
                        yield name, row
                    else:
                        keep.append((name, row))
                held = keep

    @staticmethod
    def _release(states: Sequence[_StreamState]) -> dict[str, bool]:
        """Which streams may hand out their rows: those whose earlier phases have all ended."""
        return {
            state.stream.name: all(other.done for other in states if other.stream.phase < state.stream.phase)
            for state in states
        }

    @staticmethod
    def _plan_batch(states: Sequence[_StreamState], first: bool) -> list[tuple[_StreamState, int]]:
        """How many pages of each stream go into the next batch (at most 50 in all)."""
        active = [state for state in states if not state.done]
        if first:
            # Nothing is counted yet: every stream gets its counting page, the rest is shared.
            share, extra = divmod(BATCH_LIMIT, len(active))
            return [(state, share + (1 if index < extra else 0)) for index, state in enumerate(active)]
        plan: list[tuple[_StreamState, int]] = []
        room = BATCH_LIMIT
        for phase in sorted({state.stream.phase for state in active}):
            ending = True
            for state in (s for s in active if s.stream.phase == phase):
                need = state.remaining // PAGE_SIZE + 1
                count = min(need, room)
                if count:
                    plan.append((state, count))
                    room -= count
                ending = ending and count == need
            if not ending or not room:
                break
        return plan

    def iter_pages(
        self, method: str, params: Mapping[str, Any] | None = None, *, result_key: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Stream rows of a method that only pages by ``start``/``next`` (user.get, department.get)."""
        start = 0
        while True:
            answer = self.call_full(method, {**(params or {}), "start": start})
            yield from _rows(answer.get("result"), result_key)
            if answer.get("next") is None:
                return
            start = int(answer["next"])


# ---------------------------------------------------------------- value decoding


_SEMANTICS: dict[str, StageSemantics] = {"P": "process", "S": "success", "F": "failure"}


def _text(value: Any) -> str:
    if value is None or value is False:
        return ""
    if isinstance(value, list):
        return _text(value[0]) if value else ""
    return str(value)


def _optional_id(value: Any) -> str | None:
    text = _text(value)
    return text if text and text != "0" else None


def parse_decimal(value: Any) -> Decimal | None:
    """A Bitrix24 number or money value ("1000.00", "100|RUB") as a Decimal; None when empty."""
    text = _text(value).split("|", 1)[0].strip()
    if not text:
        return None
    try:
        return Decimal(text)
    except InvalidOperation as error:
        raise CrmError(f"not a number: {text!r}") from error


def parse_datetime(value: Any, default_tz: ZoneInfo | None = None) -> datetime | None:
    """An ISO 8601 date-time from Bitrix24 as an aware datetime (naive ones get the portal's zone)."""
    text = _text(value)
    if not text:
        return None
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=default_tz or UTC)
    return parsed


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


# ---------------------------------------------------------------- the adapter


class Bitrix24Crm:
    """The CrmClient port for a Bitrix24 portal."""

    DEAL_SELECT = ("*", "UF_*")

    def __init__(self, portal: Portal, rest: Bitrix24Rest | None = None) -> None:
        self.portal_id = portal.id
        self.rest = rest or Bitrix24Rest(portal.id)
        self.tz = _zone(portal.timezone)
        self.domain = portal.domain
        self.offline_events = bool((portal.settings or {}).get("offline_events"))
        fields = (portal.settings or {}).get("b24_fields") or {}
        self._field: dict[str, str] = {name: str(spec.get("field") or "") for name, spec in fields.items()}
        self._enum: dict[str, dict[str, str]] = {
            name: {str(code): str(item) for code, item in (spec.get("enum") or {}).items()}
            for name, spec in fields.items()
        }
        self._enum_codes: dict[str, dict[str, str]] = {
            name: {item: code for code, item in mapping.items()} for name, mapping in self._enum.items()
        }

    # ---- custom fields

    def _decode_enum(self, name: str, raw: Mapping[str, Any]) -> str | None:
        field_name = self._field.get(name)
        if not field_name:
            return None
        item = _text(raw.get(field_name))
        if not item:
            return None
        code = self._enum_codes.get(name, {}).get(item)
        if code is None:
            log.warning("unknown enum item", extra={"portal_id": self.portal_id, "field": field_name, "item": item})
        return code

    def _encode_enum(self, name: str, code: str) -> str:
        if code == "":
            return ""
        try:
            return self._enum[name][code]
        except KeyError as error:
            raise CrmError(f"{name} code {code!r} is not installed on portal {self.portal_id}") from error

    def _require_field(self, name: str) -> str:
        field_name = self._field.get(name)
        if not field_name:
            raise CrmError(f"custom field {name} is not installed on portal {self.portal_id}")
        return field_name

    # ---- deals

    def deal_from_raw(self, raw: Mapping[str, Any]) -> Deal:
        """Decode a crm.deal.get / crm.deal.list row."""
        comment_field = self._field.get("refusal_comment")
        cpl_field = self._field.get("cpl")
        return Deal(
            id=_text(raw.get("ID")),
            title=_text(raw.get("TITLE")),
            pipeline_id=_text(raw.get("CATEGORY_ID")) or "0",
            stage_id=_text(raw.get("STAGE_ID")),
            stage_semantics=_SEMANTICS.get(_text(raw.get("STAGE_SEMANTIC_ID")), "process"),
            responsible_id=_text(raw.get("ASSIGNED_BY_ID")),
            modified_by_id=_optional_id(raw.get("MODIFY_BY_ID")),
            modified_at=parse_datetime(raw.get("DATE_MODIFY"), self.tz),
            created_at=parse_datetime(raw.get("DATE_CREATE"), self.tz),
            amount=parse_decimal(raw.get("OPPORTUNITY")) or Decimal("0"),
            currency=_text(raw.get("CURRENCY_ID")),
            source_id=_text(raw.get("SOURCE_ID")),
            refusal_reason=self._decode_enum("refusal_reason", raw),
            refusal_comment=_text(raw.get(comment_field)) if comment_field else "",
            qa_verdict=self._decode_enum("qa_verdict", raw),
            cpl=parse_decimal(raw.get(cpl_field)) if cpl_field else None,
            moved_by_id=_optional_id(raw.get("MOVED_BY_ID")),
            moved_at=parse_datetime(raw.get("MOVED_TIME"), self.tz),
            last_activity_at=parse_datetime(raw.get("LAST_ACTIVITY_TIME"), self.tz),
        )

    def get_deal(self, deal_id: str) -> Deal:
        """Re-read one deal."""
        raw = self.rest.call("crm.deal.get", {"id": deal_id})
        if not isinstance(raw, dict) or not raw:
            raise NotFound(f"deal {deal_id} not found", code="")
        return self.deal_from_raw(raw)

    def get_deals(self, deal_ids: Sequence[str]) -> dict[str, Deal]:
        """Many deals: one crm.deal.list per 50 ids, up to 50 lists per batch request."""
        ids = list(dict.fromkeys(str(deal_id) for deal_id in deal_ids))
        commands: dict[str, tuple[str, Mapping[str, Any] | None]] = {
            f"d{n}": (
                "crm.deal.list",
                {"filter": {"@ID": ids[i : i + PAGE_SIZE]}, "select": list(self.DEAL_SELECT), "start": -1},
            )
            for n, i in enumerate(range(0, len(ids), PAGE_SIZE))
        }
        if not commands:
            return {}
        result = self.rest.batch(commands)
        deals: dict[str, Deal] = {}
        for key in commands:
            for raw in _rows(result.get(key), None):
                deal = self.deal_from_raw(raw)
                deals[deal.id] = deal
        return deals

    def deal_update_fields(self, change: DealChange) -> dict[str, Any]:
        """The crm.deal.update ``fields`` for a change (stage within a pipeline included)."""
        fields: dict[str, Any] = {}
        if change.stage_id is not None and change.pipeline_id is None:
            fields["STAGE_ID"] = change.stage_id
        if change.responsible_id is not None:
            fields["ASSIGNED_BY_ID"] = change.responsible_id
        if change.refusal_reason is not None:
            fields[self._require_field("refusal_reason")] = self._encode_enum("refusal_reason", change.refusal_reason)
        if change.refusal_comment is not None:
            fields[self._require_field("refusal_comment")] = change.refusal_comment
        if change.qa_verdict is not None:
            fields[self._require_field("qa_verdict")] = self._encode_enum("qa_verdict", change.qa_verdict)
        return fields

    def _update_commands(self, deal_id: str, change: DealChange) -> dict[str, tuple[str, Mapping[str, Any] | None]]:
        fields = self.deal_update_fields(change)
        commands: dict[str, tuple[str, Mapping[str, Any] | None]] = {}
        if change.pipeline_id is not None:
            item_fields: dict[str, Any] = {"categoryId": change.pipeline_id}
            if change.stage_id is not None:
                item_fields["stageId"] = change.stage_id
            commands["move"] = (
                "crm.item.update",
                {"entityTypeId": DEAL_ENTITY_TYPE_ID, "id": deal_id, "fields": item_fields},
            )
        if fields:
            commands["update"] = ("crm.deal.update", {"id": deal_id, "fields": fields})
        return commands

    def update_deal(self, deal_id: str, change: DealChange) -> None:
        """Write a change: crm.deal.update, plus crm.item.update for a pipeline move (one batch if both)."""
        commands = self._update_commands(deal_id, change)
        if not commands:
            return
        if len(commands) == 1:
            method, params = next(iter(commands.values()))
            self.rest.call(method, params)
            return
        result = self.rest.batch(commands, halt=True)
        for key in commands:
            result.get(key)

    def iter_deals(self, *, modified_since: datetime | None = None, open_only: bool = False) -> Iterator[Deal]:
        """Stream deals oldest id first, 50 pages per request."""
        flt: dict[str, Any] = {}
        if modified_since is not None:
            if modified_since.tzinfo is None:
                raise ValueError("modified_since must be aware")
            flt[">=DATE_MODIFY"] = modified_since.isoformat(timespec="seconds")
        if open_only:
            flt["CLOSED"] = "N"
        params = {"filter": flt, "select": list(self.DEAL_SELECT)}
        for raw in self.rest.iter_list_batched("crm.deal.list", params):
            yield self.deal_from_raw(raw)

    def count_open_deals(self, responsible_id: str, pipeline_id: str) -> int:
        """crm.deal.list with a filter and one selected field: the answer's `total` is the count."""
        answer = self.rest.call_full(
            "crm.deal.list",
            {
                "filter": {"ASSIGNED_BY_ID": responsible_id, "CATEGORY_ID": pipeline_id, "CLOSED": "N"},
                "select": ["ID"],
                "start": 0,
            },
        )
        total = answer.get("total")
        if total is None:
            return len(_rows(answer.get("result"), None))
        return int(total)

    # ---- pipelines

    def list_pipelines(self) -> list[Pipeline]:
        """Funnels (crm.category.list) with their stages (crm.status.list per funnel, one batch)."""
        answer = self.rest.call("crm.category.list", {"entityTypeId": DEAL_ENTITY_TYPE_ID})
        categories = _rows(answer, "categories")
        if not categories:
            categories = [{"id": 0, "name": "", "isDefault": "Y"}]
        commands: dict[str, tuple[str, Mapping[str, Any] | None]] = {}
        for category in categories:
            category_id = _text(category.get("id")) or "0"
            entity_id = "DEAL_STAGE" if category_id == "0" else f"DEAL_STAGE_{category_id}"
            commands[f"c{category_id}"] = (
                "crm.status.list",
                {"order": {"SORT": "ASC"}, "filter": {"ENTITY_ID": entity_id}},
            )
        result = self.rest.batch(commands)
        pipelines = []
        for category in sorted(
            categories, key=lambda c: (int(_text(c.get("sort")) or 0), int(_text(c.get("id")) or 0))
        ):
            category_id = _text(category.get("id")) or "0"
            stages = [self._stage(row, category_id) for row in _rows(result.get(f"c{category_id}"), None)]
            stages.sort(key=lambda stage: stage.sort)
            pipelines.append(
                Pipeline(
                    id=category_id,
                    name=_text(category.get("name")),
                    stages=tuple(stages),
                    is_default=category_id == "0" or _text(category.get("isDefault")) in ("Y", "True", "true", "1"),
                )
            )
        return pipelines

    @staticmethod
    def _stage(row: Mapping[str, Any], pipeline_id: str) -> Stage:
        semantics = _text(row.get("SEMANTICS"))
        extra = row.get("EXTRA") if isinstance(row.get("EXTRA"), dict) else {}
        extra_semantics = _text(extra.get("SEMANTICS"))
        if semantics == "S" or extra_semantics == "success":
            kind: StageSemantics = "success"
        elif semantics == "F" or extra_semantics in ("failure", "apology"):
            kind = "failure"
        else:
            kind = "process"
        return Stage(
            id=_text(row.get("STATUS_ID")),
            pipeline_id=pipeline_id,
            name=_text(row.get("NAME")),
            sort=int(_text(row.get("SORT")) or 0),
            semantics=kind,
        )

    # ---- people

    def list_users(self) -> list[User]:
        """Every employee (user.get pages by 50)."""
        users = []
        for row in self.rest.iter_pages("user.get", {"FILTER": {"USER_TYPE": "employee"}}):
            name = " ".join(part for part in (_text(row.get("NAME")), _text(row.get("LAST_NAME"))) if part)
            departments = row.get("UF_DEPARTMENT") or []
            users.append(
                User(
                    id=_text(row.get("ID")),
                    name=name or _text(row.get("EMAIL")) or _text(row.get("ID")),
                    active=row.get("ACTIVE") in (True, "Y", "true", "1", 1),
                    department_ids=tuple(
                        _text(d) for d in (departments if isinstance(departments, list) else [departments])
                    ),
                )
            )
        return users

    def list_departments(self) -> list[Department]:
        """Every department (department.get)."""
        return [
            Department(
                id=_text(row.get("ID")),
                name=_text(row.get("NAME")),
                head_id=_optional_id(row.get("UF_HEAD")),
                parent_id=_optional_id(row.get("PARENT")),
            )
            for row in self.rest.iter_pages("department.get", {"sort": "ID", "order": "ASC"})
        ]

    OFFLINE_EVENTS = ("ONCRMDEALUPDATE", "ONCRMDEALADD", "ONCRMDEALMOVETOCATEGORY")

    def drain_deal_changes(self, handle: Callable[[list[str]], None]) -> int | None:
        """Drain the offline event queue (where the plan has it): reserve 50, handle, then clear them."""
        if not self.offline_events:
            return None
        drained = 0
        while True:
            answer = self.rest.call(
                "event.offline.get",
                {"filter": {"EVENT_NAME": list(self.OFFLINE_EVENTS)}, "clear": 0, "limit": PAGE_SIZE},
            )
            events = _rows((answer or {}).get("events"), None)
            if not events:
                return drained
            deal_ids = []
            for event in events:
                data = event.get("EVENT_DATA")
                fields = data.get("FIELDS") if isinstance(data, dict) else None
                if isinstance(fields, dict) and fields.get("ID"):
                    deal_ids.append(_text(fields["ID"]))
            handle(sorted(set(deal_ids), key=lambda value: (len(value), value)))
            self.rest.call(
                "event.offline.clear",
                {"process_id": answer["process_id"], "id": [_text(event.get("ID")) for event in events]},
            )
            drained += len(events)
            if len(events) < PAGE_SIZE:
                return drained

    def list_sources(self) -> list[Source]:
        """Lead sources: crm.status.list with ENTITY_ID SOURCE, in SORT order."""
        answer = self.rest.call("crm.status.list", {"order": {"SORT": "ASC"}, "filter": {"ENTITY_ID": "SOURCE"}})
        return [
            Source(id=_text(row.get("STATUS_ID")), name=_text(row.get("NAME")) or _text(row.get("STATUS_ID")))
            for row in _rows(answer, None)
            if _text(row.get("STATUS_ID"))
        ]

    def stage_before(self, deal_id: str, stage_id: str) -> str | None:
        """The stage before the deal last entered `stage_id`, from crm.stagehistory.list (newest first)."""
        answer = self.rest.call(
            "crm.stagehistory.list",
            {
                "entityTypeId": DEAL_ENTITY_TYPE_ID,
                "filter": {"OWNER_ID": deal_id},
                "order": {"ID": "DESC"},
                "select": ["ID", "STAGE_ID", "CREATED_TIME"],
            },
        )
        items = _rows(answer, "items")
        for index, item in enumerate(items):
            if _text(item.get("STAGE_ID")) == stage_id:
                for earlier in items[index + 1 :]:
                    if _text(earlier.get("STAGE_ID")) != stage_id:
                        return _text(earlier.get("STAGE_ID"))
                return None
        return None

    def deal_url(self, deal_id: str) -> str:
        """The deal card on the portal."""
        return f"https://{self.domain}/crm/deal/details/{deal_id}/"

    @staticmethod
    def _notify_params(user_id: str, message: str, key: str) -> dict[str, Any]:
        params: dict[str, Any] = {"USER_ID": user_id, "MESSAGE": message}
        if key:
            # TAG is unique within the app: a notice resent after a lost answer replaces the first one.
            params["TAG"] = notice_tag(key)
        return params

    def notify(self, user_id: str, message: str, key: str = "") -> None:
        """A system notification to a user (im.notify.system.add)."""
        self.rest.call("im.notify.system.add", self._notify_params(user_id, message, key))

    def update_deal_and_notify(
        self, deal_id: str, change: DealChange, notices: Sequence[Notice]
    ) -> list[Exception | None]:
        """The deal write and the notices in one batch request (halted at the first failed command)."""
        update = self._update_commands(deal_id, change)
        commands = dict(update)
        for index, notice in enumerate(notices):
            commands[f"n{index}"] = (
                "im.notify.system.add",
                self._notify_params(notice.user_id, notice.message, notice.key),
            )
        if not commands:
            return []
        result = self.rest.batch(commands, halt=True)
        change_error: Exception | None = None
        for key in update:
            if change_error is None:
                change_error = result.error(key) or (
                    None if key in result.result else CrmError(f"batch command {key!r} has no result")
                )
        outcomes: list[Exception | None] = [change_error]
        for index in range(len(notices)):
            key = f"n{index}"
            if change_error is not None:
                outcomes.append(change_error)
            elif key in result.result:
                outcomes.append(None)
            else:
                outcomes.append(result.error(key) or CrmError(f"batch command {key!r} was not run"))
        return outcomes

    # ---- tasks

    TASK_SELECT = ("ID", "TITLE", "RESPONSIBLE_ID", "CREATED_BY", "DEADLINE", "STATUS", "AUDITORS", "UF_CRM_TASK")

    def create_task(self, task: NewTask) -> str:
        """tasks.task.add linked to the deal; returns the task id."""
        fields: dict[str, Any] = {
            "TITLE": task.title,
            "RESPONSIBLE_ID": task.responsible_id,
            "DEADLINE": task.deadline.isoformat(timespec="seconds"),
            "UF_CRM_TASK": [f"D_{task.deal_id}"],
        }
        if task.description:
            fields["DESCRIPTION"] = task.description
        if task.created_by:
            fields["CREATED_BY"] = task.created_by
        if task.auditor_ids:
            fields["AUDITORS"] = list(task.auditor_ids)
        answer = self.rest.call("tasks.task.add", {"fields": fields})
        created = (answer or {}).get("task") if isinstance(answer, dict) else None
        task_id = _text((created or {}).get("id") or (created or {}).get("ID"))
        if not task_id:
            raise CrmError("tasks.task.add answered without a task id")
        return task_id

    def create_todo(self, todo: NewTodo) -> str:
        """crm.activity.todo.add on the deal; returns the activity id."""
        params: dict[str, Any] = {
            "ownerTypeId": DEAL_ENTITY_TYPE_ID,
            "ownerId": todo.deal_id,
            "deadline": todo.deadline.astimezone(self.tz).isoformat(timespec="seconds"),
            "title": todo.title,
            "responsibleId": todo.responsible_id,
        }
        if todo.description:
            params["description"] = todo.description
        answer = self.rest.call("crm.activity.todo.add", params)
        todo_id = _text(answer.get("id")) if isinstance(answer, dict) else ""
        if not todo_id:
            raise CrmError("crm.activity.todo.add answered without an id")
        return todo_id

    def _task(self, row: Mapping[str, Any], deal_id: str | None) -> Task:
        def pick(camel: str, upper: str) -> Any:
            return row.get(camel, row.get(upper))

        auditors = pick("auditors", "AUDITORS") or []
        return Task(
            id=_text(pick("id", "ID")),
            title=_text(pick("title", "TITLE")),
            responsible_id=_text(pick("responsibleId", "RESPONSIBLE_ID")),
            deal_id=deal_id,
            deadline=parse_datetime(pick("deadline", "DEADLINE"), self.tz),
            is_open=_text(pick("status", "STATUS")) != TASK_COMPLETED,
            created_by=_optional_id(pick("createdBy", "CREATED_BY")),
            auditor_ids=tuple(_text(a) for a in (auditors if isinstance(auditors, list) else [auditors])),
        )

    OPEN_TASK_FILTER: Mapping[str, Any] = {"!REAL_STATUS": int(TASK_COMPLETED)}
    SCAN_TASK_SELECT = (*TASK_SELECT, "SUB_STATUS")
    TO_DO_SELECT = ("ID", "OWNER_ID", "OWNER_TYPE_ID", "TYPE_ID", "SUBJECT", "RESPONSIBLE_ID", "DEADLINE", "AUTHOR_ID")
    SCAN_DEAL_SELECT = (
        "ID", "TITLE", "CATEGORY_ID", "STAGE_ID", "STAGE_SEMANTIC_ID", "ASSIGNED_BY_ID", "MODIFY_BY_ID",
        "DATE_CREATE", "DATE_MODIFY", "MOVED_BY_ID", "MOVED_TIME",
    )  # fmt: skip

    def _open_task(self, row: Mapping[str, Any]) -> Task | None:
        """An open task row of a scan, bound to its first deal (None for tasks bound to no deal)."""
        bindings = row.get("ufCrmTask", row.get("UF_CRM_TASK")) or []
        deal_ids = [b[2:] for b in (bindings if isinstance(bindings, list) else [bindings]) if str(b).startswith("D_")]
        if not deal_ids:
            return None
        task = self._task(row, deal_ids[0])
        sub_status = _text(row.get("subStatus", row.get("SUB_STATUS")))
        overdue = sub_status == "-1" or (task.deadline is not None and task.deadline < datetime.now(UTC))
        return replace(task, overdue=overdue)

    def _todo(self, row: Mapping[str, Any]) -> Task:
        deadline = parse_datetime(row.get("DEADLINE"), self.tz)
        return Task(
            id=_text(row.get("ID")),
            title=_text(row.get("SUBJECT")),
            responsible_id=_text(row.get("RESPONSIBLE_ID")),
            deal_id=_text(row.get("OWNER_ID")),
            deadline=deadline,
            is_open=True,
            created_by=_optional_id(row.get("AUTHOR_ID")),
            kind="todo",
        )

    def open_deal_tasks(self, deal_id: str) -> list[Task]:
        """Open tasks and open to-dos of one deal: one batch request (two list commands)."""
        result = self.rest.batch(
            {
                "t": (
                    "tasks.task.list",
                    {
                        "filter": {"UF_CRM_TASK": f"D_{deal_id}", **self.OPEN_TASK_FILTER},
                        "select": list(self.SCAN_TASK_SELECT),
                        "order": {"ID": "ASC"},
                    },
                ),
                "a": (
                    "crm.activity.list",
                    {
                        "filter": {"OWNER_TYPE_ID": DEAL_ENTITY_TYPE_ID, "OWNER_ID": deal_id, "COMPLETED": "N"},
                        "select": list(self.TO_DO_SELECT),
                        "order": {"ID": "ASC"},
                    },
                ),
            }
        )
        tasks = [task for row in _rows(result.get("t"), "tasks") if (task := self._open_task(row)) is not None]
        return [*tasks, *(replace(self._todo(row), deal_id=deal_id) for row in _rows(result.get("a"), None))]

    def iter_open_work(self) -> Iterator[Task | Deal]:
        """Open tasks bound to deals and open deal to-dos (phase 0), then open deals (phase 1), all
        read together in shared batches of 50 fast list pages."""
        streams = [
            ListStream(
                "t",
                "tasks.task.list",
                {"filter": dict(self.OPEN_TASK_FILTER), "select": list(self.SCAN_TASK_SELECT)},
                row_key="id",
                result_key="tasks",
            ),
            ListStream(
                "a",
                "crm.activity.list",
                {
                    "filter": {"OWNER_TYPE_ID": DEAL_ENTITY_TYPE_ID, "COMPLETED": "N"},
                    "select": list(self.TO_DO_SELECT),
                },
            ),
            ListStream(
                "d",
                "crm.deal.list",
                {"filter": {"CLOSED": "N"}, "select": list(self.SCAN_DEAL_SELECT)},
                phase=1,
            ),
        ]
        for name, row in self.rest.iter_streams_batched(streams):
            if name == "d":
                yield self.deal_from_raw(row)
            elif name == "a":
                if _text(row.get("OWNER_TYPE_ID")) == str(DEAL_ENTITY_TYPE_ID):
                    yield self._todo(row)
            elif (task := self._open_task(row)) is not None:
                yield task

    def notify_many(self, notices: Sequence[tuple[str, str]]) -> None:
        """im.notify.system.add for each notice, 50 to a batch request; fails on the first error."""
        commands: dict[str, tuple[str, Mapping[str, Any] | None]] = {
            f"n{index}": ("im.notify.system.add", {"USER_ID": user_id, "MESSAGE": message})
            for index, (user_id, message) in enumerate(notices)
        }
        if not commands:
            return
        result = self.rest.batch(commands)
        for key in commands:
            result.get(key)

    def list_deal_tasks(self, deal_id: str) -> list[Task]:
        """Tasks bound to the deal (tasks.task.list by UF_CRM_TASK, select always given)."""
        params = {"filter": {"UF_CRM_TASK": f"D_{deal_id}"}, "select": list(self.TASK_SELECT)}
        return [self._task(row, deal_id) for row in self.rest.iter_list("tasks.task.list", params, result_key="tasks")]

    # ---- calls

    CALL_SELECT = (
        "ID",
        "SUBJECT",
        "START_TIME",
        "END_TIME",
        "DIRECTION",
        "RESPONSIBLE_ID",
        "COMMUNICATIONS",
        "FILES",
        "PROVIDER_ID",
        "ORIGIN_ID",
    )

    def list_deal_calls(self, deal_id: str) -> list[Call]:
        """Call activities of the deal with files, joined with telephony statistics for recordings."""
        params = {
            "filter": {"OWNER_TYPE_ID": DEAL_ENTITY_TYPE_ID, "OWNER_ID": deal_id, "TYPE_ID": CALL_ACTIVITY_TYPE_ID},
            "select": list(self.CALL_SELECT),
        }
        activities = list(self.rest.iter_list("crm.activity.list", params))
        if not activities:
            return []
        stats_commands: dict[str, tuple[str, Mapping[str, Any] | None]] = {
            f"a{_text(a.get('ID'))}": ("voximplant.statistic.get", {"FILTER": {"CRM_ACTIVITY_ID": _text(a.get("ID"))}})
            for a in activities
        }
        stats = self.rest.batch(stats_commands)
        calls = []
        for activity in activities:
            activity_id = _text(activity.get("ID"))
            key = f"a{activity_id}"
            stat_rows = [] if stats.error(key) is not None else _rows(stats.result.get(key), None)
            calls.append(self._call(deal_id, activity, stat_rows[0] if stat_rows else {}))
        return calls

    def _call(self, deal_id: str, activity: Mapping[str, Any], stat: Mapping[str, Any]) -> Call:
        started = parse_datetime(stat.get("CALL_START_DATE") or activity.get("START_TIME"), self.tz)
        ended = parse_datetime(activity.get("END_TIME"), self.tz)
        duration = _text(stat.get("CALL_DURATION"))
        if duration.isdigit():
            seconds = int(duration)
        elif started and ended and ended >= started:
            seconds = int((ended - started).total_seconds())
        else:
            seconds = 0
        files = activity.get("FILES") if isinstance(activity.get("FILES"), list) else []
        first_file: Mapping[str, Any] = files[0] if files else {}
        communications = activity.get("COMMUNICATIONS") if isinstance(activity.get("COMMUNICATIONS"), list) else []
        phone = _text(stat.get("PHONE_NUMBER")) or (_text(communications[0].get("VALUE")) if communications else "")
        stat_type = _text(stat.get("CALL_TYPE"))
        incoming = _text(activity.get("DIRECTION")) == "1" if not stat_type else stat_type in ("2", "3")
        return Call(
            id=_text(activity.get("ID")),
            deal_id=deal_id,
            user_id=_optional_id(stat.get("PORTAL_USER_ID") or activity.get("RESPONSIBLE_ID")),
            direction="in" if incoming else "out",
            started_at=started,
            duration_seconds=seconds,
            recording_url=_text(stat.get("CALL_RECORD_URL")) or _text(first_file.get("url")) or None,
            recording_file_id=_text(stat.get("RECORD_FILE_ID")) or _text(first_file.get("id")) or None,
            phone=phone,
        )

    def open_recording(self, call: Call) -> Recording:
        """Stream the recording from the portal (CALL_RECORD_URL or the activity's file)."""
        if not call.recording_url:
            raise NotFound("the call has no recording", code="NOT_FOUND", http_status=404)
        response = self.rest.download(call.recording_url)
        length = response.headers.get("Content-Length")
        return Recording(
            content_type=audio_type(response) or "audio/mpeg",
            chunks=response.iter_content(chunk_size=64 * 1024),
            close=response.close,
            length=int(length) if length and length.isdigit() else None,
        )
