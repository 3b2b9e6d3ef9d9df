"""The failure tables the property suites (tests/properties/) and tests/test_refresh.py are driven by: one row per
way the token endpoint can answer (:data:`ENDPOINT`, every mode of ``TokenServer.set_mode``) and one row per fault
a store can be given (:data:`STORE_FAULTS`), each with the exit code codex-ci must end with. A test that needs a
subset filters the rows; what a row says is asserted wherever it is used, so a table that is wrong fails.
"""

from __future__ import annotations

from dataclasses import dataclass

from codex_ci.errors import ExitCode
from testing.tokenserver import MODES


@dataclass(frozen=True)
class EndpointFailure:
    """One mode of the token server, as a refresh that meets it on every attempt ends.

    ``status``: the HTTP status it answers (None: no answer). ``json``: the answer's body is JSON. ``retried``:
    codex-ci tries again (the request cannot have spent the token). ``spent``: the server rotated the refresh token
    it was sent. ``changed``: auth.json then holds other tokens. ``error``: words of the one error line.
    """

    mode: str
    exit_code: ExitCode
    status: int | None
    json: bool
    retried: bool
    spent: bool
    changed: bool
    error: str
    description: str

    @property
    def server_error(self) -> bool:
        """A 5xx answer."""
        return self.status is not None and self.status >= 500

    @property
    def rejected(self) -> bool:
        """The login is dead: log in again."""
        return self.exit_code == ExitCode.LOGIN_REJECTED

    @property
    def ambiguous(self) -> bool:
        """Failed after the request may have reached the server: never retried, the token may be spent."""
        return self.exit_code == ExitCode.TRANSIENT and not self.retried


_OK, _TRANSIENT, _REJECTED = ExitCode.OK, ExitCode.TRANSIENT, ExitCode.LOGIN_REJECTED
_GONE = "rejected the login"
_MAYBE = "may have reached the server"

ENDPOINT: tuple[EndpointFailure, ...] = (
    EndpointFailure("ok", _OK, 200, True, False, True, True, "", "rotates the refresh token"),
    EndpointFailure("partial", _OK, 200, True, False, False, True, "",
                    "200 with a new access token only: the other tokens are kept"),
    EndpointFailure("empty_ok", _OK, 200, True, False, False, False, "",
                    "200 {}: every token kept, last_refresh stamped"),
    EndpointFailure("http500", _TRANSIENT, 500, True, True, False, False, "HTTP 500", "500 server_error"),
    EndpointFailure("http502", _TRANSIENT, 502, True, True, False, False, "HTTP 502", "502 server_error"),
    EndpointFailure("http503", _TRANSIENT, 503, True, True, False, False, "HTTP 503", "503 server_error"),
    EndpointFailure("http429", _TRANSIENT, 429, True, True, False, False, "HTTP 429",
                    "429 rate_limited with Retry-After: 1"),
    EndpointFailure("html500", _TRANSIENT, 500, False, True, False, False, "HTTP 500",
                    "500 with an HTML page (a gateway's)"),
    EndpointFailure("expired", _REJECTED, 401, True, False, False, False, _GONE, "401 refresh_token_expired"),
    EndpointFailure("reused", _REJECTED, 401, True, False, False, False, _GONE, "401 refresh_token_reused"),
    EndpointFailure("invalidated", _REJECTED, 401, True, False, False, False, _GONE,
                    "401 refresh_token_invalidated (a bare error string)"),
    EndpointFailure("invalid_grant", _REJECTED, 400, True, False, False, False, _GONE, "400 invalid_grant"),
    EndpointFailure("code_toplevel", _REJECTED, 400, True, False, False, False, _GONE,
                    "400 with a top-level code REFRESH_TOKEN_EXPIRED"),
    EndpointFailure("unauthorized", _REJECTED, 401, True, False, False, False, _GONE, "401 with an empty object"),
    EndpointFailure("garbage", _TRANSIENT, 200, False, False, False, False, _MAYBE, "200 with an HTML body"),
    EndpointFailure("drop", _TRANSIENT, None, False, False, False, False, _MAYBE,
                    "the connection closed unanswered, nothing rotated"),
    EndpointFailure("drop_after_rotate", _TRANSIENT, None, False, False, True, False, _MAYBE,
                    "rotates, then closes the connection unanswered"),
    EndpointFailure("slow", _TRANSIENT, 200, True, False, True, False, "no answer from 127.0.0.1 in time",
                    "rotates, then answers after the server's delay: later than --timeout"),
)


def endpoint(mode: str) -> EndpointFailure:
    """The row of ``mode``."""
    for row in ENDPOINT:
        if row.mode == mode:
            return row
    raise KeyError(mode)


