"""Errors raised by CRM adapters. Domain code catches these, never an SDK's or an HTTP library's.

Bitrix24 answers errors as ``{"error": "CODE", "error_description": "..."}`` with an HTTP status
(reference/bitrix24.md section 12); `error_for` turns such an answer into one class per code.
Legacy CRM methods answer with an empty code and the meaning in the description ("Not found",
"Access denied"); those are mapped by description.
"""

from __future__ import annotations


class CrmError(Exception):
    """Any failure talking to a CRM.

    `code` is the CRM's error code ("" when it sent none), `description` its text, `http_status`
    the HTTP status when there was a response, `retry_after` seconds after which a retry may succeed
    (set for throttling errors when the CRM says so).
    """

    default_code: str = ""

    def __init__(
        self,
        description: str = "",
        *,
        code: str | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.code = self.default_code if code is None else code
        self.description = description
        self.http_status = http_status
        self.retry_after = retry_after
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = self.code or type(self).__name__
        if self.description:
            text += f": {self.description}"
        if self.http_status:
            text += f" (HTTP {self.http_status})"
        return text


class CrmUnavailable(CrmError):
    """The CRM could not be reached or did not answer in time (transport failure, timeout, 5xx page)."""

    default_code = "UNAVAILABLE"


class RateLimitTimeout(CrmUnavailable):
    """Our own rate limiter could not give a request slot within the allowed wait."""

    default_code = "RATE_LIMIT_TIMEOUT"


class PortalNeedsReinstall(CrmError):
    """The portal's tokens are no longer valid (invalid_grant, invalid_token, NO_AUTH_FOUND).

    The portal row is marked ``status="needs_reinstall"``; nothing will work until the admin
    opens or reinstalls the app, so callers must not retry.
    """

    default_code = "NEEDS_REINSTALL"


# ---------------------------------------------------------------- Bitrix24


class Bitrix24Error(CrmError):
    """A Bitrix24 error answer; also the fallback for codes without a class of their own."""


class Bitrix24AuthError(Bitrix24Error):
    """HTTP 401 family: the token or the app's access is the problem."""


class ExpiredToken(Bitrix24AuthError):
    """401 expired_token: refresh the access token and retry once."""

    default_code = "expired_token"


class InvalidToken(Bitrix24AuthError):
    """401 invalid_token ("Unable to get application by token"): the app is gone from the portal."""

    default_code = "invalid_token"


class NoAuthFound(Bitrix24AuthError):
    """401 NO_AUTH_FOUND: the portal does not accept the token at all."""

    default_code = "NO_AUTH_FOUND"


class AuthorizationError(Bitrix24AuthError):
    """401 authorization_error."""

    default_code = "authorization_error"


class PaymentRequired(Bitrix24AuthError):
    """401/402 PAYMENT_REQUIRED: the app's subscription or the portal's plan has lapsed."""

    default_code = "PAYMENT_REQUIRED"


class MethodConfirmWaiting(Bitrix24AuthError):
    """401 METHOD_CONFIRM_WAITING: an admin has to confirm the method for the app."""

    default_code = "METHOD_CONFIRM_WAITING"


class AccessDenied(Bitrix24Error):
    """403 ACCESS_DENIED (also the legacy empty code with "Access denied")."""

    default_code = "ACCESS_DENIED"


class InsufficientScope(Bitrix24Error):
    """403 insufficient_scope: the app lacks a scope the method needs."""

    default_code = "insufficient_scope"


class InvalidCredentials(Bitrix24Error):
    """403 INVALID_CREDENTIALS."""

    default_code = "INVALID_CREDENTIALS"


class WrongAuthType(Bitrix24Error):
    """403 WRONG_AUTH_TYPE: e.g. im.notify with frame auth, placement.bind with a webhook."""

    default_code = "WRONG_AUTH_TYPE"


class InvalidRequest(Bitrix24Error):
    """400 INVALID_REQUEST (HTTPS required)."""

    default_code = "INVALID_REQUEST"


class InvalidArgValue(Bitrix24Error):
    """400 INVALID_ARG_VALUE."""

    default_code = "INVALID_ARG_VALUE"


class Bitrix24Throttled(Bitrix24Error):
    """Bitrix24 refused because of load limits; retrying later can succeed."""


class QueryLimitExceeded(Bitrix24Throttled):
    """503 QUERY_LIMIT_EXCEEDED: the per-portal leaky bucket is full."""

    default_code = "QUERY_LIMIT_EXCEEDED"


class OperationTimeLimit(Bitrix24Throttled):
    """429 OPERATION_TIME_LIMIT: the method used up its run time; wait for operating_reset_at."""

    default_code = "OPERATION_TIME_LIMIT"


class OverloadLimit(Bitrix24Throttled):
    """503 OVERLOAD_LIMIT: the portal is blocked manually by Bitrix24."""

    default_code = "OVERLOAD_LIMIT"


class InternalServerError(Bitrix24Error):
    """500 INTERNAL_SERVER_ERROR / ERROR_UNEXPECTED_ANSWER."""

    default_code = "INTERNAL_SERVER_ERROR"


class NotFound(Bitrix24Error):
    """The entity does not exist (legacy CRM methods: empty code, description "Not found")."""

    default_code = "NOT_FOUND"


class MethodNotFound(Bitrix24Error):
    """ERROR_METHOD_NOT_FOUND: unknown REST method (or a module is not installed)."""

    default_code = "ERROR_METHOD_NOT_FOUND"


class ActivityAlreadyInstalled(Bitrix24Error):
    """ERROR_ACTIVITY_ALREADY_INSTALLED: a robot with this CODE exists; use bizproc.robot.update."""

    default_code = "ERROR_ACTIVITY_ALREADY_INSTALLED"


class EventNotFound(Bitrix24Error):
    """ERROR_EVENT_NOT_FOUND: event.bind with an unknown event name."""

    default_code = "ERROR_EVENT_NOT_FOUND"


class PlacementNotFound(Bitrix24Error):
    """ERROR_PLACEMENT_NOT_FOUND: unknown placement code or missing scope."""

    default_code = "ERROR_PLACEMENT_NOT_FOUND"


class WrongHandlerUrl(Bitrix24Error):
    """ERROR_WRONG_HANDLER_URL: the handler URL is not acceptable (e.g. localhost)."""

    default_code = "ERROR_WRONG_HANDLER_URL"


class BatchLengthExceeded(Bitrix24Error):
    """ERROR_BATCH_LENGTH_EXCEEDED: more than 50 commands in one batch."""

    default_code = "ERROR_BATCH_LENGTH_EXCEEDED"


class BatchMethodNotAllowed(Bitrix24Error):
    """405 ERROR_BATCH_METHOD_NOT_ALLOWED."""

    default_code = "ERROR_BATCH_METHOD_NOT_ALLOWED"


class InvalidGrant(Bitrix24AuthError):
    """OAuth invalid_grant: the refresh token expired or was revoked; a full reinstall is needed."""

    default_code = "invalid_grant"


class InvalidClient(Bitrix24AuthError):
    """OAuth invalid_client: wrong client id/secret, or the app is not installed."""

    default_code = "invalid_client"


_BY_CODE: dict[str, type[Bitrix24Error]] = {
    cls.default_code.upper(): cls
    for cls in (
        ExpiredToken,
        InvalidToken,
        NoAuthFound,
        AuthorizationError,
        PaymentRequired,
        MethodConfirmWaiting,
        AccessDenied,
        InsufficientScope,
        InvalidCredentials,
        WrongAuthType,
        InvalidRequest,
        InvalidArgValue,
        QueryLimitExceeded,
        OperationTimeLimit,
        OverloadLimit,
        InternalServerError,
        NotFound,
        MethodNotFound,
        ActivityAlreadyInstalled,
        EventNotFound,
        PlacementNotFound,
        WrongHandlerUrl,
        BatchLengthExceeded,
        BatchMethodNotAllowed,
        InvalidGrant,
        InvalidClient,
    )
}
_BY_CODE["ERROR_UNEXPECTED_ANSWER"] = InternalServerError
_BY_CODE["ERROR_NOT_FOUND"] = NotFound

# Legacy crm.* methods answer 400 with an empty code; the description carries the meaning.
_BY_DESCRIPTION: dict[str, type[Bitrix24Error]] = {
    "not found": NotFound,
    "access denied": AccessDenied,
}


def error_for(code: str | None, description: str | None = "", status: int | None = None) -> Bitrix24Error:
    """The exception for a Bitrix24 error answer: one class per known code, else `Bitrix24Error`."""
    code = code or ""
    description = description or ""
    cls = _BY_CODE.get(code.upper())
    if cls is None and not code:
        cls = _BY_DESCRIPTION.get(description.strip().rstrip(".!").lower())
    return (cls or Bitrix24Error)(description, code=code, http_status=status)


# ---------------------------------------------------------------- amoCRM


class AmoError(CrmError):
    """An amoCRM API error answer (problem+json, or a bare status); the fallback for unmapped ones."""


class AmoValidationError(AmoError):
    """400 with ``validation-errors``: the request was refused field by field (`errors` holds them)."""

    default_code = "VALIDATION"

    def __init__(self, description: str = "", *, errors: list[dict[str, str]] | None = None, **kwargs: object) -> None:
        self.errors = errors or []
        super().__init__(description, **kwargs)  # type: ignore[arg-type]


class AmoUnauthorized(AmoError):
    """401 on an API call: the access token expired or was revoked; refresh once, then reauthorise."""

    default_code = "UNAUTHORIZED"


class AmoTokenRevoked(AmoError):
    """401 ``Token has been revoked`` on a token request: the refresh token is dead (reused or revoked)."""

    default_code = "TOKEN_REVOKED"


class AmoPaymentRequired(AmoError):
    """402: the account's plan has lapsed."""

    default_code = "PAYMENT_REQUIRED"


class AmoForbidden(AmoError):
    """403 with a JSON problem: the granting user lacks a right (e.g. admin-only calls)."""

    default_code = "FORBIDDEN"


class AmoBlocked(AmoError):
    """403 block (often an nginx HTML page) after repeated limit violations: stop calling this account."""

    default_code = "BLOCKED"


class AmoNotFound(AmoError):
    """404, or 204 where one entity was asked for: it does not exist."""

    default_code = "NOT_FOUND"


class AmoThrottled(AmoError):
    """429 Too Many Requests: over 7 req/s per integration or 50 per account."""

    default_code = "TOO_MANY_REQUESTS"
