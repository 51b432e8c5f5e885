"""Bitrix24 batch requests and list-page planning: pure helpers, no I/O.

`build_command` writes one batch ``cmd`` value, `BatchResult` merges and reads batch answers,
`page_params` / `start_after` build the fast-scan page of a list method, and `plan_batch` /
`release_streams` plan how pages of several list streams share batches of 50
(`Bitrix24Rest.iter_list_batched` and `iter_streams_batched` send them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import qs_codec

from app.crm.errors import (
    CrmError,
    error_for,
)

PAGE_SIZE = 50
BATCH_LIMIT = 50


def _without_nulls(value: Any) -> Any:
    """The parameters without their None values, at any depth (an empty string stays: it empties a field)."""
    if isinstance(value, Mapping):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list | tuple):
        return [_without_nulls(item) for item in value if item is not None]
    return value


def build_command(method: str, params: Mapping[str, Any] | None = None) -> str:
    """A batch ``cmd`` value: ``method?`` plus the parameters as a PHP-bracket query string (as PHP's
    http_build_query: None is left out, "" is sent as ``key=``; qs_codec's skip_nulls would drop "" too, and a
    field cleared inside a batch would keep its value)."""
    if not params:
        return method
    return f"{method}?{qs_codec.encode(_without_nulls(dict(params)))}"


def as_map(value: Any) -> dict[str, Any]:
    """Bitrix24 sends empty maps as ``[]`` and maps with keys 0..n-1 as lists; make both dicts."""
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        return {str(index): item for index, item in enumerate(value)}
    return {}


def result_rows(result: Any, result_key: str | None) -> list[dict[str, Any]]:
    """The rows of a list method's ``result`` (some methods wrap them: tasks, items, categories)."""
    if result_key is not None:
        result = result.get(result_key) if isinstance(result, dict) else None
    if isinstance(result, dict):
        return list(result.values())
    return list(result or [])


def id_key(row: Mapping[str, Any], id_field: str) -> str:
    """The key holding the id in a row (crm.* use "ID", tasks and crm.item use "id")."""
    for candidate in (id_field, id_field.lower(), id_field.upper()):
        if candidate in row:
            return candidate
    raise CrmError(f"list row without {id_field!r}")


def id_of(row: Mapping[str, Any], id_field: str) -> int:
    return int(row[id_key(row, id_field)])


@dataclass
class BatchResult:
    """The merged answer of one or more batch requests, keyed like the commands."""

    result: dict[str, Any] = field(default_factory=dict)
    result_error: dict[str, dict[str, Any]] = field(default_factory=dict)
    result_total: dict[str, int] = field(default_factory=dict)
    result_next: dict[str, int] = field(default_factory=dict)
    result_time: dict[str, Any] = field(default_factory=dict)
    started: float | None = None  # the portal's clock (unix seconds) when the first request began
    finished: float | None = None  # ... and when the last one ended (the answer's own ``time``)

    def note_time(self, timing: Any) -> None:
        """Widen [started, finished] by one answer's ``time`` object (``start``/``finish``)."""
        if not isinstance(timing, Mapping):
            return
        try:
            start, finish = float(timing["start"]), float(timing["finish"])
        except (KeyError, TypeError, ValueError):
            return
        self.started = start if self.started is None else min(self.started, start)
        self.finished = finish if self.finished is None else max(self.finished, finish)

    def merge(self, payload: Mapping[str, Any]) -> None:
        """Add one batch answer's ``result`` object."""
        self.result.update(as_map(payload.get("result")))
        self.result_error.update(as_map(payload.get("result_error")))
        self.result_total.update({k: int(v) for k, v in as_map(payload.get("result_total")).items()})
        self.result_next.update({k: int(v) for k, v in as_map(payload.get("result_next")).items()})
        self.result_time.update(as_map(payload.get("result_time")))

    def error(self, key: str) -> CrmError | None:
        """The error of one command, as an exception, or None when it succeeded."""
        raw = self.result_error.get(key)
        if raw is None:
            return None
        if isinstance(raw, Mapping):
            return error_for(str(raw.get("error") or ""), str(raw.get("error_description") or ""))
        return error_for("", str(raw))

    def errors(self) -> dict[str, CrmError]:
        """Every failed command's error."""
        return {key: err for key in self.result_error if (err := self.error(key)) is not None}

    def get(self, key: str) -> Any:
        """The result of one command; raises its error if it failed."""
        err = self.error(key)
        if err is not None:
            raise err
        if key not in self.result:
            raise CrmError(f"batch command {key!r} has no result")
        return self.result[key]


@dataclass(frozen=True)
class ListStream:
    """One list method read by `Bitrix24Rest.iter_streams_batched`.

    `name` prefixes the batch keys (letters only); `row_key` is the id key in the answer rows
    ("ID" for crm.*, "id" for tasks); streams of a lower `phase` end before a higher one yields.
    """

    name: str
    method: str
    params: Mapping[str, Any]
    id_field: str = "ID"
    row_key: str = "ID"
    result_key: str | None = None
    phase: int = 0


@dataclass
class StreamState:
    stream: ListStream
    last: int
    issued: int = 0
    remaining: int = 0
    done: bool = False


def page_params(params: Mapping[str, Any] | None, id_field: str, after: int | str, start: int) -> dict[str, Any]:
    page = {k: v for k, v in (params or {}).items() if k not in ("filter", "order", "start")}
    base_filter = dict((params or {}).get("filter") or {})
    base_filter.pop(f">{id_field}", None)
    page["filter"] = {**base_filter, f">{id_field}": after}
    page["order"] = {id_field: "ASC"}
    page["start"] = start
    select = page.get("select")
    if select and "*" not in select and id_field not in select:
        page["select"] = [*select, id_field]
    return page


def start_after(params: Mapping[str, Any] | None, id_field: str) -> int:
    return int(((params or {}).get("filter") or {}).get(f">{id_field}") or 0)


def release_streams(states: Sequence[StreamState]) -> dict[str, bool]:
    """Which streams may hand out their rows: those whose earlier phases have all ended."""
    return {
        state.stream.name: all(other.done for other in states if other.stream.phase < state.stream.phase)
        for state in states
    }


def plan_batch(states: Sequence[StreamState], first: bool) -> list[tuple[StreamState, int]]:
    """How many pages of each stream go into the next batch (at most 50 in all)."""
    active = [state for state in states if not state.done]
    if first:
        # Nothing is counted yet: every stream gets its counting page, the rest is shared.
        share, extra = divmod(BATCH_LIMIT, len(active))
        return [(state, share + (1 if index < extra else 0)) for index, state in enumerate(active)]
    plan: list[tuple[StreamState, int]] = []
    room = BATCH_LIMIT
    for phase in sorted({state.stream.phase for state in active}):
        ending = True
        for state in (s for s in active if s.stream.phase == phase):
            need = state.remaining // PAGE_SIZE + 1
            count = min(need, room)
            if count:
                plan.append((state, count))
                room -= count
            ending = ending and count == need
        if not ending or not room:
            break
    return plan
