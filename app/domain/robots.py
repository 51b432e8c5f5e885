"""The app's automation robots: one registry, installed into each CRM, invoked through handlers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

PropertyType = Literal["bool", "date", "datetime", "double", "int", "select", "string", "text", "user"]


@dataclass(frozen=True)
class RobotProperty:
    """An input or output parameter of a robot, named in Russian and English."""

    name_ru: str
    name_en: str
    type: PropertyType = "string"
    required: bool = False
    options: dict[str, str] = field(default_factory=dict)
    default: Any = None


@dataclass(frozen=True)
class RobotInvocation:
    """A robot call as the domain sees it."""

    portal_id: int
    code: str
    deal_id: str | None
    properties: dict[str, Any]
    user_id: str | None
    event_token: str = ""


@dataclass(frozen=True)
class Robot:
    """A robot the installer registers; `handler` is fn(invocation) -> return values."""

    code: str
    name_ru: str
    name_en: str
    description_ru: str
    description_en: str
    handler: Callable[[RobotInvocation], dict[str, Any]]
    properties: dict[str, RobotProperty] = field(default_factory=dict)
    return_properties: dict[str, RobotProperty] = field(default_factory=dict)


REGISTRY: dict[str, Robot] = {}


def register(robot: Robot) -> Robot:
    """Add a robot to the registry (create_app registers every robot of the app)."""
    REGISTRY[robot.code] = robot
    return robot
