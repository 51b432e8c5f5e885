"""Ways to reach the sandbox: in-process through `responses`, or over TLS on a local port."""

from __future__ import annotations

import datetime as dt
import io
import ipaddress
import re
import socket
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


class _KeepAliveHandler(_QuietHandler):
    """Keeps HTTP/1.1 connections open between requests, as Bitrix24's and amoCRM's servers do.

    Werkzeug's own server closes every connection, because http.server cannot tell where an unread
    body ends and the next request starts. Here a request's body (by its Content-Length) is read in full
    before the app runs and the app reads that copy, so the next request on the connection stays
    untouched; a chunked request, or a client asking to close, still gets ``Connection: close``.
    """

    timeout = 60  # an idle connection is closed after a minute (the clients drop theirs after 30 s)

    def run_wsgi(self) -> None:
        self._keep_alive = False
        length = self.headers.get("Content-Length") or "0"
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower() or not length.isdigit():
            super().run_wsgi()
            return
        body = self.rfile.read(int(length)) if int(length) else b""
        real, self.rfile = self.rfile, io.BytesIO(body)
        self._keep_alive = True
        try:
            super().run_wsgi()
        finally:
            self.rfile = real

    def send_header(self, keyword: str, value: str) -> None:
        keep = getattr(self, "_keep_alive", False) and not self.close_connection
        if keep and keyword.lower() == "connection" and value.lower() == "close":
            return
        super().send_header(keyword, value)


class TlsServer:
    """The sandbox served over HTTPS on a local port, in a background thread.

    `wsgi_app` serves something else than the Bitrix24 sandbox (e.g. the amoCRM one) and `names` are
    the names its certificate carries. `connections` counts the TCP connections accepted so far, and
    `drop_connections()` closes the open ones from the server's side (as a server's keep-alive timeout
    would). Connections are kept alive between requests (`_KeepAliveHandler`)."""

    def __init__(
        self,
        sandbox: Sandbox,
        cert_dir: str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        wsgi_app: Any = None,
        names: Iterable[str] = ("127.0.0.1", "localhost"),
    ) -> None:
        self.sandbox = sandbox
        self.tls = make_tls_files(cert_dir, names)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.tls.cert), str(self.tls.key))
        self._server: BaseWSGIServer = make_server(
            host,
            port,
            wsgi_app or create_sandbox_app(sandbox),
            threaded=True,
            ssl_context=context,
            request_handler=_KeepAliveHandler,
        )
        self.host = host
        self.port = self._server.server_port
        self._thread: threading.Thread | None = None
        self.connections = 0
        self._open: list[socket.socket] = []
        self._count_lock = threading.Lock()
        accept = self._server.get_request

        def counted() -> tuple[socket.socket, Any]:
            connection, address = accept()
            # As nginx's tcp_nodelay: without it a response written in pieces (headers, chunks) waits for the
            # client's delayed ACK, about 40 ms per request on loopback.
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._count_lock:
                self.connections += 1
                self._open.append(connection)
            return connection, address

        self._server.get_request = counted  # type: ignore[method-assign]

    def drop_connections(self) -> None:
        """Close every connection accepted so far from the server's side."""
        with self._count_lock:
            open_now, self._open = self._open, []
        for connection in open_now:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

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
        """Stop serving (open keep-alive connections are closed too)."""
        self._server.shutdown()
        self._server.server_close()
        self.drop_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)


def serve_tls(
    sandbox: Sandbox, cert_dir: str | Path, host: str = "127.0.0.1", port: int = 0, **options: Any
) -> TlsServer:
    """Start the sandbox over TLS in a background thread (options: see `TlsServer`)."""
    return TlsServer(sandbox, cert_dir, host, port, **options).start()
