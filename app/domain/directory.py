"""Cached look-ups of a portal's people and pipelines, and who plays which role in the guard."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Literal

from app.core.queue import get_redis
from app.crm.port import AUTOMATION, CrmClient, Pipeline, Stage, User
from app.domain.settings import GuardSettings

CACHE_SECONDS = 600
Role = Literal["head", "qa", "exempt", "automation", "manager"]


def _cache_key(portal_id: int, what: str) -> str:
    return f"rc:cache:{portal_id}:{what}"


# The last cached value decoded per key in this process, kept with its bytes: a decision reads the same users and
# pipelines several times, and decoding hundreds of users each time costs more than the Redis read.
_DECODED: dict[str, tuple[bytes | str, list[Any]]] = {}


def _decoded(key: str, raw: bytes | str, decode: Callable[[Any], Any]) -> list[Any]:
    """`decode` of every item of the cached JSON list `raw`, reused while the cached bytes stay the same."""
    hit = _DECODED.get(key)
    if hit is None or hit[0] != raw:
        if len(_DECODED) >= 1024:
            _DECODED.clear()
        hit = (raw, [decode(item) for item in json.loads(raw)])
        _DECODED[key] = hit
    return list(hit[1])


def _user(item: dict[str, Any]) -> User:
    return User(**{**item, "department_ids": tuple(item["department_ids"])})


def _pipeline(item: dict[str, Any]) -> Pipeline:
    return Pipeline(
        id=item["id"],
        name=item["name"],
        is_default=item["is_default"],
        stages=tuple(Stage(**stage) for stage in item["stages"]),
    )


def users(portal_id: int, crm: CrmClient) -> list[User]:
    """The portal's users, cached for a few minutes (settings pages and role checks read them often)."""
    key = _cache_key(portal_id, "users")
    cached = get_redis().get(key)
    if cached is not None:
        return _decoded(key, cached, _user)
    found = crm.list_users()
    get_redis().set(key, json.dumps([asdict(user) for user in found]), ex=CACHE_SECONDS)
    return found


def pipelines(portal_id: int, crm: CrmClient) -> list[Pipeline]:
    """The portal's pipelines with stages, cached for a few minutes."""
    key = _cache_key(portal_id, "pipelines")
    cached = get_redis().get(key)
    if cached is not None:
        return _decoded(key, cached, _pipeline)
    found = crm.list_pipelines()
    get_redis().set(key, json.dumps([asdict(pipeline) for pipeline in found]), ex=CACHE_SECONDS)
    return found


def forget(portal_id: int) -> None:
    """Drop the cached look-ups (after an install or a settings change)."""
    get_redis().delete(_cache_key(portal_id, "users"), _cache_key(portal_id, "pipelines"))


def forget_pipelines(portal_id: int) -> None:
    """Drop the cached pipelines (a stage was added to one)."""
    get_redis().delete(_cache_key(portal_id, "pipelines"))


def stage(portal_id: int, crm: CrmClient, stage_id: str) -> Stage | None:
    """A stage by id, from any pipeline."""
    for pipeline in pipelines(portal_id, crm):
        for candidate in pipeline.stages:
            if candidate.id == stage_id:
                return candidate
    return None


def first_stage(portal_id: int, crm: CrmClient, pipeline_id: str) -> Stage | None:
    """The first in-progress stage of a pipeline."""
    for pipeline in pipelines(portal_id, crm):
        if pipeline.id == pipeline_id:
            ordered = sorted((s for s in pipeline.stages if s.semantics == "process"), key=lambda s: s.sort)
            return ordered[0] if ordered else None
    return None


def role_of(portal_id: int, crm: CrmClient, settings: GuardSettings, user_id: str) -> Role:
    """The mover's role under the portal's settings."""
    if user_id == AUTOMATION:
        return "exempt" if settings.exempt_automation else "automation"
    departments: set[str] = set()
    if settings.head_departments or settings.qa_departments:
        for user in users(portal_id, crm):
            if user.id == user_id:
                departments = set(user.department_ids)
                break
    if user_id in settings.heads or departments & set(settings.head_departments):
        return "head"
    if user_id in settings.qa_users or departments & set(settings.qa_departments):
        return "qa"
    if user_id in settings.exempt_users:
        return "exempt"
    return "manager"


def qa_staff(portal_id: int, crm: CrmClient, settings: GuardSettings) -> list[str]:
    """Active QA users, in a stable order: the named ones and the members of QA departments."""
    everyone = users(portal_id, crm)
    active = {user.id for user in everyone if user.active}
    named = [user_id for user_id in settings.qa_users if user_id in active]
    by_department = [
        user.id
        for user in everyone
        if user.active and set(user.department_ids) & set(settings.qa_departments) and user.id not in named
    ]
    return sorted(set(named + by_department), key=lambda value: (len(value), value))


def heads(portal_id: int, crm: CrmClient, settings: GuardSettings) -> list[str]:
    """Active heads of sales."""
    everyone = users(portal_id, crm)
    return sorted(
        {
            user.id
            for user in everyone
            if user.active and (user.id in settings.heads or set(user.department_ids) & set(settings.head_departments))
        },
        key=lambda value: (len(value), value),
    )
