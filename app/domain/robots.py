"""The app's automation robots: one registry, installed into each CRM, invoked through handlers."""

from __future__ import annotations

import importlib
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
    """A robot the installer registers; `handler` is a dotted path to fn(invocation) -> return values."""

    code: str
    name_ru: str
    name_en: str
    description_ru: str
    description_en: str
    handler: str
    properties: dict[str, RobotProperty] = field(default_factory=dict)
    return_properties: dict[str, RobotProperty] = field(default_factory=dict)

    def resolve(self) -> Callable[[RobotInvocation], dict[str, Any]]:
        """The handler function."""
        module_name, _, attribute = self.handler.rpartition(".")
        return getattr(importlib.import_module(module_name), attribute)


REGISTRY: dict[str, Robot] = {}


def register(robot: Robot) -> Robot:
    """Add a robot to the registry (feature modules call this at import)."""
    REGISTRY[robot.code] = robot
    return robot
