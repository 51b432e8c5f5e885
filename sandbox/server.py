"""The sandbox over HTTP: a Flask WSGI app serving the portals' REST API, the OAuth server and recordings."""

from __future__ import annotations

import io
import json
import math
import struct
import time
import urllib.parse
import wave
from functools import lru_cache
from typing import Any

from flask import Flask, Response, request

from sandbox.rest import decode_params
from sandbox.sandbox import Sandbox, proxy_page
from sandbox.state import RECORDING_PATH


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status=status, mimetype="application/json")


def request_params() -> dict[str, Any]:
    """Parameters from the query string plus a JSON or form (PHP-bracket) body."""
    params = decode_params(request.query_string.decode("utf-8", "replace"))
    raw = request.get_data(cache=True, as_text=True)
    if raw:
        if request.mimetype == "application/json" or raw.lstrip().startswith("{"):
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            if isinstance(body, dict):
                params.update(body)
        else:
            params.update(decode_params(raw))
    return params


@lru_cache(maxsize=1)
def recording_bytes() -> bytes:
    """Half a second of a 440 Hz tone as a valid 8 kHz mono 16-bit WAV file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        frames = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * n / 8000))) for n in range(4000))
        wav.writeframes(frames)
    return buffer.getvalue()


def create_sandbox_app(sandbox: Sandbox) -> Flask:
    """The WSGI app. Which portal answers is decided by the access token (and checked against the Host)."""
    from sandbox import kanban

    app = Flask("sandbox")
    app.config["SANDBOX"] = sandbox
    kanban.init_app(app)

    @app.route("/rest/<path:method>", methods=["GET", "POST"])
    def rest(method: str) -> Response:
        params = request_params()
        if method.rstrip("/").lower() in {"app.info", "app.info.json"} and request.host == sandbox.oauth_host:
            status, body = sandbox.oauth_app_info(params)
            return _json(status, body)
        fault = sandbox.take_proxy_fault(request.host, method.rstrip("/"))
        if fault is None:
            status, body = sandbox.handle_rest(request.host, method.rstrip("/"), params)
            return _json(status, body)
        fault.reached.set()
        if fault.kind == "hold":
            sandbox.wait_released(fault.delay)
            status, body = sandbox.handle_rest(request.host, method.rstrip("/"), params)
            return _json(status, body)
        if fault.executed:
            sandbox.handle_rest(request.host, method.rstrip("/"), params)
        if fault.kind == "timeout":
            time.sleep(fault.delay)
        return Response(proxy_page(fault.status), status=fault.status, mimetype="text/html")

    @app.route("/oauth/token/", methods=["GET", "POST"])
    @app.route("/oauth/token", methods=["GET", "POST"])
    def oauth_token() -> Response:
        if sandbox.oauth_latency > 0:
            time.sleep(sandbox.oauth_latency)  # a remote server's round trip; other requests go on meanwhile
        status, body = sandbox.handle_oauth(request_params())
        return _json(status, body)

    @app.route("/oauth/authorize/", methods=["GET"])
    def oauth_authorize() -> Response:
        portal = sandbox.portal_by_host(request.host)
        client_id = request.args.get("client_id", "")
        if portal is None or portal.client_id != client_id:
            return _json(400, {"error": "invalid_client", "error_description": "Invalid client"})
        code = sandbox.authorization_code(portal, request.args.get("user_id", type=int))
        target = request.args.get("redirect_uri") or portal.app_url or f"https://{portal.domain}/"
        query = urllib.parse.urlencode(
            {
                "code": code,
                "state": request.args.get("state", ""),
                "domain": portal.domain,
                "member_id": portal.member_id,
                "scope": portal.scope,
                "server_domain": sandbox.oauth_host,
            }
        )
        return Response(status=302, headers={"Location": f"{target}{'&' if '?' in target else '?'}{query}"})

    @app.route(RECORDING_PATH, methods=["GET"])
    def recording() -> Response:
        stem = request.args.get("fileId", "")
        if not stem.isdigit():
            return _json(404, {"error": "NOT_FOUND", "error_description": "File not found"})
        file_id = int(stem)
        known = any(
            file_id in activity.get("FILE_IDS", [])
            for portal in list(sandbox.portals.values())
            for activity in list(portal.activities.values())
        )
        if not known:
            return _json(404, {"error": "NOT_FOUND", "error_description": "File not found"})
        return Response(
            recording_bytes(),
            mimetype="audio/wav",
            headers={"Content-Disposition": f'attachment; filename="call_{file_id}.wav"'},
        )

    @app.errorhandler(404)
    def unknown(_error: Exception) -> Response:
        return _json(404, {"error": "NOT_FOUND", "error_description": "Not found"})

    return app
