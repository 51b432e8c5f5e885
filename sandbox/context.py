"""The context of one emulated REST call: which sandbox, portal and user, and how it was called."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sandbox.state import Portal

if TYPE_CHECKING:
    from sandbox.sandbox import Sandbox


@dataclass
class CallContext:
    """Who is calling what."""

    sandbox: Sandbox
    portal: Portal
    user_id: int
    method: str
    auth_connector: str = ""
    in_batch: bool = False
