"""The token-endpoint client, sending exactly the request Codex sends (when to send it: :mod:`codex_ci.policy`).

Only this module (and the stores) import httpx, so ``seed`` and ``status`` start fast.
"""

from __future__ import annotations

import json
import logging
import os
import random
import ssl
import threading
import time
from typing import Any

import httpx

from codex_ci import __version__, interrupts
from codex_ci.errors import (
    AmbiguousRefreshError,
    ConfigError,
    Interrupted,
    LoginRejectedError,
    TransientError,
)
from codex_ci.secret import Secret
from codex_ci.stores.base import is_loopback

log = logging.getLogger("codex_ci")

DEFAULT_URL = "https://auth.openai.com/oauth/token"
DEFAULT_CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"
PERMANENT_CODES = {
    "refresh_token_expired": "the refresh token has expired",
    "refresh_token_reused": "the refresh token was already used (another copy of this login refreshed it)",
    "refresh_token_invalidated": "the refresh token was revoked (a logout or a new login elsewhere)",
}
# Codes printed as they are; any other code is not echoed (a server could put anything there, a token too).
KNOWN_CODES = {*PERMANENT_CODES, "invalid_grant", "invalid_request", "invalid_client", "unauthorized_client",
               "unsupported_grant_type", "server_error", "temporarily_unavailable", "rate_limited"}
MAX_RETRY_AFTER = 30.0
MAX_ANSWER = 1024 * 1024
def endpoint() -> tuple[str, str]:
    """The token URL and client id, honouring Codex's own environment overrides."""
    url = os.environ.get("CODEX_REFRESH_TOKEN_URL_OVERRIDE") or DEFAULT_URL
    client_id = os.environ.get("CODEX_APP_SERVER_LOGIN_CLIENT_ID") or DEFAULT_CLIENT_ID
    try:  # parsed as httpx will send it, so what is checked is what is used
        parts = httpx.URL(url)
        host = parts.host
    except Exception:  # noqa: BLE001 - httpx raises several kinds for a malformed URL
        host, parts = "", None
    if parts is not None and not parts.userinfo and (
        (parts.scheme == "https" and host) or (parts.scheme == "http" and is_loopback(host))
    ):
        return url, client_id
    raise ConfigError(
        "CODEX_REFRESH_TOKEN_URL_OVERRIDE must be an https:// URL (http:// only for a loopback host)"
    )


def _verify() -> ssl.SSLContext | bool:
    bundle = os.environ.get("CODEX_CA_CERTIFICATE") or os.environ.get("SSL_CERT_FILE")
    if not bundle:
        return True
    try:
        return ssl.create_default_context(cafile=bundle)
    except (OSError, ssl.SSLError):
        raise ConfigError("the CA bundle named by CODEX_CA_CERTIFICATE or SSL_CERT_FILE cannot be loaded") from None


def error_code(body: Any) -> str | None:
    """The error code of a token-endpoint answer: error.code, error (a string) or code; lower case."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        return str(error["code"]).lower()
    if isinstance(error, str):
        return error.lower()
    code = body.get("code")
    return code.lower() if isinstance(code, str) else None


def _classify(response: httpx.Response) -> Exception:
    """Turn a non-200 answer into the error to raise (LoginRejectedError is permanent)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    code = error_code(body)
    status = response.status_code
    named = f" ({code})" if code in KNOWN_CODES else " (unrecognised error code)" if code else ""
    if code in PERMANENT_CODES:
        return LoginRejectedError(f"the token endpoint rejected the login: {PERMANENT_CODES[code]}")
    if status == 401:
        return LoginRejectedError(f"the token endpoint rejected the login: HTTP 401{named}")
    if status == 400 and code == "invalid_grant":
        return LoginRejectedError("the token endpoint rejected the login: HTTP 400 (invalid_grant)")
    return TransientError(f"the token endpoint answered HTTP {status}{named}")


def _retry_after(response: httpx.Response, default: float) -> float:
    value = response.headers.get("retry-after", "")
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER)
    except ValueError:
        return default


