"""An emulated amoCRM / Kommo account (API v4, OAuth, webhooks, events) for tests and the demo.

sandbox = AmoSandbox(transport=flask_client_transport(app.test_client()))
account = sandbox.seed_account(subdomain="acme")
with responses_amo(sandbox):                      # https://acme.amocrm.ru/api/v4/... is served in-process
    ...
sandbox.act(account, 2).move_lead(lead_id, 143)
sandbox.deliver()
"""

from __future__ import annotations

from sandbox.amocrm.account import (
    Account,
    AmoActor,
    AmoSandbox,
    DigitalPipelineAction,
    HookDelivery,
    OutgoingHook,
    flask_client_transport,
    requests_transport,
)
from sandbox.amocrm.server import create_amo_app, mount_amo_responses, responses_amo

__all__ = [
    "Account",
    "AmoActor",
    "AmoSandbox",
    "DigitalPipelineAction",
    "HookDelivery",
    "OutgoingHook",
    "create_amo_app",
    "flask_client_transport",
    "mount_amo_responses",
    "requests_transport",
    "responses_amo",
]
