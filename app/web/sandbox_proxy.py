"""/sandbox on the app's own address: a thin proxy to the sandbox portal's kanban (demo only).

The sandbox keeps its state in the process that runs it (the `make run` launcher), so the kanban is
served there, next to the portal's REST API; the app forwards /sandbox/... to it so a newcomer opens
one address and never meets the sandbox's self-signed certificate. Registered only when
SANDBOX_ENABLED; SANDBOX_URL says where the sandbox runs.
"""

from __future__ import annotations

import requests
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue

bp = Blueprint("sandbox_proxy", __name__)
TIMEOUT_SECONDS = 15
_PASSED_HEADERS = ("Content-Type", "Cache-Control", "ETag", "Last-Modified")


@bp.route("/sandbox", methods=["GET", "POST"])
@bp.route("/sandbox/<path:rest>", methods=["GET", "POST"])
def forward(rest: str = "") -> ResponseReturnValue:
    """Forward the request to the sandbox and hand its answer back unchanged."""
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
            f"{base}{request.path}",
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
