"""GCP Secret Manager, written by compare-and-set on a version alias.

The value lives in secret versions; the alias ``codex-ci`` in the secret's ``version_aliases`` names the current
one, and readers read that alias, never ``latest``: one AccessSecretVersion on ``<secret>/versions/codex-ci``,
whose answer names the version by number. A write adds a version, then moves the alias with an
UpdateSecret that carries the etag of the secret as read just before, so a concurrent writer makes it fail with
FAILED_PRECONDITION. The store's version string is the alias's version number (``"7"``): a write re-reads the
secret, checks that the alias still names ``expected`` and moves it under that fresh etag, so a change elsewhere
in the secret (labels, other aliases) never fails the write, while a move of the alias always does. Other
aliases are kept. ``CODEX_CI_GCP_ENDPOINT=host:port`` (loopback only) points the client at a plaintext test
server; otherwise the client uses application default credentials.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Mapping
from typing import Any

from codex_ci.errors import ConfigError, StoreConflict, StoredValueError, StoreError
from codex_ci.stores.base import Store, Versioned, missing_extra

ALIAS = "codex-ci"
TIMEOUT = 10.0  # seconds, for every call; no retries, so an unreachable endpoint fails at once or within this
LOCATION = re.compile(r"projects/([a-z0-9][a-z0-9.:-]{0,62})/secrets/([A-Za-z0-9_-]{1,255})")
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
ROLES_HINT = (
    "Grant on the secret and its -lease sibling: roles/secretmanager.secretAccessor, "
    "roles/secretmanager.secretVersionAdder and secretmanager.secrets.get + secretmanager.secrets.update "
    "(e.g. roles/secretmanager.admin on those secrets, or a custom role); add secretmanager.secrets.create on "
    "the project if codex-ci should create them."
)


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        for _ in range(8):
            n = (n >> 1) ^ 0x82F63B78 if n & 1 else n >> 1
        table.append(n)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as Secret Manager's ``data_crc32c``; the values are a few kB, so pure Python."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


class _Sdk:
    """The lazily imported SDK and one client, shared by a store and its siblings."""

    def __init__(self, endpoint: str | None) -> None:
        try:
            self.sm: Any = importlib.import_module("google.cloud.secretmanager")
            self.exc: Any = importlib.import_module("google.api_core.exceptions")
            self.auth_exc: Any = importlib.import_module("google.auth.exceptions")
        except ImportError:
            raise missing_extra("gcp") from None
        self.endpoint = endpoint
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:
            if self.endpoint is None:
                self._client = self.sm.SecretManagerServiceClient()
            else:
                grpc: Any = importlib.import_module("grpc")
                transports: Any = importlib.import_module(
                    "google.cloud.secretmanager_v1.services.secret_manager_service.transports")
                channel = grpc.insecure_channel(self.endpoint)  # a channel instance: no credentials are looked up
                transport = transports.SecretManagerServiceGrpcTransport(channel=channel)
                self._client = self.sm.SecretManagerServiceClient(transport=transport)
        return self._client


class GcpStore:
    compare_and_set = True
    missing_hint = None

    def __init__(self, project: str, secret: str, sdk: _Sdk) -> None:
        self.project, self.secret, self._sdk = project, secret, sdk
        self.name = f"projects/{project}/secrets/{secret}"

    @property
    def url(self) -> str:
        return f"gcp://{self.name}"

    @property
    def key(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"GcpStore({self.url})"

    def _call(self, what: str, method: str, request: dict[str, Any], absent: tuple[str, ...] = ()) -> Any:
        """One RPC; None when it fails with one of the ``absent`` exceptions, StoreError for any other failure.

        SDK messages are never forwarded: they could quote a request, and a request can hold the value."""
        sdk = self._sdk
        try:
            return getattr(sdk.client(), method)(request=request, timeout=TIMEOUT, retry=None)
        except (sdk.exc.GoogleAPIError, sdk.auth_exc.GoogleAuthError) as exc:
            if any(isinstance(exc, getattr(sdk.exc, name)) for name in absent):
                return None
            raise self._error(what, exc) from None

    def _error(self, what: str, exc: Exception) -> StoreError:
        e, auth = self._sdk.exc, self._sdk.auth_exc
        prefix = f"cannot {what} {self.url}"
        if isinstance(exc, e.PermissionDenied):
            return StoreError(f"{prefix}: permission denied", hint=ROLES_HINT)
        if isinstance(exc, (e.Unauthenticated, auth.DefaultCredentialsError)):
            return StoreError(f"{prefix}: no GCP credentials (or they were rejected)", hint=(
                "Set up application default credentials (google-github-actions/auth, or "
                "`gcloud auth application-default login`)."))
        # gRPC reports a credential refresh that failed (e.g. a workload identity exchange) as UNAVAILABLE
        if isinstance(exc, auth.GoogleAuthError) or (
                isinstance(exc, e.ServiceUnavailable) and "metadata from plugin failed" in str(exc)):
            return StoreError(f"{prefix}: the GCP credentials could not be used or refreshed",
                              hint="Check the workload identity federation or service account setup.")
        if isinstance(exc, (e.ServiceUnavailable, e.DeadlineExceeded, e.RetryError)):
            return StoreError(f"{prefix}: cannot reach GCP Secret Manager ({type(exc).__name__})",
                              hint="Nothing was changed by this call. Try again later.")
        status = getattr(getattr(exc, "grpc_status_code", None), "name", None) or type(exc).__name__
        return StoreError(f"{prefix}: GCP Secret Manager answered {status}")

    def _get(self) -> Any:
        return self._call("read", "get_secret", {"name": self.name}, absent=("NotFound",))

    def read(self) -> Versioned | None:
        """One round trip: AccessSecretVersion on the alias. The answer names the version by number."""
        answer = self._call("read", "access_secret_version", {"name": f"{self.name}/versions/{ALIAS}"},
                            absent=("NotFound",))
        if answer is None:
            return None  # no secret, or a secret without a codex-ci value
        number = str(answer.name).rsplit("/", 1)[-1]
        if not number.isdigit():
            raise StoreError(f"cannot read {self.url}: GCP Secret Manager answered without a version number")
        payload = answer.payload
        data = bytes(payload.data)
        if "data_crc32c" in payload and payload.data_crc32c != crc32c(data):
            raise StoreError(f"version {number} of {self.url} failed its CRC32C check (corrupted in transit)",
                             hint="Try again; if it persists, write a fresh value.")
        try:
            return Versioned(data.decode("utf-8"), number)
        except UnicodeDecodeError:
            raise StoredValueError(f"version {number} of {self.url} is not UTF-8 text, so not a login "
                                   "codex-ci wrote") from None

    def _expect(self, expected: str | None) -> Any:
        """The secret, if its alias names ``expected`` (None: no alias; the secret is created if missing)."""
        secret = self._get()
        if secret is None and expected is None:
            secret = self._call("create", "create_secret", {
                "parent": f"projects/{self.project}", "secret_id": self.secret,
                "secret": {"replication": {"automatic": {}}}}, absent=("AlreadyExists",)) or self._get()
        current = None if secret is None else secret.version_aliases.get(ALIAS)
        if secret is None or (None if current is None else str(current)) != expected:
            found = "no secret" if secret is None else f"version {current}" if current is not None else "no value"
            raise StoreConflict(f"{self.url} changed (expected {f'version {expected}' if expected else 'no value'}, "
                                f"found {found})")
        return secret

    def write(self, value: str, expected: str | None) -> str:
        data = value.encode("utf-8", "surrogateescape")
        secret = self._expect(expected)
        added = self._call("add a version to", "add_secret_version", {
            "parent": self.name, "payload": {"data": data, "data_crc32c": crc32c(data)}})
        number = int(added.name.rsplit("/", 1)[-1])
        try:
            for _ in range(3):  # a stale etag: retried only while the alias still names `expected`
                aliases = {**secret.version_aliases, ALIAS: number}
                moved = self._call("move the codex-ci alias of", "update_secret", {
                    "secret": {"name": self.name, "version_aliases": aliases, "etag": secret.etag},
                    "update_mask": {"paths": ["version_aliases"]}}, absent=("FailedPrecondition", "Aborted"))
                if moved is not None:
                    return str(number)
                secret = self._expect(expected)
            raise StoreConflict(f"{self.url} kept changing while codex-ci moved its alias")
        except StoreConflict:
            self._discard(number)
            raise

    def _discard(self, number: int) -> None:
        """Best effort: destroy the version that lost the race (it holds a login nobody will read)."""
        with contextlib.suppress(StoreError):
            self._call("destroy", "destroy_secret_version", {"name": f"{self.name}/versions/{number}"})

    def check_writable(self) -> None:
        """Compare-and-set: a write that fails loses nothing the lease does not protect."""

    def sibling(self, suffix: str) -> Store:
        return GcpStore(*_parse(f"{self.name}-{suffix}", {}), self._sdk)


def _parse(location: str, env: Mapping[str, str]) -> tuple[str, str]:
    """``projects/P/secrets/S``, or just ``S`` with the project from CODEX_CI_GCP_PROJECT (or GOOGLE_CLOUD_PROJECT)."""
    if "/" not in location:
        project = env.get("CODEX_CI_GCP_PROJECT") or env.get("GOOGLE_CLOUD_PROJECT") or ""
        location = f"projects/{project}/secrets/{location}"
    match = LOCATION.fullmatch(location)
    if not match:
        raise ConfigError("a gcp:// store must be gcp://projects/PROJECT/secrets/SECRET, or gcp://SECRET with "
                          "CODEX_CI_GCP_PROJECT set (a secret id is at most 255 letters, digits, - and _)")
    return match[1], match[2]


def open_store(location: str, env: Mapping[str, str]) -> GcpStore:
    project, secret = _parse(location, env)
    endpoint = env.get("CODEX_CI_GCP_ENDPOINT", "").strip() or None
    if endpoint is not None:
        host, _, port = endpoint.rpartition(":")
        if host not in LOOPBACK or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError("CODEX_CI_GCP_ENDPOINT must be HOST:PORT on a loopback host (127.0.0.1, localhost "
                              "or [::1]): it carries no TLS and no credentials, so it is only for test servers")
    return GcpStore(project, secret, _Sdk(endpoint))
