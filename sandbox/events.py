"""Outgoing event delivery: the outbox, the form body Bitrix24 POSTs, and transports."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

# (url, form body) -> HTTP status of the handler's answer
Transport = Callable[[str, str], int]


def flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """PHP-style flattening: {"data": {"FIELDS": {"ID": 5}}} -> [("data[FIELDS][ID]", "5")]."""
    pairs: list[tuple[str, str]] = []
    for key, value in data.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, Mapping):
            if value:
                pairs.extend(flatten(value, name))
        elif isinstance(value, list | tuple):
            pairs.extend(flatten({str(index): item for index, item in enumerate(value)}, name))
        elif value is None:
            pairs.append((name, ""))
        elif isinstance(value, bool):
            pairs.append((name, "1" if value else ""))
        else:
            pairs.append((name, str(value)))
    return pairs


def form_body(data: Mapping[str, Any]) -> str:
    """A form body as PHP's http_build_query writes it (brackets percent-encoded, spaces as '+')."""
    return urllib.parse.urlencode(flatten(data))


@dataclass
class OutgoingEvent:
    """One POST waiting in the outbox."""

    id: int
    member_id: str
    event: str
    url: str
    body: str
    created: float


@dataclass
class Delivery:
    """What happened to an outgoing event."""

    event: OutgoingEvent
    status: int | None  # None = dropped (never sent); 0 = transport error
    error: str = ""

    @property
    def delivered(self) -> bool:
        """Whether the handler got it and answered 2xx."""
        return self.status is not None and 200 <= self.status < 300


def requests_transport(
    timeout: float = 10.0, verify: bool | str = True, user_agent: str = "Bitrix24 Webhook Engine"
) -> Transport:
    """Deliver over real HTTP(S) with `requests`, as the CRM's webhook sender would."""

    def send(url: str, body: str) -> int:
        response = requests.post(
            url,
            data=body.encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": user_agent},
            timeout=timeout,
            verify=verify,
        )
        return response.status_code

    return send


def flask_client_transport(client: Any) -> Transport:
    """Deliver into a Flask test client (the app under test), keeping the URL's path and query."""

    def send(url: str, body: str) -> int:
        parts = urllib.parse.urlsplit(url)
        response = client.post(
            parts.path or "/",
            query_string=parts.query,
            data=body,
            content_type="application/x-www-form-urlencoded",
            headers={"User-Agent": "Bitrix24 Webhook Engine"},
            base_url=f"{parts.scheme}://{parts.netloc}",
        )
        return response.status_code

    return send
