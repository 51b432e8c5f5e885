"""/sandbox on the app's own address: a thin proxy to the sandbox portal's kanban (demo only).

The sandbox keeps its state in the process that runs it (the `make run` launcher), so the kanban is
served there, next to the portal's REST API; the app forwards /sandbox/... to it so a newcomer opens
one address and never meets the sandbox's self-signed certificate. Registered only when
SANDBOX_ENABLED; SANDBOX_URL says where the sandbox runs.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import requests
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue

bp = Blueprint("sandbox_proxy", __name__)
TIMEOUT_SECONDS = 15
_PASSED_HEADERS = ("Content-Type", "Cache-Control", "ETag", "Last-Modified")
# The kanban's own paths under /sandbox/ (sandbox/kanban.py): its page, its API calls, the sandbox's BX24
# library (api/v1/, what B24_JS_URL names in the demo), its assets.
KANBAN_PATHS = frozenset({"", "api/board", "api/move", "api/deal", "api/frame", "api/new-deal", "api/robot", "api/v1/"})
_ASSET_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def kanban_path(rest: str) -> str | None:
    """The path to forward for `/sandbox/<rest>` (`rest` as the server decoded it), or None when it is not
    one of the kanban's own: no dot segments, no encoded slashes turned into new segments, nothing outside
    /sandbox (`/sandbox/../rest/...` would otherwise reach the sandbox portal's REST API)."""
    if rest in KANBAN_PATHS:
        return f"/sandbox/{rest}" if rest else "/sandbox"
    segments = rest.split("/")
    if len(segments) >= 2 and segments[0] == "static" and all(_ASSET_SEGMENT.fullmatch(s) for s in segments[1:]):
        return "/sandbox/" + quote(rest)
    return None


@bp.route("/sandbox", methods=["GET", "POST"])
@bp.route("/sandbox/<path:rest>", methods=["GET", "POST"])
def forward(rest: str = "") -> ResponseReturnValue:
    """Forward a request for one of the kanban's paths to the sandbox and hand its answer back unchanged."""
    path = kanban_path(rest)
    if path is None:
        return jsonify(error="not_found", message="Only the sandbox kanban is served under /sandbox."), 404
    base = current_app.config.get("SANDBOX_URL", "")
    if not base:
        return jsonify(
            error="sandbox_not_running",
            message="The sandbox portal is not running here: start the demo with `make run`.",
        ), 503
    headers = {"Content-Type": request.content_type} if request.content_type else {}
    try:
        upstream = requests.request(
            request.method,
            f"{base}{path}",
            params=request.query_string,
            data=request.get_data(),
            headers=headers,
            timeout=TIMEOUT_SECONDS,
            allow_redirects=False,
        )
    except requests.RequestException as error:
        return jsonify(error="sandbox_unreachable", message=f"The sandbox portal did not answer: {error}"), 502
    response = Response(upstream.content, status=upstream.status_code)
    for name in _PASSED_HEADERS:
        if name in upstream.headers:
            response.headers[name] = upstream.headers[name]
    return response


def init_app(app: Flask) -> None:
    """Serve /sandbox when the demo sandbox is enabled."""
    if app.config.get("SANDBOX_ENABLED"):
        app.register_blueprint(bp)
