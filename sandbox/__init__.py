"""Emulated Bitrix24 portals plus the OAuth server, for tests and the demo.

sandbox = Sandbox()
portal = sandbox.seed_portal(domain="acme.bitrix24.ru")
tokens = sandbox.issue_tokens(portal)            # or install_app(...) / the OAuth grants
with responses_sandbox(sandbox):                 # requests to https://acme.bitrix24.ru/rest/... are served
    ...
sandbox.act(portal, user_id=3).move_deal(5, "LOSE")
sandbox.deliver(flask_client_transport(app.test_client()))
"""

from __future__ import annotations

from sandbox.clock import Clock, ManualClock
from sandbox.errors import RestError
from sandbox.events import Delivery, OutgoingEvent, flask_client_transport, form_body, requests_transport
from sandbox.mount import TlsServer, make_tls_files, mount_responses, responses_sandbox, serve_tls
from sandbox.sandbox import Actor, Sandbox
from sandbox.seed import generate_bulk, seed_portal
from sandbox.server import create_sandbox_app
from sandbox.state import Portal

__all__ = [
    "Actor",
    "Clock",
    "Delivery",
    "ManualClock",
    "OutgoingEvent",
    "Portal",
    "RestError",
    "Sandbox",
    "TlsServer",
    "create_sandbox_app",
    "flask_client_transport",
    "form_body",
    "generate_bulk",
    "make_tls_files",
    "mount_responses",
    "requests_transport",
    "responses_sandbox",
    "seed_portal",
    "serve_tls",
]
