"""One cap on every inbound body, enforced while the body is read (chunked bodies included).

Werkzeug checks `MAX_CONTENT_LENGTH` against the Content-Length header, and for a body without one (chunked
transfer encoding) it relies on the server: when the server sets `wsgi.input_terminated` (gunicorn always
does, and so does Werkzeug's dev server for chunked bodies) Werkzeug wraps the input in a `LimitedStream`
that stops at the limit. But that stream's `readall()` stops *quietly* at exactly the limit: `get_data()`
and the form parser then get the first MAX_CONTENT_LENGTH bytes of a larger body, truncated, with no error.

`CappedRequest.stream` reads one byte past the limit instead and raises 413 when it gets it, so an
oversized body is refused after at most MAX_CONTENT_LENGTH + 1 bytes were read, never buffered whole.
Without `wsgi.input_terminated` and without Content-Length Werkzeug's own rule stays: the body is empty.
"""

from __future__ import annotations

import io
import typing as t

from flask import Flask, Request, jsonify
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.utils import cached_property
from werkzeug.wsgi import get_input_stream

MAX_BODY_BYTES = 256 * 1024
_READ_CHUNK = 64 * 1024


class BodyTooLarge(RequestEntityTooLarge):
    """A body larger than MAX_CONTENT_LENGTH, announced or found while reading."""

    def __init__(self, limit: int) -> None:
        super().__init__(description=f"the request body is larger than the limit of {limit} bytes")


class CappedStream(io.RawIOBase):
    """The WSGI input, read to its end but never more than `limit` bytes: one byte more is a 413."""

    def __init__(self, stream: t.IO[bytes], limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self._read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: t.Any) -> int:
        wanted = min(len(buffer), self._limit + 1 - self._read)
        if wanted <= 0:
            raise BodyTooLarge(self._limit)
        try:
            data = self._stream.read(wanted)
        except (OSError, ValueError) as error:
            raise ClientDisconnected() from error
        size = len(data)
        buffer[:size] = data
        self._read += size
        if self._read > self._limit:
            raise BodyTooLarge(self._limit)
        return size

    def readall(self) -> bytes:
        out = bytearray()
        while True:
            data = self.read(_READ_CHUNK)
            if not data:
                return bytes(out)
            out.extend(data)


class CappedRequest(Request):
    """Flask's request with a body cap that holds for chunked bodies too (see the module's docstring)."""

    @cached_property
    def stream(self) -> t.IO[bytes]:
        if self.shallow:
            raise RuntimeError("This request was created with 'shallow=True'; its body cannot be read.")
        limit = self.max_content_length
        length = self.content_length
        if limit is None or length is not None or "wsgi.input_terminated" not in self.environ:
            # An announced length (every CRM webhook) is checked against the limit before anything is read, and
            # the server ends the input there: Werkzeug's own stream is exact and costs nothing extra.
            try:
                return get_input_stream(self.environ, max_content_length=limit)
            except RequestEntityTooLarge as error:
                raise BodyTooLarge(limit or 0) from error
        return t.cast(t.IO[bytes], CappedStream(self.environ["wsgi.input"], limit))


def init_app(app: Flask) -> None:
    """Cap every request body at MAX_CONTENT_LENGTH and answer an oversized one with a JSON 413."""
    app.request_class = CappedRequest

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error: RequestEntityTooLarge) -> ResponseReturnValue:
        limit = app.config.get("MAX_CONTENT_LENGTH")
        message = error.description if isinstance(error, BodyTooLarge) else BodyTooLarge(limit or 0).description
        return jsonify(error="too_large", message=message), 413
