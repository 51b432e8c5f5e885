"""One HTTP session (keep-alive connections) per CRM portal and process.

Every REST call used to open a new TCP and TLS connection (``requests.post``: a fresh session each
time). `sessions` keeps one `OriginSession` per (process, CRM, portal) instead, so sequential calls to
a portal reuse one connection. What a reused session may never do, it refuses in code:

* talk to any origin but the one it was made for (scheme, host and port, `app.crm.hosts.origin_of`):
  `OriginSession.send` raises `ForeignHost` before anything leaves, so a token or secret cannot reach
  another host through a pooled connection or a merged header;
* follow a redirect (``allow_redirects`` is forced off in `OriginSession.send`);
* keep cookies (a portal's PHP session cookie sent back would serialise our calls on the portal and
  change what each request means; every call stays as stateless as a fresh ``requests.post``);
* be used by a process other than the one that made it: the registry is keyed by ``os.getpid()`` and
  emptied (without closing the parent's sockets) in a forked child, and a session refuses to send
  from another pid. RQ's work-horses therefore make their own sessions after the fork.

Sessions are made lazily, bounded (least recently used beyond `LIMIT` are closed), replaced when the
portal's origin changes or after `IDLE_SECONDS` without use (so we do not race a server closing an
idle keep-alive connection), and dropped by the clients after a transport error (`discard`), so the
next call starts on a new connection. Environment settings (proxies, ``REQUESTS_CA_BUNDLE``) apply as
they did to ``requests.post``. The pool is thread-safe (urllib3); the registry takes a lock.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from typing import Any

import requests
from requests.cookies import RequestsCookieJar

from app.crm.hosts import ForeignHost, origin_of

LIMIT = 256
IDLE_SECONDS = 30.0


class _NoCookies(RequestsCookieJar):
    """A cookie jar that keeps nothing: each call sends only what the client put on it."""

    def set_cookie(self, cookie: Any, *args: Any, **kwargs: Any) -> None:
        return None


class OriginSession(requests.Session):
    """A `requests.Session` bound to one verified https origin; never redirects, keeps no cookies."""

    def __init__(self, base: str) -> None:
        super().__init__()
        origin = origin_of(base)
        if origin is None:
            raise ForeignHost("a CRM session needs a plain https origin")
        self.origin = origin
        self.base = f"https://{origin[1]}:{origin[2]}"
        self.pid = os.getpid()
        self.last_used = time.monotonic()
        self.cookies = _NoCookies()

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if os.getpid() != self.pid:
            raise RuntimeError("a CRM session was carried into a forked process; each process makes its own")
        if origin_of(request.url or "") != self.origin:
            raise ForeignHost("a portal's session only talks to its own verified origin; nothing was sent")
        kwargs["allow_redirects"] = False
        return super().send(request, **kwargs)


class SessionRegistry:
    """(pid, crm, portal id) -> `OriginSession`, least recently used first out."""

    def __init__(self, limit: int = LIMIT, idle_seconds: float = IDLE_SECONDS) -> None:
        self.limit = limit
        self.idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._sessions: OrderedDict[tuple[int, str, int], OriginSession] = OrderedDict()

    def get(self, crm: str, portal_id: int, base: str) -> OriginSession:
        """The session for the portal whose verified origin is `base`'s (made now if need be)."""
        key = (os.getpid(), crm, portal_id)
        origin = origin_of(base)
        if origin is None:
            raise ForeignHost("a CRM session needs a plain https origin")
        now = time.monotonic()
        closing: list[OriginSession] = []
        with self._lock:
            session = self._sessions.get(key)
            if session is not None and (session.origin != origin or now - session.last_used > self.idle_seconds):
                closing.append(self._sessions.pop(key))
                session = None
            if session is None:
                session = OriginSession(base)
                self._sessions[key] = session
                while len(self._sessions) > self.limit:
                    closing.append(self._sessions.popitem(last=False)[1])
            else:
                self._sessions.move_to_end(key)
            session.last_used = now
        for old in closing:
            old.close()
        return session

    def discard(self, crm: str, portal_id: int, session: OriginSession) -> None:
        """Close `session` after a transport error; the portal's next call starts a new one."""
        key = (os.getpid(), crm, portal_id)
        with self._lock:
            if self._sessions.get(key) is session:
                del self._sessions[key]
        session.close()

    def clear(self) -> None:
        """Close every session of this process (tests, shutdown)."""
        with self._lock:
            mine = [s for (pid, _, _), s in self._sessions.items() if pid == os.getpid()]
            self._sessions.clear()
        for session in mine:
            session.close()

    def __len__(self) -> int:
        return len(self._sessions)

    def _after_fork_in_child(self) -> None:
        # The parent's sessions (and possibly its lock, held by another thread at the fork) stay with the
        # parent: forget them without closing (closing would not touch the parent's sockets, but nothing of
        # theirs is ours to use).
        self._lock = threading.Lock()
        self._sessions = OrderedDict()


sessions = SessionRegistry()
os.register_at_fork(after_in_child=sessions._after_fork_in_child)
