"""Reading request bodies safely, and answering with marshmallow's validation errors."""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError
from werkzeug.exceptions import BadRequest


def error_fields(error: ValidationError) -> Any:
    """The error's messages with every mapping key a string, ready for jsonify.

    marshmallow keys a list's item errors by index (int); a list field with its own validator carries
    both (`{0: [...], "_schema": [...]}`), and Flask's JSON provider, which sorts keys, cannot order
    an int against a str.
    """
    return _stringify_keys(error.messages)


def _stringify_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _stringify_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_stringify_keys(item) for item in value]
    return value


MAX_JSON_DEPTH = 32


class BadJsonBody(BadRequest):
    """A request body that claims to be JSON but cannot be used: malformed, not UTF-8, or nested too deep."""


def _too_deep(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest deeper than `limit` levels (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def json_body() -> Any:
    """The request's JSON body; None when there is none or it is not sent as JSON (callers answer 400 for a
    missing body as before).

    Raises BadJsonBody (answered 400 `bad_request` by the handler `init_app` registers) when the body is
    not valid UTF-8 JSON or nests arrays/objects deeper than MAX_JSON_DEPTH levels. The body itself is
    capped by MAX_CONTENT_LENGTH while read (app/core/limits.py). The parser's own recursion limit (a body nested
    100 000 deep) is caught here too: it must never become a 500.
    """
    if not request.is_json:
        return None
    data = request.get_data(cache=True)
    if not data.strip():
        return None
    try:
        value = json.loads(data)
    except RecursionError as error:
        raise BadJsonBody(description=f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels") from error
    except ValueError as error:
        raise BadJsonBody(description="the body is not valid JSON") from error
    if _too_deep(value, MAX_JSON_DEPTH):
        raise BadJsonBody(description=f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def init_app(app: Flask) -> None:
    """Answer a BadJsonBody with `{"error": "bad_request", "message": ...}` and 400."""

    @app.errorhandler(BadJsonBody)
    def bad_json(error: BadJsonBody) -> ResponseReturnValue:
        return jsonify(error="bad_request", message=error.description), 400
