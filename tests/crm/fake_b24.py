"""A Bitrix24 portal and OAuth server faked with `responses`, answering in Bitrix24's real shapes.

Values are strings, lists answer ``{result, next, total}``, batch answers keep ``[]`` for empty maps
and resolve ``$result[key][...]`` references the way the portal does (CRestUtil::processBatchElement:
walk the path, stop at the first missing key, substitute whatever was reached).
"""

from __future__ import annotations

import bisect
import json
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import qs_codec
import responses

DOMAIN = "member-a.bitrix24.test"
OAUTH = "https://oauth.test"
PAGE = 50


def error(status: int, code: str, description: str = "", **extra: Any) -> tuple[int, dict[str, Any]]:
    return status, {"error": code, "error_description": description, **extra}


class FakeBitrix24:
    """State and handlers of one fake portal plus the OAuth server."""

    def __init__(self, domain: str = DOMAIN, *, valid_tokens: set[str] | None = None) -> None:
        self.domain = domain
        self.lock = threading.Lock()
        self.valid_tokens: set[str] = set(valid_tokens or {"token-1"})
        self.expired_tokens: set[str] = set()
        self.token_filter: Callable[[str], str] | None = None  # token -> "ok" | "expired" | "invalid"
        self.refresh_token = "refresh-1"
        self.refresh_delay = 0.0
        self.refresh_counter = 0
        self.refresh_error: tuple[int, dict[str, Any]] | None = None
        self.issue_prefix = "token-new"
        self.calls: list[tuple[str, dict[str, Any], float]] = []
        self.tokens_seen: list[str] = []
        self.refreshes: list[dict[str, str]] = []
        self.failures: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self.results: dict[str, Any] = {}
        self.deals: dict[int, dict[str, Any]] = {}
        self._ids: list[int] = []

    # ---- setup

    def add_deals(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.deals[int(row["ID"])] = row
        self._ids = sorted(self.deals)

    def fail(self, method: str, status: int, code: str, description: str = "", times: int = 1, **extra: Any) -> None:
        self.failures.setdefault(method, []).extend([error(status, code, description, **extra)] * times)

    def install(self, rsps: responses.RequestsMock) -> None:
        rsps.add_callback(
            responses.POST, re.compile(rf"https://{re.escape(self.domain)}/rest/(.+)\.json"), callback=self._rest
        )
        rsps.add_callback(responses.GET, re.compile(rf"{re.escape(OAUTH)}/oauth/token/.*"), callback=self._oauth)

    def methods(self) -> list[str]:
        return [method for method, _, _ in self.calls]

    # ---- HTTP handlers

    def _rest(self, request: Any) -> tuple[int, dict[str, str], str]:
        method = urlsplit(request.url).path.removeprefix("/rest/").removesuffix(".json")
        body = json.loads(request.body or b"{}")
        token = body.pop("auth", "")
        with self.lock:
            self.calls.append((method, body, time.time()))
            self.tokens_seen.append(token)
            state = self._token_state(token)
            if state == "expired":
                status, payload = error(401, "expired_token", "The access token provided has expired.")
            elif state == "invalid":
                status, payload = error(401, "invalid_token", "Unable to get application by token")
            elif self.failures.get(method):
                status, payload = self.failures[method].pop(0)
            else:
                status, payload = self.dispatch(method, body)
        payload.setdefault("time", {"start": time.time(), "duration": 0.01})
        return status, {"Content-Type": "application/json"}, json.dumps(payload)

    def _token_state(self, token: str) -> str:
        if self.token_filter is not None:
            return self.token_filter(token)
        if token in self.expired_tokens:
            return "expired"
        return "ok" if token in self.valid_tokens else "invalid"

    def _oauth(self, request: Any) -> tuple[int, dict[str, str], str]:
        query = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
        if self.refresh_delay:
            time.sleep(self.refresh_delay)
        with self.lock:
            self.refreshes.append(query)
            if self.refresh_error is not None:
                status, payload = self.refresh_error
            elif query.get("grant_type") != "refresh_token" or query.get("refresh_token") != self.refresh_token:
                status, payload = error(400, "invalid_grant", "Invalid grant")
            else:
                self.refresh_counter += 1
                access = f"{self.issue_prefix}-{self.refresh_counter}"
                self.refresh_token = f"refresh-{self.refresh_counter + 1}"
                self.valid_tokens.add(access)
                status, payload = (
                    200,
                    {
                        "access_token": access,
                        "refresh_token": self.refresh_token,
                        "expires": int(time.time()) + 3600,
                        "expires_in": 3600,
                        "client_endpoint": f"https://{self.domain}/rest/",
                        "server_endpoint": f"{OAUTH}/rest/",
                        "domain": "oauth.test",
                        "member_id": "member-a",
                        "scope": "crm,task,im,user,telephony",
                        "status": "L",
                        "user_id": 1,
                    },
                )
        return status, {"Content-Type": "application/json"}, json.dumps(payload)

    # ---- methods

    def dispatch(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if method == "batch":
            return 200, {"result": self._batch(params)}
        if method == "crm.deal.list":
            return 200, self._deal_list(params)
        if method == "crm.deal.get":
            row = self.deals.get(int(params.get("id") or 0))
            return (200, {"result": row}) if row else error(400, "", "Not found")
        if method in self.results:
            value = self.results[method]
            answer = value(params) if callable(value) else value
            return 200, answer if isinstance(answer, dict) and "result" in answer else {"result": answer}
        return error(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")

    def _deal_list(self, params: dict[str, Any]) -> dict[str, Any]:
        flt = params.get("filter") or {}
        start = int(params.get("start") or 0)
        ids = self._ids
        if ">ID" in flt:
            raw = flt[">ID"]
            after = int(raw) if isinstance(raw, int | str) and str(raw).lstrip("-").isdigit() else 0
            ids = ids[bisect.bisect_right(ids, after) :]
        rows = (self.deals[i] for i in ids)
        if "@ID" in flt:
            wanted = {int(v) for v in _values(flt["@ID"])}
            rows = (r for r in rows if int(r["ID"]) in wanted)
        if ">=DATE_MODIFY" in flt:
            since = datetime.fromisoformat(flt[">=DATE_MODIFY"])
            rows = (r for r in rows if datetime.fromisoformat(r["DATE_MODIFY"]) >= since)
        if "CLOSED" in flt:
            rows = (r for r in rows if r.get("CLOSED", "N") == flt["CLOSED"])
        if start == -1:
            page = []
            for row in rows:
                page.append(row)
                if len(page) == PAGE:
                    break
            return {"result": page}
        matched = list(rows)
        answer: dict[str, Any] = {"result": matched[start : start + PAGE], "total": len(matched)}
        if start + PAGE < len(matched):
            answer["next"] = start + PAGE
        return answer

    def _batch(self, params: dict[str, Any]) -> dict[str, Any]:
        halt = str(params.get("halt", "0")) in ("1", "true")
        results: dict[str, Any] = {"result": {}, "error": {}, "total": {}, "next": {}, "time": {}}
        for count, (key, command) in enumerate((params.get("cmd") or {}).items()):
            if count >= PAGE:
                results["error"][key] = {"error": "ERROR_BATCH_LENGTH_EXCEEDED", "error_description": "Max batch"}
                continue
            method, _, query = command.partition("?")
            sub = _resolve(qs_codec.decode(query, qs_codec.DecodeOptions(depth=10, list_limit=1000)), results)
            if self.failures.get(method):
                status, answer = self.failures[method].pop(0)
            else:
                status, answer = self.dispatch(method, sub)
            results["time"][key] = {"duration": 0.01}
            if status != 200 or "error" in answer:
                results["error"][key] = {"error": answer["error"], "error_description": answer["error_description"]}
                if halt:
                    break
                continue
            results["result"][key] = answer["result"]
            if "total" in answer:
                results["total"][key] = answer["total"]
            if "next" in answer:
                results["next"][key] = answer["next"]
        return {
            "result": results["result"] or [],
            "result_error": results["error"] or [],
            "result_total": results["total"] or [],
            "result_next": results["next"] or [],
            "result_time": results["time"] or [],
        }


def _values(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return list(value.values())
    return value if isinstance(value, list) else [value]


_REFERENCE = re.compile(r"\$(result|next|total|time|error)(\S*)", re.IGNORECASE)


def _resolve(value: Any, results: dict[str, Any]) -> Any:
    """Substitute batch references like the portal does, including its behaviour on missing keys."""
    if isinstance(value, dict):
        return {k: _resolve(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, results) for v in value]
    if not isinstance(value, str):
        return value
    for match in list(_REFERENCE.finditer(value)):
        node: Any = results[match.group(1).lower()]
        for key in re.findall(r"\[([^\]]+)\]", match.group(2)):
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                break
        if match.group(0) == value:
            return node
        value = value.replace(match.group(0), str(node))
    return value


def deal_row(deal_id: int, **fields: Any) -> dict[str, Any]:
    """A crm.deal.get row with Bitrix24's string values."""
    row = {
        "ID": str(deal_id),
        "TITLE": f"Deal {deal_id}",
        "CATEGORY_ID": "0",
        "STAGE_ID": "NEW",
        "STAGE_SEMANTIC_ID": "P",
        "CLOSED": "N",
        "OPPORTUNITY": "1000.00",
        "CURRENCY_ID": "RUB",
        "ASSIGNED_BY_ID": "7",
        "CREATED_BY_ID": "1",
        "MODIFY_BY_ID": "7",
        "DATE_CREATE": "2025-01-09T10:00:00+03:00",
        "DATE_MODIFY": "2025-01-09T10:15:00+03:00",
        "SOURCE_ID": "WEB",
    }
    row.update({k: v for k, v in fields.items()})
    return row
