"""Fake OpenAI OAuth token endpoint (``POST /oauth/token``) used by Codex to refresh ChatGPT logins.

Strict about refresh-token rotation: reusing a spent refresh token revokes the whole chain.
Fault modes simulate server errors, odd bodies and dropped connections. Standalone use, from the repository
root: ``python -m testing.tokenserver --port 0 --state-file state.json`` prints the URL on its first
stdout line, serves until SIGTERM/SIGINT and rewrites the state file after every request.

Needs only the standard library (``scripts/demo`` runs it with nothing but codex-ci's core installed).
Subclasses hook into a request with :meth:`TokenServer.recorded`, :meth:`TokenServer.answering` and
:meth:`TokenServer.answered` (the crash tests' timestamps, the fleet simulation's cancellations).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import signal
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from testing.servers import LoopbackHTTPServer, ThreadedHTTPService

CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"
TOKEN_PATH = "/oauth/token"
AUTH_CLAIM = "https://api.openai.com/auth"
_NOW: Any = object()  # sentinel: "use the current time" for make_login(last_refresh=...)


def make_jwt(claims: dict[str, Any]) -> str:
    """Return a JWT for ``claims``: HS256 header, fake signature, unpadded base64url segments."""
    parts = [json.dumps({"alg": "HS256", "typ": "JWT"}).encode(), json.dumps(claims).encode(), b"fake-signature"]
    return ".".join(base64.urlsafe_b64encode(p).rstrip(b"=").decode("ascii") for p in parts)


def decode_jwt_payload(token: str) -> dict[str, Any]:
    """Decode the payload segment of a JWT without verifying anything."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def rfc3339_now() -> str:
    """Current UTC time in the format Codex writes, e.g. ``2026-01-01T00:00:00.000000Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def make_login(
    *,
    access_exp: int | None,
    refresh_token: str,
    email: str = "ci@example.com",
    account_id: str = "acct-1234567890",
    plan: str = "plus",
    last_refresh: str | None = _NOW,
    canary: str = "",
    issued_at: int | None = None,
) -> dict[str, Any]:
    """Return an ``auth.json`` dict shaped like the one Codex writes for a ChatGPT login.

    ``access_exp=None`` omits ``exp`` from the access token; ``issued_at`` is the access token's ``iat``
    (default: a day ago, a login made some time before the test) and ``last_refresh`` defaults to it;
    ``canary`` adds a ``canary`` claim to the access token.
    """
    now = int(time.time())
    issued = now - 86400 if issued_at is None else issued_at
    auth = {"chatgpt_account_id": account_id, "chatgpt_plan_type": plan, "chatgpt_user_id": "user-abc"}
    id_exp = access_exp if access_exp is not None else now + 3600
    id_claims = {"iss": "https://auth.openai.com", "aud": CLIENT_ID, "sub": "user-abc", "email": email,
                 "exp": id_exp, "iat": now, AUTH_CLAIM: auth}
    access_claims: dict[str, Any] = {"iat": issued, AUTH_CLAIM: auth}
    if access_exp is not None:
        access_claims["exp"] = access_exp
    if canary:
        access_claims["canary"] = canary
    tokens = {"id_token": make_jwt(id_claims), "access_token": make_jwt(access_claims),
              "refresh_token": refresh_token, "account_id": account_id}
    return {"auth_mode": "chatgpt", "OPENAI_API_KEY": None, "tokens": tokens,
            "last_refresh": rfc3339(issued) if last_refresh is _NOW else last_refresh}


@dataclass(frozen=True)
class Reply:
    """An HTTP answer; ``status=None`` means close the socket without answering."""

    status: int | None
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def _json(status: int, obj: Any, *headers: tuple[str, str]) -> Reply:
    return Reply(status, json.dumps(obj).encode(), headers=headers)


def _error(code: str, message: str) -> Reply:
    return _json(401, {"error": {"code": code, "message": message, "type": "invalid_request_error"}})


_DROP = Reply(None)
_INVALIDATED = _error("refresh_token_invalidated", "Your refresh token has been invalidated.")
_REUSED = _error("refresh_token_reused", "Your refresh token has already been used.")
_FAULTS: dict[str, Reply] = {
    "http500": _json(500, {"error": "server_error"}),
    "http502": _json(502, {"error": "server_error"}),
    "http503": _json(503, {"error": "server_error"}),
    "http429": _json(429, {"error": "rate_limited"}, ("Retry-After", "1")),
    "expired": _error("refresh_token_expired", "Your refresh token has expired."),
    "reused": _REUSED,
    "invalidated": _json(401, {"error": "refresh_token_invalidated"}),
    "invalid_grant": _json(400, {"error": "invalid_grant"}),
    "code_toplevel": _json(400, {"code": "REFRESH_TOKEN_EXPIRED"}),
    "unauthorized": _json(401, {}),
    "garbage": Reply(200, b"<html>not json</html>", "text/html"),
    "html500": Reply(500, b"<html><body><h1>500 Internal Server Error</h1></body></html>", "text/html"),
    "empty_ok": _json(200, {}),
    "drop": _DROP,
}
MODES = frozenset(_FAULTS) | {"ok", "slow", "partial", "drop_after_rotate"}
_RECORDED_HEADERS = ("content-type", "user-agent", "originator")


class _Handler(BaseHTTPRequestHandler):
    server: LoopbackHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output clean: no per-request logging to stderr."""

    def do_GET(self) -> None:
        self._send(_json(404, {"error": "not_found"}))

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        raw = self.rfile.read(length)
        token_server = self.server.service
        assert isinstance(token_server, TokenServer)
        parts = urlsplit(self.path)
        reply, entry = token_server.handle(parts.path, self.headers, raw)
        try:
            token_server.answering(entry, parse_qs(parts.query))
            if token_server.delay > 0:
                time.sleep(token_server.delay)
            if reply.status is None:
                self.close_connection = True
                return
            self._send(reply)
        finally:
            token_server.answered(entry)

    def _send(self, reply: Reply) -> None:
        assert reply.status is not None
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)


