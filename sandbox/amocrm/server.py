"""The amoCRM sandbox over HTTP: API v4 (hal+json / problem+json) and the OAuth token endpoint."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import responses
from flask import Flask, Response, request
from qs_codec import DecodeOptions, decode

from sandbox.amocrm import api
from sandbox.amocrm.account import RECORDING_HOST, AmoSandbox, ApiError
from sandbox.mount import _callback

_QUERY = DecodeOptions(depth=8, list_limit=300, parameter_limit=2000)


def _answer(status: int, body: Any, error: bool = False) -> Response:
    if status == 204 or body is None:
        return Response(status=204)
    if isinstance(body, str):
        return Response(body, status=status, mimetype="text/html")
    mimetype = "application/problem+json" if error else "application/hal+json"
    return Response(json.dumps(body, ensure_ascii=False), status=status, mimetype=mimetype)


def _body() -> Any:
    raw = request.get_data(cache=True, as_text=True)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise ApiError(
            400, {"title": "Bad Request", "type": "https://httpstatus.es/400", "status": 400, "detail": "Invalid JSON"}
        ) from None


def create_amo_app(sandbox: AmoSandbox) -> Flask:
    """The WSGI app; the account is chosen by the Host header, the user by the Bearer token."""
    app = Flask("sandbox.amocrm")

    @app.route("/oauth2/access_token", methods=["POST"])
    def token() -> Response:
        if sandbox.token_delay:
            time.sleep(sandbox.token_delay)
        try:
            body = _body()
            return _answer(200, sandbox.token_endpoint(request.host, body if isinstance(body, dict) else {}))
        except ApiError as error:
            return _answer(error.status, error.body, error=True)

    @app.route("/api/v4/<path:rest>", methods=["GET", "POST", "PATCH", "DELETE"])
    def api_v4(rest: str) -> Response:
        try:
            query = decode(request.query_string.decode("utf-8", "replace"), _QUERY)
            status, body = api.handle(
                sandbox,
                request.host,
                request.headers.get("Authorization", ""),
                request.method,
                f"/api/v4/{rest}",
                query if isinstance(query, dict) else {},
                _body(),
            )
        except ApiError as error:
            return _answer(error.status, error.body, error=True)
        return _answer(status, body)

    @app.route("/recordings/<name>", methods=["GET"])
    def recording(name: str) -> Response:
        """A call recording: on an account's host for its own users' tokens only, on the telephony
        provider's host (RECORDING_HOST) by its unguessable link alone."""
        url = f"https://{request.host}/recordings/{name}"
        if request.host != RECORDING_HOST:
            try:
                with sandbox.lock:
                    sandbox.authenticate(request.host, request.headers.get("Authorization", ""))
            except ApiError as error:
                return _answer(error.status, error.body, error=True)
        data = sandbox.recordings.get(url)
        if data is None:
            return Response("not found", status=404, mimetype="text/plain")
        return Response(data, status=200, mimetype="audio/mpeg")

    @app.errorhandler(404)
    def unknown(_error: Exception) -> Response:
        return _answer(404, {"title": "Not Found", "type": "https://httpstatus.es/404", "status": 404}, error=True)

    return app


def mount_amo_responses(
    sandbox: AmoSandbox, mock: responses.RequestsMock, *, hosts: Iterable[str] | None = None
) -> None:
    """Serve https requests to the accounts' hosts from the sandbox, in-process."""
    names = set(hosts or []) or {account.domain for account in sandbox.accounts.values()} | {RECORDING_HOST}
    pattern = re.compile(r"https://(?:" + "|".join(re.escape(h) for h in sorted(names)) + r")(?:/.*)?$")
    callback = _callback(create_amo_app(sandbox))
    for method in ("GET", "POST", "PATCH", "DELETE"):
        mock.add_callback(method, pattern, callback=callback)


@contextmanager
def responses_amo(
    sandbox: AmoSandbox, *, passthru: Iterable[str] = ("http://127.0.0.1", "http://localhost")
) -> Iterator[responses.RequestsMock]:
    """A `responses` mock with the amoCRM sandbox mounted."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_amo_responses(sandbox, mock)
        for prefix in passthru:
            mock.add_passthru(prefix)
        yield mock
