"""Where our credentials may go: the one decision every outbound call with a secret or a token asks.

Nothing a CRM or a user sends names a host we trust. A Bitrix24 portal's REST base is what the OAuth
server confirmed (`app.info`, a token refresh); an amoCRM account host is a bare DNS name under one of
`AMO_HOST_SUFFIXES`, checked after parsing (never on the raw string) and checked again before every
call. Every check here works on the parsed form and then compares it with the raw text, so a string
that parses to something other than it looks (userinfo, `?`, `#`, backslashes, percent-encoding,
unicode dots, whitespace, NUL) is refused rather than "fixed".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from app.crm.errors import CrmError

FOREIGN_URL = "FOREIGN_URL"

# One DNS label: letters, digits and inner hyphens, 1 to 63 characters (RFC 1123). ASCII only: an IDNA
# name reaches us as its punycode (xn--...) form or not at all.
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_HOST_AND_PORT = re.compile(r"[a-z0-9.-]+(?::[0-9]{1,5})?")


class ForeignHost(CrmError):
    """A call would send our credentials to a host we have not verified; nothing was sent."""

    default_code = FOREIGN_URL


def dns_name(name: str) -> bool:
    """Whether `name` is a plain lower-case DNS name of two or more labels (no IP literal, no trailing dot)."""
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        return False
    return not labels[-1].isdigit()  # 10.0.0.1 and friends are addresses, not names


def _under(name: str, suffixes: Iterable[str]) -> bool:
    """Whether `name` is a proper subdomain of one of `suffixes` (".amocrm.ru" or "amocrm.ru")."""
    for suffix in suffixes:
        bare = suffix.strip().lower().lstrip(".")
        if bare and name.endswith("." + bare) and len(name) > len(bare) + 1:
            return True
    return False


def amo_account_host(raw: str, suffixes: Iterable[str], *, allow_port: bool = False) -> str | None:
    """The account host `raw` names ("acme.amocrm.ru", lower-cased), or None when we may not trust it.

    A host is accepted only when it is a bare DNS name (letters, digits, hyphens, dots), optionally
    with a port where `allow_port` says so, whose parsed hostname is under one of `suffixes`.
    """
    if not isinstance(raw, str):
        return None
    text = raw.lower()
    if not _HOST_AND_PORT.fullmatch(text):
        return None
    parts = urlsplit(f"https://{text}/")
    try:
        port = parts.port
    except ValueError:
        return None
    hostname = parts.hostname or ""
    expected = hostname if port is None else f"{hostname}:{port}"
    if parts.netloc != text or expected != text or parts.username is not None:
        return None
    if port is not None and (not allow_port or not 0 < port < 65536):
        return None
    if not dns_name(hostname) or not _under(hostname, suffixes):
        return None
    return text


def origin_of(url: str) -> tuple[str, str, int] | None:
    """(scheme, hostname, port) of a clean https URL, or None when the URL is not one we would call.

    Clean: https, a hostname, no userinfo, no whitespace, control characters, backslashes or
    percent-escapes in the authority, and a netloc that is exactly what it parses to.
    """
    if not isinstance(url, str) or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return None
    if "\\" in url:
        return None
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.netloc or "%" in parts.netloc or "@" in parts.netloc:
        return None
    try:
        port = parts.port or 443
    except ValueError:
        return None
    hostname = parts.hostname or ""
    if not hostname or not hostname.isascii():
        return None
    netloc = parts.netloc.lower()
    plain = hostname if parts.port is None else f"{hostname}:{parts.port}"
    bracketed = f"[{hostname}]" if parts.port is None else f"[{hostname}]:{parts.port}"
    if netloc not in (plain, bracketed) or hostname.endswith("."):
        return None
    return ("https", hostname, port)


def same_origin(url: str, verified_base: str) -> bool:
    """Whether `url` is a clean https URL on exactly the host and port of `verified_base`."""
    target = origin_of(url)
    return target is not None and target == origin_of(verified_base)


def require_same_origin(url: str, verified_base: str, *, what: str = "credentials") -> str:
    """`url` unchanged when our `what` may go there; else ForeignHost (nothing is sent)."""
    if not verified_base or not same_origin(url, verified_base):
        target = origin_of(url)
        shown = target[1] if target else "an address that is not a plain https URL"
        raise ForeignHost(f"{what} are never sent to {shown}: it is not the verified host")
    return url


def require_amo_host(host: str, suffixes: Iterable[str], *, allow_port: bool = False) -> str:
    """The account host, checked again right before a call; ForeignHost when it no longer passes."""
    checked = amo_account_host(host, suffixes, allow_port=allow_port)
    if checked is None:
        raise ForeignHost("the stored amoCRM account host is not an allowed amoCRM host; nothing was sent")
    return checked