class TokenClient:
    """POSTs a refresh the way Codex does, with bounded retries only where the token cannot have been spent."""

    def __init__(
        self, *, connect_timeout: float = 10.0, read_timeout: float = 30.0, attempts: int = 3, backoff: float = 1.0
    ) -> None:
        self.url, self.client_id = endpoint()
        self.timeout = httpx.Timeout(read_timeout, connect=min(connect_timeout, read_timeout))
        self.attempts = max(1, attempts)
        self.backoff = backoff

    @property
    def attempt_seconds(self) -> float:
        """The longest one attempt can take: connecting, then the whole answer (bounded, even if it trickles)."""
        return float(self.timeout.connect or 0) + float(self.timeout.read or 0)

    def refresh(self, refresh_token: Secret, deadline: float | None = None) -> dict[str, Any]:
        """POST the refresh. ``deadline`` (time.monotonic()): no attempt starts that could end after it — the
        refresh lease's expiry, so that no other runner can take the lease while this request is in flight."""
        body = json.dumps(
            {"client_id": self.client_id, "grant_type": "refresh_token", "refresh_token": refresh_token.reveal()}
        )
        headers = {"Content-Type": "application/json", "User-Agent": f"codex-ci/{__version__}"}
        host = httpx.URL(self.url).host
        try:
            client = httpx.Client(timeout=self.timeout, verify=_verify(), trust_env=True)
        except (ValueError, ImportError, httpx.InvalidURL):
            raise ConfigError("the proxy settings (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY) cannot be used") from None
        with client:
            for attempt in range(1, self.attempts + 1):
                signum = interrupts.pending()
                if signum is not None:  # a cancelled job: send nothing more
                    raise Interrupted(signum)
                if deadline is not None and time.monotonic() + self.attempt_seconds > deadline:
                    raise TransientError(
                        "not enough time left on the refresh lease for another request; nothing was sent",
                        hint="Raise --lease-ttl, or lower --timeout or --retries.",
                    )
                delay = self.backoff * 2 ** (attempt - 1) * (0.5 + random.random() / 2)  # noqa: S311 (jitter)
                log.debug("refresh POST to %s (attempt %d of %d)", host, attempt, self.attempts)
                try:
                    response = self._post(client, body, headers, time.monotonic() + self.attempt_seconds)
                except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                    # The request never left: retrying cannot spend the token twice.
                    if _is_tls_failure(exc):
                        raise TransientError(
                            f"TLS verification failed for {host}",
                            hint="Set CODEX_CA_CERTIFICATE (or SSL_CERT_FILE) to the CA bundle that signs it.",
                        ) from None
                    error: Exception = TransientError(f"cannot connect to {host}: {type(exc).__name__}")
                except httpx.TimeoutException:
                    raise AmbiguousRefreshError(f"no answer from {host} in time after sending the refresh{_cut()}"
                                                ) from None
                except httpx.TransportError as exc:
                    raise AmbiguousRefreshError(
                        f"the connection to {host} broke after sending the refresh ({type(exc).__name__})"
                    ) from None
                else:
                    if response.status_code == 200:
                        return _tokens(response)
                    error = _classify(response)
                    if not isinstance(error, TransientError) or not (
                        response.status_code == 429 or response.status_code >= 500
                    ):
                        raise error
                    if response.status_code == 429:
                        delay = _retry_after(response, delay)
                if attempt == self.attempts:
                    raise error
                log.info("%s; retrying in %.1fs", error, delay)
                _sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _post(self, client: httpx.Client, body: str, headers: dict[str, str], until: float) -> httpx.Response:
        """One POST whose whole answer, headers included, must arrive by ``until`` (sooner once SIGINT or SIGTERM
        came: see interrupts.deadline_after_signal) and fit in MAX_ANSWER bytes.

        The request runs in a worker thread and this one watches the clock: httpx's timeouts bound each read, not
        the whole answer, so a server that trickles its headers a byte at a time would outlast any of them. A
        request abandoned at the deadline is reported as ambiguous (it may have reached the server).
        """
        box: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                with client.stream("POST", self.url, content=body, headers=headers) as streamed:
                    content = bytearray()
                    for chunk in streamed.iter_bytes():
                        content += chunk
                        if len(content) > MAX_ANSWER:
                            raise httpx.ReadTimeout("the answer was too large")
                    box["response"] = httpx.Response(streamed.status_code, headers=streamed.headers,
                                                     content=bytes(content))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread as is
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=work, name="codex-ci-refresh", daemon=True).start()
        while not done.wait(0.02):
            after_signal = interrupts.deadline_after_signal()
            if time.monotonic() > min(until, after_signal if after_signal is not None else until):
                raise httpx.ReadTimeout("the whole answer did not arrive in time")
        if "error" in box:
            raise box["error"]
        response: httpx.Response = box["response"]
        return response


def _cut() -> str:
    """What to add to an ambiguous failure when a signal cut the request short."""
    if interrupts.pending() is None:
        return ""
    return (" (cut short by a cancellation: if the endpoint rotated the login, that rotation is lost and the "
            "stored refresh token is spent)")


def _sleep(seconds: float) -> None:
    """Sleep, but wake as soon as a signal is pending (the next attempt will then not be sent)."""
    end = time.monotonic() + seconds
    while interrupts.pending() is None and time.monotonic() < end:
        time.sleep(min(0.05, max(0.0, end - time.monotonic())))


def _is_tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(type(seen)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _tokens(response: httpx.Response) -> dict[str, Any]:
    """The tokens of a 200 answer. A 200 we cannot read may have spent the token: ambiguous, never retried."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise AmbiguousRefreshError("the token endpoint answered 200 with a body that is not a JSON object")
    for key in ("id_token", "access_token", "refresh_token"):
        if key in body and body[key] is not None and not isinstance(body[key], str):
            raise AmbiguousRefreshError(f"the token endpoint answered 200 with a {key} that is not a string")
    return body