@dataclass(frozen=True)
class StoreFault:
    """One fault of one store kind, and how ``restore``, ``persist``, ``refresh --store`` and ``status --store``
    end (``exit_code``) when a store call meets it (a ``value`` fault: when they read the value).

    ``injected``: ``call`` (an injector fails the call: the fault proxy before OpenBao and moto's server, the gRPC
    fake's hooks, the file store's disk operations), ``env`` (the target's ``unreachable_env`` or ``denied_env``),
    ``path`` (the file store's path made unusable), ``echo`` (a server that refuses every request and echoes it in
    its error) or ``value`` (what the store holds is not a login). ``attempts``: how many times the store's client
    makes one call before it gives up, so how long an injected fault must last to fail the call.
    """

    kind: str
    fault: str
    injected: str
    attempts: int
    exit_code: ExitCode
    description: str


_STORE, _INVALID = ExitCode.STORE, ExitCode.INVALID
SERVER_KINDS = ("vault", "aws", "gcp")
STORE_KINDS = ("file", *SERVER_KINDS)
AWS_ATTEMPTS = 4  # codex-ci's botocore Config retries={"max_attempts": 3}: 4 attempts in all

STORE_FAULTS: tuple[StoreFault, ...] = (
    StoreFault("file", "io", "call", 1, _STORE, "the disk fails: EIO on a read, ENOSPC on a write"),
    StoreFault("file", "forbidden", "path", 1, _STORE,
               "a directory where the store's file should be (root ignores file modes, so nothing is denied)"),
    StoreFault("file", "parent-is-a-file", "path", 1, _STORE,
               "the store's directory is a file: every read and write fails"),
    StoreFault("vault", "5xx", "call", 1, _STORE, "503 Vault is sealed"),
    StoreFault("vault", "throttle", "call", 1, _STORE, "429 rate limit quota exceeded"),
    StoreFault("vault", "denied", "call", 1, _STORE, "403 permission denied"),
    StoreFault("vault", "drop", "call", 1, _STORE, "the connection closed unanswered"),
    StoreFault("vault", "landed", "call", 1, _STORE, "the write reached OpenBao, its answer was lost"),
    StoreFault("aws", "5xx", "call", AWS_ATTEMPTS, _STORE, "ServiceUnavailableException, retried by botocore"),
    StoreFault("aws", "throttle", "call", AWS_ATTEMPTS, _STORE, "ThrottlingException, retried by botocore"),
    StoreFault("aws", "denied", "call", 1, _STORE, "AccessDeniedException, not retried by botocore"),
    StoreFault("aws", "drop", "call", AWS_ATTEMPTS, _STORE, "the connection closed unanswered, retried by botocore"),
    StoreFault("aws", "landed", "call", AWS_ATTEMPTS, ExitCode.OK,
               "the stage move reached the server, its answer was lost: botocore retries it and codex-ci finds its "
               "own version current"),
    StoreFault("gcp", "5xx", "call", 1, _STORE, "UNAVAILABLE"),
    StoreFault("gcp", "throttle", "call", 1, _STORE, "RESOURCE_EXHAUSTED"),
    StoreFault("gcp", "denied", "call", 1, _STORE, "PERMISSION_DENIED"),
    StoreFault("gcp", "drop", "call", 1, _STORE, "UNAVAILABLE, what gRPC reports for a broken connection"),
    StoreFault("gcp", "landed", "call", 1, _STORE, "the call took effect, then UNAVAILABLE"),
    *(StoreFault(kind, "unreachable", "env", 1, _STORE, "a closed loopback port") for kind in SERVER_KINDS),
    *(StoreFault(kind, "forbidden", "env", 1, _STORE, "credentials that may not read or write the secret")
      for kind in SERVER_KINDS),
    *(StoreFault(kind, "echo", "echo", 1, _STORE, "every request refused, echoed in the error")
      for kind in SERVER_KINDS),
    *(StoreFault(kind, "foreign", "value", 1, _INVALID, "a value in a shape codex-ci never writes")
      for kind in STORE_KINDS),
    *(StoreFault(kind, "truncated", "value", 1, _INVALID, "a login cut short") for kind in STORE_KINDS),
)


def store_fault(kind: str, fault: str) -> StoreFault:
    """The row of ``fault`` on a ``kind`` store."""
    for row in STORE_FAULTS:
        if (row.kind, row.fault) == (kind, fault):
            return row
    raise KeyError((kind, fault))


def _check() -> None:
    modes = [row.mode for row in ENDPOINT]
    if len(modes) != len(set(modes)) or set(modes) != MODES:
        raise RuntimeError(f"ENDPOINT must hold each token server mode once: {sorted(modes)} != {sorted(MODES)}")
    keys = [(row.kind, row.fault) for row in STORE_FAULTS]
    if len(keys) != len(set(keys)) or {row.kind for row in STORE_FAULTS} != set(STORE_KINDS):
        raise RuntimeError("STORE_FAULTS must hold each fault of each store kind once")


_check()
