"""Ways to reach the sandbox: in-process through `responses`, or over TLS on a local port."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import ssl
import threading
import urllib.parse
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import responses
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from sandbox.sandbox import Sandbox
from sandbox.server import create_sandbox_app

OAUTH_HOSTS: tuple[str, ...] = ("oauth.bitrix.info", "oauth.bitrix24.tech")


# ---- responses (in-process) -------------------------------------------------------------------------


def _callback(app: Flask) -> Any:
    client = app.test_client()

    def handle(prepared: Any) -> tuple[int, dict[str, str], bytes]:
        url = urllib.parse.urlsplit(prepared.url)
        body = prepared.body
        if isinstance(body, str):
            body = body.encode()
        headers = {k: v for k, v in prepared.headers.items() if k.lower() not in {"host", "content-length"}}
        response = client.open(
            url.path or "/",
            method=prepared.method,
            base_url=f"{url.scheme}://{url.netloc}",
            query_string=url.query,
            data=body or b"",
            headers=headers,
        )
        out_headers = {k: v for k, v in response.headers.items() if k.lower() not in {"content-length"}}
        return response.status_code, out_headers, response.get_data()

    return handle


def mount_responses(
    sandbox: Sandbox,
    mock: responses.RequestsMock,
    *,
    hosts: Iterable[str] | None = None,
    passthru: Iterable[str] = (),
) -> None:
    """Serve every https request to the portals' hosts and the OAuth hosts from the sandbox, in-process.
    `hosts` defaults to every portal domain registered now plus the OAuth hosts; `passthru` prefixes
    (e.g. "http://127.0.0.1") go to the real network."""
    app = create_sandbox_app(sandbox)
    names = set(hosts or []) or {p.domain for p in sandbox.portals.values()}
    names |= {sandbox.oauth_host, *OAUTH_HOSTS}
    pattern = re.compile(r"https://(?:" + "|".join(re.escape(h) for h in sorted(names)) + r")(?:/.*)?$")
    callback = _callback(app)
    for method in ("GET", "POST", "PUT", "DELETE", "HEAD"):
        mock.add_callback(method, pattern, callback=callback)
    for prefix in passthru:
        mock.add_passthru(prefix)


@contextmanager
def responses_sandbox(
    sandbox: Sandbox, *, passthru: Iterable[str] = ("http://127.0.0.1", "http://localhost")
) -> Iterator[responses.RequestsMock]:
    """A `responses` mock with the sandbox mounted; anything else not passed through fails loudly."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mount_responses(sandbox, mock, passthru=passthru)
        yield mock


# ---- TLS (out of process / demo) --------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """A local CA and a server certificate for 127.0.0.1 and localhost signed by it."""

    ca_cert: Path
    cert: Path
    key: Path


def make_tls_files(cert_dir: str | Path, hosts: Iterable[str] = ("127.0.0.1", "localhost")) -> TlsFiles:
    """Write (or reuse) a CA certificate and a server certificate + key; point REQUESTS_CA_BUNDLE at `ca_cert`."""
    folder = Path(cert_dir)
    folder.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server-key.pem")
    if files.ca_cert.exists() and files.cert.exists() and files.key.exists():
        return files
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Refusal Control sandbox CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sandbox.local")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    files.key.chmod(0o600)
    return files


class _QuietHandler(WSGIRequestHandler):
    """Logs requests without their query strings (they may carry `auth=` tokens)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = self.path.split("?", 1)[0]
        self.log("info", '"%s %s" %s %s', self.command, path, code, size)


class TlsServer:
    """The sandbox served over HTTPS on a local port, in a background thread."""

    def __init__(self, sandbox: Sandbox, cert_dir: str | Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sandbox = sandbox
        self.tls = make_tls_files(cert_dir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.tls.cert), str(self.tls.key))
        self._server: BaseWSGIServer = make_server(
            host, port, create_sandbox_app(sandbox), threaded=True, ssl_context=context, request_handler=_QuietHandler
        )
        self.host = host
        self.port = self._server.server_port
        self._thread: threading.Thread | None = None

    @property
    def portal_domain(self) -> str:
        """The host:port portals served here should use as their domain."""
        return f"{self.host}:{self.port}"

    @property
    def oauth_host(self) -> str:
        """The OAuth server's host:port (same server, another name for the same address)."""
        return f"localhost:{self.port}"

    @property
    def ca_file(self) -> str:
        """The CA bundle clients verify against (`verify=` / REQUESTS_CA_BUNDLE)."""
        return str(self.tls.ca_cert)

    def start(self) -> TlsServer:
        """Serve in a daemon thread; also makes the sandbox's OAuth host this server."""
        self.sandbox.oauth_host = self.oauth_host
        self._thread = threading.Thread(target=self._server.serve_forever, name="sandbox-tls", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread."""
        self.sandbox.oauth_host = self.oauth_host
        self._server.serve_forever()

    def shutdown(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def serve_tls(sandbox: Sandbox, cert_dir: str | Path, host: str = "127.0.0.1", port: int = 0) -> TlsServer:
    """Start the sandbox over TLS in a background thread."""
    return TlsServer(sandbox, cert_dir, host, port).start()
