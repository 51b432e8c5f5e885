"""The error a REST method answers with."""

from __future__ import annotations

from typing import Any


class RestError(Exception):
    """An error answer: HTTP status plus Bitrix24's {"error", "error_description"}."""

    def __init__(self, status: int, code: str, description: str = "", extra: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {description}")
        self.status = status
        self.code = code
        self.description = description
        self.extra = dict(extra or {})  # more top-level keys of a direct answer (e.g. `time`), not in batch

    def body(self) -> dict[str, str]:
        """The JSON body of the answer."""
        return {"error": self.code, "error_description": self.description}


def not_found(description: str = "Not found") -> RestError:
    """Legacy CRM methods answer missing objects with an empty error code."""
    return RestError(400, "", description)


def access_denied(description: str = "Access denied!") -> RestError:
    """403 ACCESS_DENIED."""
    return RestError(403, "ACCESS_DENIED", description)


def bad_argument(description: str, code: str = "INVALID_ARG_VALUE") -> RestError:
    """400 for a malformed argument."""
    return RestError(400, code, description)
