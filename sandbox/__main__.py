"""Run the sandbox portal over HTTPS: `python -m sandbox --port 8443 --cert-dir instance/sandbox-tls`.

Seeds one portal whose domain is 127.0.0.1:<port> (the OAuth server answers as localhost:<port>),
writes its credentials and a fresh admin token pair to <cert-dir>/portal.json, optionally installs
the app (ONAPPINSTALL to --install-url) and delivers events in the background.
"""

from __future__ import annotations

import argparse
import json
import sys

from sandbox.events import requests_transport
from sandbox.mount import TlsServer
from sandbox.sandbox import Sandbox
from sandbox.seed import generate_bulk


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, seed, serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--cert-dir", default="instance/sandbox-tls")
    parser.add_argument("--client-id", default=None, help="the app's client_id (default: generated)")
    parser.add_argument("--client-secret", default=None)
    parser.add_argument("--install-url", default=None, help="POST ONAPPINSTALL here after start")
    parser.add_argument("--app-url", default=None, help="robot handlers must live on this host")
    parser.add_argument("--deals", type=int, default=30, help="seeded deals with calls and tasks")
    parser.add_argument("--bulk-deals", type=int, default=0, help="extra cheap deals for benchmarks")
    parser.add_argument("--bulk-tasks", type=int, default=0)
    parser.add_argument("--no-rate-limit", action="store_true")
    parser.add_argument("--verify", default=None, help="CA bundle for delivering events to an https app")
    args = parser.parse_args(argv)

    sandbox = Sandbox()
    server = TlsServer(sandbox, args.cert_dir, args.host, args.port)
    portal = sandbox.seed_portal(
        domain=server.portal_domain,
        client_id=args.client_id,
        client_secret=args.client_secret,
        deals=args.deals,
        app_url=args.app_url,
    )
    if args.bulk_deals or args.bulk_tasks:
        generate_bulk(portal, deals=args.bulk_deals, tasks=args.bulk_tasks)
    if args.no_rate_limit:
        sandbox.set_rate_limit(portal, enabled=False)
    sandbox.oauth_host = server.oauth_host
    tokens = sandbox.issue_tokens(portal)
    info = {
        "domain": portal.domain,
        "member_id": portal.member_id,
        "application_token": portal.application_token,
        "client_id": portal.client_id,
        "client_secret": portal.client_secret,
        "client_endpoint": portal.client_endpoint,
        "server_endpoint": sandbox.server_endpoint,
        "oauth_token_url": f"https://{server.oauth_host}/oauth/token/",
        "ca_file": server.ca_file,
        "admin_tokens": tokens,
    }
    info_file = server.tls.ca_cert.parent / "portal.json"
    info_file.write_text(json.dumps(info, ensure_ascii=False, indent=2))
    info_file.chmod(0o600)
    if args.install_url:
        sandbox.install_app(portal, install_url=args.install_url)
    sandbox.start_delivery_thread(transport=requests_transport(verify=args.verify or True))
    print(
        f"Sandbox portal https://{portal.domain}/ (OAuth https://{server.oauth_host}/oauth/token/); "
        f"REQUESTS_CA_BUNDLE={server.ca_file}; credentials in {info_file}",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop_delivery_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
