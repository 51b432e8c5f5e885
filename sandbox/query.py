"""Bitrix24 list semantics: filter keys with operator prefixes, order, select and paging."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sandbox.clock import parse_date

PAGE_SIZE = 50
# Longest prefixes first so that ">=" wins over ">".
OPERATORS: tuple[str, ...] = ("!@", "!=", "!%", "=%", ">=", "<=", "%", "@", ">", "<", "=", "!")

Getter = Callable[[Any, str], Any]


@dataclass(frozen=True)
class Condition:
    """One filter entry: field, operator, value."""

    field: str
    op: str
    value: Any


def as_list(value: Any) -> list[Any]:
    """A PHP-array-ish value (list, dict of index to value, scalar) as a list."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, Mapping):
        return list(value.values())
    return [value]


def parse_filter(raw: Any) -> list[Condition]:
    """Split filter keys into field and operator."""
    if not isinstance(raw, Mapping):
        return []
    conditions = []
    for key, value in raw.items():
        key = str(key)
        op = "="
        for candidate in OPERATORS:
            if key.startswith(candidate):
                op, key = candidate, key[len(candidate) :]
                break
        conditions.append(Condition(key.upper(), op, value))
    return conditions


def coerce(kind: str, value: Any) -> Any:
    """Turn a filter or stored value into something comparable for the field's kind."""
    if value is None:
        return None
    if isinstance(value, list):
        return [coerce(kind, item) for item in value]
    if kind == "int":
        if isinstance(value, bool):
            return int(value)
        text = str(value).strip()
        if text == "":
            return None
        try:
            return int(float(text))
        except ValueError:
            return text
    if kind == "float":
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    if kind == "date":
        return parse_date(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        return str(value).strip().upper() in {"Y", "1", "TRUE"}
    if kind == "yn":
        if isinstance(value, bool):
            return "Y" if value else "N"
        return str(value).strip().upper()
    return str(value)


def _like(pattern: Any, value: Any) -> bool:
    if value is None:
        return False
    return str(pattern).lower().replace("%", "") in str(value).lower()


def _compare(op: str, actual: Any, expected: Any) -> bool:
    if isinstance(actual, list):
        if op in {"=", "@"}:
            wanted = expected if isinstance(expected, list) else [expected]
            return any(item in wanted for item in actual)
        if op in {"!", "!=", "!@"}:
            wanted = expected if isinstance(expected, list) else [expected]
            return not any(item in wanted for item in actual)
        return False
    if op in {"@", "!@"} or (op in {"=", "!", "!="} and isinstance(expected, list)):
        wanted = expected if isinstance(expected, list) else [expected]
        inside = actual in wanted
        return inside if op in {"@", "="} else not inside
    if op == "=":
        return actual == expected or (expected is None and actual in ("", None))
    if op in {"!", "!="}:
        return not (actual == expected or (expected is None and actual in ("", None)))
    if op in {"%", "=%"}:
        return _like(expected, actual)
    if op == "!%":
        return not _like(expected, actual)
    if actual is None or expected is None:
        return False
    try:
        if op == ">":
            return actual > expected
        if op == ">=":
            return actual >= expected
        if op == "<":
            return actual < expected
        if op == "<=":
            return actual <= expected
    except TypeError:
        return False
    return False


def compile_filter(
    conditions: Sequence[Condition],
    kinds: Mapping[str, str],
    getter: Getter,
    special: Mapping[str, Callable[[Any, Condition], bool]] | None = None,
) -> Callable[[Any], bool]:
    """A predicate over rows; unknown fields are ignored like the real API ignores them."""
    special = special or {}
    prepared: list[tuple[Condition, str]] = []
    custom: list[tuple[Callable[[Any, Condition], bool], Condition]] = []
    for condition in conditions:
        if condition.field in special:
            custom.append((special[condition.field], condition))
            continue
        kind = kinds.get(condition.field)
        if kind is None and not condition.field.startswith("UF_"):
            continue
        kind = kind or "str"
        value = as_list(condition.value) if isinstance(condition.value, list | tuple | Mapping) else condition.value
        if condition.op in {"@", "!@"}:
            value = as_list(value) if not isinstance(value, str) else [v for v in value.split(",") if v]
        prepared.append((Condition(condition.field, condition.op, coerce(kind, value)), kind))

    def predicate(row: Any) -> bool:
        for condition, kind in prepared:
            if not _compare(condition.op, coerce(kind, getter(row, condition.field)), condition.value):
                return False
        return all(check(row, condition) for check, condition in custom)

    return predicate


def parse_order(raw: Any) -> list[tuple[str, bool]]:
    """Order entries as (field, descending)."""
    if not isinstance(raw, Mapping):
        return []
    return [(str(k).upper(), str(v).strip().upper() == "DESC") for k, v in raw.items()]


def sort_rows(rows: list[Any], order: Sequence[tuple[str, bool]], kinds: Mapping[str, str], getter: Getter) -> None:
    """Sort in place by several keys; empty values sort first ascending."""
    for field, descending in reversed(order):
        kind = kinds.get(field, "str")

        def key(row: Any, field: str = field, kind: str = kind) -> tuple[int, Any]:
            value = coerce(kind, getter(row, field))
            if value is None:
                return (0, 0)
            if isinstance(value, list):
                value = str(value)
            return (1, value)

        try:
            rows.sort(key=key, reverse=descending)
        except TypeError:
            rows.sort(key=lambda row: str(getter(row, field)), reverse=descending)


def parse_start(raw: Any) -> int:
    """The `start` parameter; -1 is the fast mode without counting."""
    try:
        return int(raw)
    except (TypeError, ValueError):
        return 0


@dataclass
class Page:
    """One page of a list method: rows plus what goes into `next` and `total`."""

    rows: list[Any]
    next: int | None
    total: int | None


def paginate(
    rows: Iterable[Any],
    predicate: Callable[[Any], bool],
    order: Sequence[tuple[str, bool]],
    kinds: Mapping[str, str],
    getter: Getter,
    start: int,
    page_size: int = PAGE_SIZE,
) -> Page:
    """Filter, sort and cut one page. start=-1 reads only one page and counts nothing."""
    if start == -1 and (not order or (len(order) == 1 and order[0][0] == "ID")):
        descending = bool(order) and order[0][1]
        matched = []
        source = reversed(list(rows)) if descending else rows
        for row in source:
            if predicate(row):
                matched.append(row)
                if len(matched) >= page_size:
                    break
        return Page(matched, None, None)
    selected = [row for row in rows if predicate(row)]
    sort_rows(selected, order or [("ID", False)], kinds, getter)
    if start == -1:
        return Page(selected[:page_size], None, None)
    start = max(start, 0)
    page = selected[start : start + page_size]
    following = start + page_size
    return Page(page, following if following < len(selected) else None, len(selected))


def select_fields(raw: Any) -> list[str]:
    """The `select` list, upper-cased."""
    return [str(item).upper() for item in as_list(raw) if str(item).strip()]


_UF_CAMEL_PART = re.compile(r"^\d")


def uf_to_camel(name: str) -> str:
    """UF_CRM_REFUSAL_REASON -> ufCrmRefusalReason; UF_CRM_5_1712 -> ufCrm5_1712 (crm.item naming)."""
    parts = name.lower().split("_")
    out = parts[0]
    previous_digit = False
    for part in parts[1:]:
        if not part:
            continue
        digit = bool(_UF_CAMEL_PART.match(part))
        if digit and previous_digit:
            out += "_" + part
        else:
            out += part[0].upper() + part[1:]
        previous_digit = digit
    return out


def to_camel(name: str) -> str:
    """ASSIGNED_BY_ID -> assignedById."""
    if name.startswith("UF_"):
        return uf_to_camel(name)
    parts = name.lower().split("_")
    return parts[0] + "".join(part[:1].upper() + part[1:] for part in parts[1:])


def truthy(value: Any) -> bool:
    """Bitrix24 booleans arrive as Y/N, 1/0, true/false."""
    if isinstance(value, bool):
        return value
    return str(value).strip().upper() in {"Y", "1", "TRUE", "YES"}
