"""HashiCorp Vault (or OpenBao) KV v2: ``vault://MOUNT/PATH``, written by check-and-set.

Stored as KV data ``{"auth_json": "<auth.json text>"}``; the version is the KV ``metadata.version``. The refresh
lease lives next to it at ``MOUNT/PATH-lease``. Every write sends ``cas`` (0: only if absent). The token's policy
needs ``read`` on ``MOUNT/data/PATH`` (``create`` and ``update`` too, to write) and the same on
``MOUNT/data/PATH-lease``.

Deleted versions: Vault checks ``cas`` against the secret's current version number even when that version is
soft-deleted or destroyed (only ``kv metadata delete`` resets it), so ``cas=0`` fails there. ``read`` reports such a
secret as absent, and ``write(expected=None)``, when ``cas=0`` fails, re-reads and writes with ``cas=<that deleted
version>`` (still a check-and-set: a concurrent writer makes it fail).

Configuration is Vault's own: VAULT_ADDR, VAULT_NAMESPACE, VAULT_CACERT/VAULT_CAPATH, VAULT_SKIP_VERIFY,
VAULT_CLIENT_CERT/VAULT_CLIENT_KEY. Login (CODEX_CI_VAULT_AUTH, default from what is set): ``token`` (VAULT_TOKEN),
``approle`` (VAULT_ROLE_ID, VAULT_SECRET_ID) or ``jwt`` (CODEX_CI_VAULT_ROLE with a JWT from CODEX_CI_VAULT_JWT_FILE
or GitHub Actions OIDC, audience CODEX_CI_VAULT_JWT_AUDIENCE); CODEX_CI_VAULT_AUTH_MOUNT overrides the auth mount.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from codex_ci import github
from codex_ci.errors import ConfigError, StoreConflict, StoredValueError, StoreError
from codex_ci.secret import Secret
from codex_ci.stores.base import Store, Versioned, missing_extra

TIMEOUT = 10.0
FIELD = "auth_json"
T = TypeVar("T")


class _Session:
    """One hvac client and its lazy login, shared by a store and its siblings. Never shows a token."""

    def __init__(self, client: Any, addr: str, method: str, login: Callable[[Any], None] | None,
                 namespace: str = "") -> None:
        self.client, self.addr, self.method, self._login, self.namespace = client, addr, method, login, namespace

    def __repr__(self) -> str:
        return f"_Session(addr={self.addr!r}, method={self.method!r})"

    def call(self, store: VaultStore, action: str, fn: Callable[[Any], T]) -> T:
        """Log in once, run ``fn(client)``; every SDK or network failure becomes a one-line StoreError."""
        import hvac.exceptions  # already loaded by open_store
        import requests

        stage = "login"
        try:
            if self._login is not None:
                try:
                    self._login(self.client)
                except (KeyError, TypeError):  # a 200 without auth.client_token: not Vault
                    raise hvac.exceptions.UnexpectedError() from None
                self._login = None
            stage = action
            return fn(self.client)
        except requests.exceptions.SSLError:
            raise StoreError(f"TLS with Vault at {self.addr} failed",
                             hint="Check https/http in VAULT_ADDR and VAULT_CACERT.") from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise StoreError(f"cannot reach Vault at {self.addr} ({type(exc).__name__})",
                             hint="Check VAULT_ADDR and the network.") from None
        except requests.RequestException as exc:
            raise StoreError(f"unexpected answer from Vault at {self.addr} ({type(exc).__name__})") from None
        except hvac.exceptions.VaultError as exc:
            answer = type(exc).__name__
            if stage == "login":
                raise StoreError(f"Vault login failed ({self.method}) at {self.addr}: {answer}",
                                 hint=_LOGIN_HINTS[self.method]) from None
            if isinstance(exc, hvac.exceptions.Forbidden):
                caps = '["read"]' if action == "read" else '["create", "read", "update"]'
                data = f"{store.mount}/data/{store.primary}"
                token = " (or VAULT_TOKEN is invalid or expired)" if self.method == "token" else ""
                raise StoreError(f"Vault permission denied: cannot {action} {store.url}{token}",
                                 hint=f"The policy needs capabilities = {caps} on {data} and {data}-lease.") from None
            if isinstance(exc, hvac.exceptions.InvalidPath):
                answer = f"no KV v2 secrets engine at {store.mount}/"
            raise StoreError(f"cannot {action} {store.url}: {answer}") from None


_LOGIN_HINTS = {
    "approle": "Check VAULT_ROLE_ID, VAULT_SECRET_ID and CODEX_CI_VAULT_AUTH_MOUNT.",
    "jwt": "Check CODEX_CI_VAULT_ROLE, the role's bound_audiences and bound claims (CODEX_CI_VAULT_JWT_AUDIENCE) "
    "and CODEX_CI_VAULT_AUTH_MOUNT.",
}


class VaultStore:
    compare_and_set = True
    missing_hint = None

    def __init__(self, session: _Session, mount: str, path: str, primary: str | None = None) -> None:
        self._session, self.mount, self.path, self.primary = session, mount, path, primary or path

    @property
    def url(self) -> str:
        return f"vault://{self.mount}/{self.path}"

    @property
    def key(self) -> str:
        """The server, its namespace and the path: one mount path on two Vault servers is two secrets."""
        return f"vault://{self._session.addr}/{self._session.namespace}/{self.mount}/{self.path}"

    def __repr__(self) -> str:
        return f"VaultStore({self.url!r})"

    def _get(self) -> tuple[Versioned | None, int]:
        """The current value (None if absent, deleted or destroyed) and the version number a ``cas`` must name."""
        import hvac.exceptions

        def get(client: Any) -> Any:
            try:
                return client.secrets.kv.v2.read_secret_version(self.path, mount_point=self.mount,
                                                                 raise_on_deleted_version=True)
            except hvac.exceptions.InvalidPath as exc:  # absent (errors: []), deleted/destroyed, or no mount
                if exc.errors == [] or exc.json and (exc.json.get("data") or {}).get("metadata"):
                    return exc.json
                raise

        body = self._session.call(self, "read", get)
        try:
            data = (body or {}).get("data")
            if not data:
                return None, 0
            version = data["metadata"]["version"]
            if not isinstance(version, int):
                raise TypeError
        except (KeyError, TypeError, AttributeError):
            raise StoreError(f"{self.url} is not a KV v2 secret (is {self.mount}/ a KV version 2 mount?)") from None
        payload = data.get("data")
        if payload is None:  # the current version is deleted or destroyed
            return None, version
        if not isinstance(payload, dict) or not isinstance(payload.get(FIELD), str):
            raise StoredValueError(f"{self.url} does not hold a codex-ci login (no {FIELD!r} text field)")
        return Versioned(payload[FIELD], str(version)), version

    def read(self) -> Versioned | None:
        return self._get()[0]

    def _put(self, secret: dict[str, str], cas: int) -> str | None:
        """Write with ``cas``; the new version, or None when the check-and-set failed."""
        import hvac.exceptions

        def put(client: Any) -> Any:
            try:
                return client.secrets.kv.v2.create_or_update_secret(self.path, secret, cas=cas, mount_point=self.mount)
            except hvac.exceptions.InvalidRequest as exc:
                if "check-and-set" in str(exc.errors):
                    return None
                raise

        body = self._session.call(self, "write", put)
        if body is None:
            return None
        try:
            return str(body["data"]["version"])
        except (KeyError, TypeError):
            raise StoreError(f"{self.url}: no version in Vault's answer (is {self.mount}/ KV v2?)") from None

    def write(self, value: str, expected: str | None) -> str:
        secret = {FIELD: value}
        if expected is not None and not expected.isdigit():
            raise StoreConflict(f"{self.url}: {expected!r} is not a Vault version")
        version = self._put(secret, int(expected or 0))
        if version is None and expected is None:
            current, deleted = self._get()
            if current is None and deleted:  # a deleted or destroyed current version: Vault's cas still names it
                version = self._put(secret, deleted)
        if version is None:
            raise StoreConflict(f"{self.url} changed (expected version {expected or 'none'})")
        return version

    def check_writable(self) -> None:
        """Compare-and-set: a write that fails loses nothing the lease does not protect."""

    def sibling(self, suffix: str) -> Store:
        return VaultStore(self._session, self.mount, f"{self.path}-{suffix}", self.primary)


def _login(env: Mapping[str, str]) -> tuple[str, Callable[[Any], None] | None, str | None]:
    """The auth method, its login (None for a token) and the token."""
    method = env.get("CODEX_CI_VAULT_AUTH", "").strip().lower() or (
        "token" if env.get("VAULT_TOKEN") else "approle" if env.get("VAULT_ROLE_ID")
        else "jwt" if env.get("CODEX_CI_VAULT_ROLE") else "")
    mount = env.get("CODEX_CI_VAULT_AUTH_MOUNT", "").strip("/ ") or method
    if method == "token":
        if not env.get("VAULT_TOKEN"):
            raise ConfigError("CODEX_CI_VAULT_AUTH=token needs VAULT_TOKEN")
        return method, None, env["VAULT_TOKEN"]
    if method == "approle":
        if not env.get("VAULT_ROLE_ID") or not env.get("VAULT_SECRET_ID"):
            raise ConfigError("Vault AppRole login needs VAULT_ROLE_ID and VAULT_SECRET_ID")
        role_id, secret_id = Secret(env["VAULT_ROLE_ID"]), Secret(env["VAULT_SECRET_ID"])
        return method, lambda client: client.auth.approle.login(
            role_id.reveal(), secret_id.reveal(), mount_point=mount), None
    if method == "jwt":
        role, jwt_file = env.get("CODEX_CI_VAULT_ROLE", ""), env.get("CODEX_CI_VAULT_JWT_FILE", "")
        oidc = bool(env.get("ACTIONS_ID_TOKEN_REQUEST_URL") and env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN"))
        if not role or not (jwt_file or oidc):
            raise ConfigError("Vault JWT login needs CODEX_CI_VAULT_ROLE and CODEX_CI_VAULT_JWT_FILE (or GitHub "
                              "Actions OIDC: `permissions: id-token: write`)")
        audience = env.get("CODEX_CI_VAULT_JWT_AUDIENCE", "")

        def jwt_login(client: Any) -> None:
            if jwt_file:
                try:
                    jwt = Path(jwt_file).read_text().strip()
                except (OSError, UnicodeDecodeError):
                    raise ConfigError("cannot read the JWT in CODEX_CI_VAULT_JWT_FILE") from None
            else:
                jwt = github.oidc_token(env, audience, what="Vault")
            client.auth.jwt.jwt_login(role, jwt, path=mount)

        return method, jwt_login, None
    if method:
        raise ConfigError("CODEX_CI_VAULT_AUTH must be token, approle or jwt")
    raise ConfigError("no Vault credentials: set VAULT_TOKEN, VAULT_ROLE_ID and VAULT_SECRET_ID, or "
                      "CODEX_CI_VAULT_ROLE for a JWT/OIDC login")


def open_store(location: str, env: Mapping[str, str]) -> VaultStore:
    mount, _, path = location.partition("/")
    if not mount or not path or any(part in ("", ".", "..") for part in path.split("/")):
        raise ConfigError("a Vault store must be vault://MOUNT/PATH (the KV v2 mount, then the secret's path)")
    addr = env.get("VAULT_ADDR", "").strip().rstrip("/")
    if not addr:
        raise ConfigError("the vault store needs VAULT_ADDR")
    parts = urlsplit(addr)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise ConfigError("VAULT_ADDR must be an http:// or https:// URL (without credentials)")
    method, login, token = _login(env)
    try:
        import hvac
    except ImportError:
        raise missing_extra("vault") from None
    skip = env.get("VAULT_SKIP_VERIFY", "").strip().lower() in ("1", "true", "t", "yes")
    verify: bool | str = False if skip else env.get("VAULT_CACERT") or env.get("VAULT_CAPATH") or True
    cert, key = env.get("VAULT_CLIENT_CERT"), env.get("VAULT_CLIENT_KEY")
    client = hvac.Client(url=addr, token=token or "", verify=verify, cert=(cert, key) if cert and key else cert,
                         timeout=TIMEOUT, namespace=env.get("VAULT_NAMESPACE") or None)
    return VaultStore(_Session(client, addr, method, login, env.get("VAULT_NAMESPACE", "").strip("/ ")), mount, path)