class TokenServer(ThreadedHTTPService):
    """Threaded loopback HTTP server imitating ``POST /oauth/token`` with strict rotation.

    Requests are validated first in every mode (400 invalid_request / 401 invalid_client).
    Mode "ok" (and "slow", which is "ok" plus ``delay``) rotates the live token; ``_FAULTS``
    modes answer canned replies without rotating; "partial" returns only a new access token;
    "drop_after_rotate" processes like "ok" then closes the socket unanswered. ``delay``
    sleeps after the reply is decided (so after rotation) in every mode.
    State is guarded by ``lock`` (reentrant); ``posts`` counts POSTs to the token path and ``requests``
    logs every POST with its ``outcome`` (e.g. rotated, replayed, reused, revoked, fault:http500).
    """

    def __init__(
        self,
        initial_refresh_token: str,
        grace: float = 0.0,
        access_ttl: int = 3600,
        mode: str = "ok",
        delay: float = 0.0,
        client_id: str = CLIENT_ID,
        token_prefix: str = "CANARY",
        *,
        issued_age: int = 0,
        port: int = 0,
        state_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.grace = grace
        self.access_ttl = access_ttl
        self.delay = delay
        self.client_id = client_id
        self.token_prefix = token_prefix
        self.issued_age = issued_age  # the access tokens it issues say (iat) they were issued this long ago
        self.state_file = Path(state_file) if state_file is not None else None
        self.lock = threading.RLock()
        self.posts = self.successes = self.reused = self.replays = 0
        self.revoked = False
        self.requests: list[dict[str, Any]] = []
        self.extra_answer: dict[str, Any] = {}  # added to every rotated answer (e.g. earliest_refresh_at)
        self._live = initial_refresh_token
        self._spent: dict[str, tuple[float, dict[str, Any]]] = {}  # token -> (spent at, response)
        self._last_spent: str | None = None
        self.issued = 0  # refresh tokens issued so far (the nth rotation issues the nth)
        self.mode = "ok"
        self._mode_left: int | None = None
        self.set_mode(mode)
        super().__init__(_Handler, port, name="tokenserver")
        self.url = f"{self.base_url}{TOKEN_PATH}"

    @property
    def current_refresh_token(self) -> str:
        """The live refresh token (dead too once ``revoked`` is set)."""
        with self.lock:
            return self._live

    def spent_tokens(self) -> dict[str, float]:
        """Every refresh token spent by a rotation, and when (``time.monotonic()``)."""
        with self.lock:
            return {token: at for token, (at, _) in self._spent.items()}

    def set_mode(self, mode: str, count: int | None = None) -> None:
        """Switch to ``mode``; with ``count``, only for the next ``count`` token POSTs."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {sorted(MODES)}")
        with self.lock:
            self.mode, self._mode_left = mode, count

    def start(self) -> TokenServer:
        """Write the initial state file and serve in a background thread (``with TokenServer(...)`` stops on
        exit)."""
        with self.lock:
            self._write_state()
        return super().start()

    def recorded(self, entry: dict[str, Any], reply: Reply) -> None:
        """Hook: a POST's ``reply`` was decided and logged as ``entry`` in ``requests`` (called holding ``lock``)."""

    def answering(self, entry: dict[str, Any], query: dict[str, list[str]]) -> None:
        """Hook: in the request's thread, after the reply was decided, before ``delay`` and the answer; ``query``
        is the request URL's query string."""

    def answered(self, entry: dict[str, Any]) -> None:
        """Hook: in the request's thread, once the answer was written (or the write failed, or it was dropped)."""

    def snapshot(self) -> dict[str, Any]:
        """Counters and request log as written to the state file (caller holds ``lock``)."""
        return {"posts": self.posts, "successes": self.successes, "reused": self.reused,
                "replays": self.replays, "revoked": self.revoked, "requests": self.requests}

    def issue_next(self) -> dict[str, Any]:
        """Internal: spend the live token and return the token response (caller holds ``lock``)."""
        self.issued += 1
        new_rt = f"{self.token_prefix}-rt-{self.issued}-{secrets.token_hex(8)}"
        tokens = self._new_tokens(new_rt)
        response = {"id_token": tokens["id_token"], "access_token": tokens["access_token"],
                    "refresh_token": new_rt, "token_type": "Bearer", "expires_in": self.access_ttl,
                    **self.extra_answer}
        self._spent[self._live] = (time.monotonic(), response)
        self._last_spent, self._live = self._live, new_rt
        return response

    def _new_tokens(self, refresh_token: str) -> dict[str, Any]:
        now = int(time.time())
        login = make_login(access_exp=now + self.access_ttl, refresh_token=refresh_token, canary=self.token_prefix,
                           issued_at=now - self.issued_age)
        tokens: dict[str, Any] = login["tokens"]
        return tokens

    def _take_mode(self) -> str:
        mode = self.mode
        if self._mode_left is not None:
            self._mode_left -= 1
            if self._mode_left <= 0:
                self.mode, self._mode_left = "ok", None
        return mode

    def handle(self, path: str, headers: Message, raw: bytes) -> tuple[Reply, dict[str, Any]]:
        """Decide the reply to one POST, update counters and the state file; the reply and the request's entry."""
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        with self.lock:
            if path == TOKEN_PATH:
                self.posts += 1
                reply, outcome = self._respond(self._take_mode(), headers.get("Content-Type", ""), body)
            else:
                reply, outcome = _json(404, {"error": "not_found"}), "not_found"
            self.successes += outcome == "rotated"
            self.replays += outcome == "replayed"
            self.reused += outcome in ("reused", "fault:reused")
            recorded = {k: headers[k] for k in _RECORDED_HEADERS if k in headers}
            entry = {"body": body, "headers": recorded, "path": path, "outcome": outcome, "status": reply.status}
            self.requests.append(entry)
            self.recorded(entry, reply)
            self._write_state()
        return reply, entry

    def _respond(self, mode: str, content_type: str, body: Any) -> tuple[Reply, str]:
        if (
            content_type.split(";")[0].strip().lower() != "application/json"
            or not isinstance(body, dict)
            or body.get("grant_type") != "refresh_token"
            or not isinstance(body.get("client_id"), str)
            or not isinstance(body.get("refresh_token"), str)
        ):
            return _json(400, {"error": "invalid_request"}), "invalid_request"
        if body["client_id"] != self.client_id:
            return _json(401, {"error": "invalid_client"}), "invalid_client"
        token = body["refresh_token"]
        if mode in _FAULTS:
            return _FAULTS[mode], f"fault:{mode}"
        if mode == "partial" and token == self._live and not self.revoked:
            return _json(200, {"access_token": self._new_tokens(token)["access_token"]}), "partial"
        reply, outcome = self._refresh(token)
        if mode == "drop_after_rotate":
            return _DROP, f"{outcome}+dropped"
        return reply, outcome

    def _refresh(self, token: str) -> tuple[Reply, str]:
        """Strict rotation: live → rotate; latest spent within grace → replay; spent → revoke."""
        if self.revoked:
            return _INVALIDATED, "revoked"
        if token == self._live:
            return _json(200, self.issue_next()), "rotated"
        if token not in self._spent:
            return _INVALIDATED, "unknown"
        spent_at, response = self._spent[token]
        if token == self._last_spent and time.monotonic() - spent_at < self.grace:
            return _json(200, response), "replayed"
        self.revoked = True
        return _REUSED, "reused"

    def _write_state(self) -> None:
        if self.state_file is None:
            return
        tmp = self.state_file.with_name(f"{self.state_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.snapshot()))
        os.replace(tmp, self.state_file)


def main(argv: list[str] | None = None) -> int:
    """Run a TokenServer until SIGTERM/SIGINT; print its URL first."""
    parser = argparse.ArgumentParser(description=__doc__)
    add = parser.add_argument
    add("--port", type=int, default=0)
    add("--state-file", help="JSON file with counters and the request log, rewritten after every request")
    add("--refresh-token", default="CANARY-rt-0", help="initial live refresh token")
    add("--grace", type=float, default=0.0, help="seconds the latest spent token may be replayed")
    add("--mode", choices=sorted(MODES), default="ok")
    add("--delay", type=float, default=0.0, help="seconds to sleep before answering each request")
    add("--access-ttl", type=int, default=3600)
    add("--token-prefix", default="CANARY")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = TokenServer(
        args.refresh_token, grace=args.grace, access_ttl=args.access_ttl, mode=args.mode,
        delay=args.delay, token_prefix=args.token_prefix, port=args.port, state_file=args.state_file,
    )
    with server:
        print(server.url, flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
