"""Helpers for answering with marshmallow's validation errors."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError


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
