"""The baseline for the ingest benchmark: a bare Flask endpoint that reads the form body and answers JSON.

Served by gunicorn with the same settings as the real app (`gunicorn bench.bare_app:app`).
"""

from __future__ import annotations

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

app = Flask(__name__)


@app.post("/b24/events")
def events() -> ResponseReturnValue:
    """Read the whole form body, as the real handler does, and acknowledge it."""
    form = request.form
    return jsonify(ok=True, fields=len(form))
