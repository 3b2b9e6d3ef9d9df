"""A fault-injecting loopback HTTP/1.1 reverse proxy, put in front of a real server (OpenBao, moto's server, the
token server): it forwards every request, except the Nth..(N+count-1)th matching a rule, which it answers itself
(``Reply``), drops (``DROP``: closes unanswered), resets (``RESET``: RST), forwards and then drops or resets
(``LANDED_DROP`` / ``LANDED_RESET``: the server acted on it, the client never hears), or precedes by a callback
(``Before``: e.g. another writer's write). ``log`` lists every request it saw.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from testing.servers import LoopbackHTTPServer, ThreadedHTTPService

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailers", "transfer-encoding", "upgrade",
              "content-length"}


@dataclass
class Req:
    method: str
    path: str
    headers: Message
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@dataclass(frozen=True)
class Reply:
    """The proxy answers this itself; the request never reaches the server."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"


DROP = "drop"  # close the connection unanswered; the request never reaches the server
RESET = "reset"  # reset the connection (RST); the request never reaches the server
LANDED_DROP = "landed-drop"  # forward (the server acts on it), then close the connection unanswered
LANDED_RESET = "landed-reset"  # forward, then reset the connection


@dataclass(frozen=True)
class Before:
    """Run ``callback`` (e.g. another writer's write), then forward."""

    callback: Callable[[], None]


Action = Reply | str | Before


@dataclass
class Rule:
    match: Callable[[Req], bool]
    action: Action
    nth: int
    count: int
    seen: int = 0
    hits: int = 0

    def fires(self) -> bool:
        """Count one matching call; True for the ``nth`` to ``nth + count - 1``-th of them (the faulted ones)."""
        self.seen += 1
        if self.nth <= self.seen < self.nth + self.count:
            self.hits += 1
            return True
        return False


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LoopbackHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """No per-request logging."""

    def do_GET(self) -> None:
        self._proxy()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _proxy_service(self) -> FaultProxy:
        proxy = self.server.service
        assert isinstance(proxy, FaultProxy)
        return proxy

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _proxy(self) -> None:
        req = Req(self.command, self.path, self.headers, self._body())
        action = self._proxy_service().decide(req)
        if isinstance(action, Reply):
            self._send(action.status, [("Content-Type", action.content_type)], action.body)
            return
        if action in (DROP, RESET):
            self._hang_up(reset=action == RESET)
            return
        if isinstance(action, Before):
            action.callback()
        try:
            status, reason, headers, body = self._forward(req)
        except OSError:
            self._send(502, [("Content-Type", "text/plain")], b"fault proxy: upstream unreachable")
            return
        if action in (LANDED_DROP, LANDED_RESET):
            self._hang_up(reset=action == LANDED_RESET)
            return
        self._send(status, headers, body, reason)

    def _forward(self, req: Req) -> tuple[int, str, list[tuple[str, str]], bytes]:
        host, port = self._proxy_service().upstream
        conn = http.client.HTTPConnection(host, port, timeout=60)
        try:
            conn.putrequest(req.method, req.path, skip_host=True, skip_accept_encoding=True)
            for name, value in req.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    conn.putheader(name, value)
            if req.body or req.method in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(req.body)))
            conn.endheaders(req.body or None)
            response = conn.getresponse()
            body = response.read()
            skip = HOP_BY_HOP | {"server", "date"}
            headers = [(k, v) for k, v in response.getheaders() if k.lower() not in skip]
            return response.status, response.reason, headers, body
        finally:
            conn.close()

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes, reason: str | None = None) -> None:
        self.send_response_only(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _hang_up(self, *, reset: bool) -> None:
        self.close_connection = True
        if reset:  # SO_LINGER 0: close() sends RST instead of FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.connection.close()


class FaultProxy(ThreadedHTTPService):
    """A loopback HTTP/1.1 reverse proxy to ``upstream`` that injects faults by rule, deterministically. It serves
    from the start; ``close()`` stops it. Connections it cuts on purpose (or whose client hung up) print nothing."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname and parts.port
        self.upstream = (parts.hostname, parts.port)
        self.rules: list[Rule] = []
        self.log: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        super().__init__(_ProxyHandler, name="fault-proxy", quiet=True)
        self.url = self.base_url
        self.start()

    def add(self, match: Callable[[Req], bool], action: Action, *, nth: int = 1, count: int = 1) -> Rule:
        """Apply ``action`` to the ``nth`` .. ``nth + count - 1``th requests that ``match``."""
        rule = Rule(match, action, nth, count)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def decide(self, req: Req) -> Action | None:
        with self._lock:
            self.log.append((req.method, req.path, req.headers.get("X-Amz-Target", "")))
            for rule in self.rules:
                if rule.match(req) and rule.fires():
                    return rule.action
        return None

    def close(self) -> None:
        self.stop()
