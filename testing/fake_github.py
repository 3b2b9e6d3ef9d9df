"""A loopback fake of GitHub's REST API for Actions secrets: repository, environment and organisation secrets.

It answers like GitHub (200 for a public key, 201 when a PUT creates a secret and 204 when it updates one, 404 for
an unknown secret or scope, 401 for a bad token, 403 for a token without the Secrets permission), checks the bearer
token, and decrypts every PUT with its own private key (PyNaCl) so that tests can assert on the plaintext. Every
error body carries ``BODY_MARKER``: no codex-ci message may ever show it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote, urlsplit

from testing.servers import LoopbackHTTPServer, ThreadedHTTPService

BODY_MARKER = "FAKE-GITHUB-BODY-TEXT"
WRITE_TOKEN = "ghs_CANARY_write_token_0123456789"
READ_ONLY_TOKEN = "ghs_CANARY_no_secrets_permission_0123"
_ROUTE = re.compile(
    r"^/(?P<scope>repos/[^/]+/[^/]+/actions|repos/[^/]+/[^/]+/environments/[^/]+|orgs/[^/]+/actions)"
    r"/secrets/(?P<name>[^/]+)(?P<repos>/repositories)?$"
)


@dataclass
class Secret:
    plaintext: bytes
    visibility: str | None = None
    selected: list[int] = field(default_factory=list)


class FakeGitHub(ThreadedHTTPService):
    """``with FakeGitHub() as gh: gh.url``. Scopes that exist: ``repos``, ``environments`` (of a repo), ``orgs``."""

    def __init__(self, repos: tuple[str, ...] = ("octo/app",), environments: tuple[str, ...] = ("octo/app:prod",),
                 orgs: tuple[str, ...] = ("octo",)) -> None:
        from nacl.public import PrivateKey  # imported here: loading the plugin must not need PyNaCl

        self.scopes = {f"repos/{r}/actions" for r in repos} | {f"orgs/{o}/actions" for o in orgs}
        self.scopes |= {f"repos/{e.split(':')[0]}/environments/{e.split(':')[1]}" for e in environments}
        self.keys = {scope: PrivateKey.generate() for scope in self.scopes}
        self.secrets: dict[tuple[str, str], Secret] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, in order
        self.puts: list[str] = []  # "scope/NAME" of every accepted PUT, in order
        self.statuses: list[int] = []  # the status of every answer, in order
        self.headers: list[dict[str, str]] = []
        self.tokens = {WRITE_TOKEN: "write", READ_ONLY_TOKEN: "none"}
        self.lock = threading.Lock()
        super().__init__(_Handler, name="fake-github")

    @property
    def url(self) -> str:
        return self.base_url

    def key_id(self, scope: str) -> str:
        return "key-" + hashlib.sha256(scope.encode()).hexdigest()[:12]

    def value(self, scope: str, name: str) -> bytes | None:
        secret = self.secrets.get((scope, name))
        return secret.plaintext if secret else None

    def answer(self, method: str, target: str, auth: str, body: bytes) -> tuple[int, Any]:
        path = urlsplit(target).path
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
        if self.tokens.get(token) is None:
            return 401, {"message": f"Bad credentials {BODY_MARKER}"}
        match = _ROUTE.match(path)
        if match is None or unquote(match["scope"]) not in self.scopes:
            return 404, {"message": f"Not Found {BODY_MARKER}"}
        if self.tokens[token] != "write":
            return 403, {"message": f"Resource not accessible by integration {BODY_MARKER}"}
        scope, name = unquote(match["scope"]), match["name"]
        if name == "public-key" and method == "GET":
            key = self.keys[scope].public_key.encode()
            return 200, {"key_id": self.key_id(scope), "key": base64.b64encode(key).decode()}
        secret = self.secrets.get((scope, name.upper()))
        if match["repos"]:
            if method != "GET" or secret is None:
                return 404, {"message": f"Not Found {BODY_MARKER}"}
            return 200, {"total_count": len(secret.selected), "repositories": [{"id": i} for i in secret.selected]}
        if method == "GET":
            if secret is None:
                return 404, {"message": f"Not Found {BODY_MARKER}"}
            meta: dict[str, Any] = {"name": name.upper(), "created_at": "2026-01-01T00:00:00Z"}
            if secret.visibility is not None:
                meta["visibility"] = secret.visibility
            return 200, meta
        if method != "PUT":
            return 405, {"message": BODY_MARKER}
        return self._put(scope, name.upper(), secret, body)

    def _put(self, scope: str, name: str, secret: Secret | None, body: bytes) -> tuple[int, Any]:
        from nacl.public import SealedBox

        try:
            data = json.loads(body)
            if data["key_id"] != self.key_id(scope):
                return 422, {"message": f"Bad key_id {BODY_MARKER}"}
            plaintext = SealedBox(self.keys[scope]).decrypt(base64.b64decode(data["encrypted_value"]))
        except (ValueError, KeyError, TypeError):
            return 422, {"message": f"Invalid request {BODY_MARKER}"}
        stored = Secret(plaintext)
        if scope.startswith("orgs/"):
            if data.get("visibility") not in ("all", "private", "selected"):
                return 422, {"message": f"visibility is required {BODY_MARKER}"}
            stored.visibility = data["visibility"]
            stored.selected = list(data.get("selected_repository_ids") or [])
        self.secrets[(scope, name)] = stored
        self.puts.append(f"{scope}/{name}")
        return (201 if secret is None else 204), None

class _Handler(BaseHTTPRequestHandler):
    server: LoopbackHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        fake = self.server.service
        assert isinstance(fake, FakeGitHub)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with fake.lock:
            fake.requests.append((self.command, self.path))
            fake.headers.append({k.lower(): v for k, v in self.headers.items()})
            status, answer = fake.answer(self.command, self.path, self.headers.get("Authorization", ""), body)
            fake.statuses.append(status)
        payload = b"" if answer is None else json.dumps(answer).encode()
        self.send_response(status)
        if payload:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_PUT = do_DELETE = _serve
