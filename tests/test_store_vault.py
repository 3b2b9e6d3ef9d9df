"""Vault-specific behaviour of the vault:// store, against the session's OpenBao dev server
(testing/targets/vault.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import login

from codex_ci.errors import ConfigError, ExitCode, StoredValueError, StoreError
from codex_ci.stores import StoreConflict, open_store
from testing.servers import ThreadedHTTPService
from testing.targets import StoreTarget
from testing.targets.vault import OpenBao

REQUEST_TOKEN = "CANARY-actions-request-token"


def payload(refresh_token: str = "CANARY-rt-0") -> str:
    return json.dumps(login(refresh_token=refresh_token), indent=2)


def bao(target: StoreTarget) -> OpenBao:
    server = target.extra["openbao"]
    assert isinstance(server, OpenBao)
    return server


def assert_clean(target: StoreTarget, *texts: str) -> None:
    """No credential of the test server and no stored value in ``texts``."""
    server = bao(target)
    for text in texts:
        for secret in (server.token, server.denied_token, server.root.token, server.secret_id, "CANARY", "eyJ"):
            assert secret not in text, text


def describe(exc: BaseException) -> str:
    return f"{exc} {exc!r} {getattr(exc, 'hint', '')}"


@pytest.mark.parametrize("auth", ["env", "approle_env", "jwt_env"])
def test_every_login_round_trips(vault_target: StoreTarget, auth: str) -> None:
    env = vault_target.env if auth == "env" else vault_target.extra[auth]
    assert isinstance(env, dict)
    store, value = vault_target.open(env), payload()
    assert store.read() is None
    version = store.write(value, None)
    assert store.sibling("lease").write('{"holder": null}', None) == "1"  # siblings share the login
    got = store.read()
    assert got is not None and got.value == value and got.version == version
    assert_clean(vault_target, repr(store), repr(got), repr(store.sibling("lease")))


def test_stored_shape_and_sibling_path(vault_target: StoreTarget) -> None:
    store, value = vault_target.open(), payload()
    store.write(value, None)
    store.sibling("lease").write("{}", None)
    path, kv = vault_target.extra["path"], bao(vault_target).root.secrets.kv.v2
    raw = kv.read_secret_version(path, mount_point="secret", raise_on_deleted_version=True)["data"]
    assert raw["data"] == {"auth_json": value} and raw["metadata"]["version"] == 1
    assert kv.read_secret_version(f"{path}-lease", mount_point="secret", raise_on_deleted_version=True)
    assert store.sibling("lease").url == f"{vault_target.url}-lease"


class FakeGitHubOIDC(ThreadedHTTPService):
    """ACTIONS_ID_TOKEN_REQUEST_URL: checks the bearer, answers {"value": <JWT for the requested audience>}."""

    def __init__(self, server: OpenBao, status: int = 200) -> None:
        self.requests: list[dict[str, list[str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                query = parse_qs(urlsplit(self.path).query)
                outer.requests.append(query)
                ok = self.headers.get("Authorization") == f"bearer {REQUEST_TOKEN}" and status == 200
                audience = query.get("audience", ["https://github.com/example-org"])[0]
                body = json.dumps({"value": server.jwt(aud=audience)} if ok else {"message": "nope"}).encode()
                self.send_response(200 if ok else 403 if status == 200 else status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)
        self.url = f"{self.base_url}/_apis/token?api-version=2.0"
        self.start()

    def close(self) -> None:
        self.stop()


@pytest.fixture
def github_oidc(vault_target: StoreTarget) -> Iterator[FakeGitHubOIDC]:
    server = FakeGitHubOIDC(bao(vault_target))
    yield server
    server.close()


def github_env(target: StoreTarget, oidc: FakeGitHubOIDC, **extra: str) -> dict[str, str]:
    return {"VAULT_ADDR": bao(target).addr, "CODEX_CI_VAULT_ROLE": "codex-ci", "ACTIONS_ID_TOKEN_REQUEST_URL": oidc.url,
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": REQUEST_TOKEN, **extra}


def test_jwt_from_github_actions_oidc(vault_target: StoreTarget, github_oidc: FakeGitHubOIDC) -> None:
    store = vault_target.open(github_env(vault_target, github_oidc, CODEX_CI_VAULT_JWT_AUDIENCE="codex-ci"))
    version = store.write(payload(), None)
    store.sibling("lease").write("{}", None)
    got = store.read()
    assert got is not None and got.version == version
    assert github_oidc.requests == [{"api-version": ["2.0"], "audience": ["codex-ci"]}]  # one login per store


def test_github_default_audience_is_not_bound(vault_target: StoreTarget, github_oidc: FakeGitHubOIDC) -> None:
    store = vault_target.open(github_env(vault_target, github_oidc))
    with pytest.raises(StoreError) as caught:
        store.read()
    assert github_oidc.requests == [{"api-version": ["2.0"]}]  # no audience parameter: GitHub's default
    assert "Vault login failed (jwt)" in str(caught.value) and "AUDIENCE" in (caught.value.hint or "")
    assert_clean(vault_target, describe(caught.value))
    assert REQUEST_TOKEN not in describe(caught.value)


def test_github_oidc_refused(vault_target: StoreTarget) -> None:
    oidc = FakeGitHubOIDC(bao(vault_target), status=500)
    try:
        with pytest.raises(StoreError) as caught:
            vault_target.open(github_env(vault_target, oidc)).read()
    finally:
        oidc.close()
    assert "GitHub Actions OIDC token" in str(caught.value) and "id-token: write" in (caught.value.hint or "")
    assert REQUEST_TOKEN not in describe(caught.value)


@pytest.mark.parametrize("claims", [{"aud": "someone-else"}, {"iss": "https://evil.test"}, {"ttl": -600}])
def test_bad_jwt_fails_login(vault_target: StoreTarget, tmp_path: Path, claims: dict[str, Any]) -> None:
    jwt_file = tmp_path / "bad-jwt"
    jwt_file.write_text(bao(vault_target).jwt(**claims))
    env = vault_target.extra["jwt_env"] | {"CODEX_CI_VAULT_JWT_FILE": str(jwt_file)}  # type: ignore[operator]
    with pytest.raises(StoreError) as caught:
        vault_target.open(env).write(payload(), None)
    assert caught.value.exit_code == ExitCode.STORE
    assert str(caught.value).startswith("Vault login failed (jwt)")
    assert_clean(vault_target, describe(caught.value))


def test_bad_approle_secret_fails_login(vault_target: StoreTarget) -> None:
    env = vault_target.extra["approle_env"] | {"VAULT_SECRET_ID": "CANARY-secret-id"}  # type: ignore[operator]
    with pytest.raises(StoreError) as caught:
        vault_target.open(env).read()
    assert str(caught.value).startswith("Vault login failed (approle)")
    assert_clean(vault_target, describe(caught.value))


def test_auth_method_defaults_and_options() -> None:
    from codex_ci.stores import vault

    base = {"VAULT_ADDR": "https://vault.example:8200"}
    assert vault.open_store("kv/a", base | {"VAULT_TOKEN": "t", "VAULT_ROLE_ID": "r"})._session.method == "token"
    assert vault.open_store("kv/a", base | {"VAULT_ROLE_ID": "r", "VAULT_SECRET_ID": "s"})._session.method == "approle"
    jwt = base | {"CODEX_CI_VAULT_ROLE": "r", "CODEX_CI_VAULT_JWT_FILE": "/nonexistent"}
    assert vault.open_store("kv/a", jwt)._session.method == "jwt"
    store = vault.open_store("kv/a/b", base | {
        "VAULT_TOKEN": "CANARY-vault-token", "VAULT_NAMESPACE": "team-a/ci", "VAULT_CACERT": "/etc/vault-ca.pem",
        "VAULT_CLIENT_CERT": "/c.pem", "VAULT_CLIENT_KEY": "/k.pem"})
    adapter = store._session.client.adapter
    assert adapter.namespace == "team-a/ci" and adapter.base_uri == base["VAULT_ADDR"]
    assert adapter._kwargs["verify"] == "/etc/vault-ca.pem" and adapter._kwargs["cert"] == ("/c.pem", "/k.pem")
    assert 0 < adapter._kwargs["timeout"] <= 30
    assert (store.mount, store.path, store.url) == ("kv", "a/b", "vault://kv/a/b")
    assert "CANARY" not in repr(store) + repr(store._session)
    skip = vault.open_store("kv/a", base | {"VAULT_TOKEN": "t", "VAULT_SKIP_VERIFY": "true"})
    assert skip._session.client.adapter._kwargs["verify"] is False
    no_token = vault.open_store("kv/a", base | {"VAULT_ROLE_ID": "r", "VAULT_SECRET_ID": "s"})
    assert not no_token._session.client.adapter.token  # never ~/.vault-token or os.environ's VAULT_TOKEN


@pytest.mark.parametrize("location", ["secret", "secret/", "/codex/a", "secret//a", "secret/a/", "secret/a/../b"])
def test_bad_location(location: str) -> None:
    with pytest.raises(ConfigError):
        open_store(f"vault://{location}", {"VAULT_ADDR": "http://127.0.0.1:1", "VAULT_TOKEN": "t"})


@pytest.mark.parametrize("env", [
    {"VAULT_TOKEN": "t"},
    {"VAULT_ADDR": "vault.example:8200", "VAULT_TOKEN": "t"},
    {"VAULT_ADDR": "https://user:CANARY@vault.example", "VAULT_TOKEN": "t"},
    {"VAULT_ADDR": "http://127.0.0.1:1"},
    {"VAULT_ADDR": "http://127.0.0.1:1", "CODEX_CI_VAULT_AUTH": "ldap", "VAULT_TOKEN": "t"},
    {"VAULT_ADDR": "http://127.0.0.1:1", "VAULT_ROLE_ID": "r"},
    {"VAULT_ADDR": "http://127.0.0.1:1", "CODEX_CI_VAULT_ROLE": "r"},
])
def test_bad_config(env: dict[str, str]) -> None:
    from codex_ci.stores import vault

    with pytest.raises(ConfigError) as caught:
        vault.open_store("secret/a", env)
    assert caught.value.exit_code == ExitCode.USAGE and "CANARY" not in str(caught.value)


def test_cas_mismatch_is_a_conflict(vault_target: StoreTarget) -> None:
    store = vault_target.open()
    v1 = store.write(payload("CANARY-rt-1"), None)
    for stale in (None, "999", "0", "x"):
        with pytest.raises(StoreConflict) as caught:
            store.write(payload("CANARY-rt-2"), stale)
        assert caught.value.exit_code == ExitCode.CONFLICT
        assert_clean(vault_target, describe(caught.value))
    got = store.read()
    assert got is not None and got.version == v1 == "1"


@pytest.mark.parametrize("how", ["delete", "destroy"])
def test_deleted_current_version_reads_absent_and_can_be_recreated(vault_target: StoreTarget, how: str) -> None:
    kv, path = bao(vault_target).root.secrets.kv.v2, vault_target.extra["path"]
    store = vault_target.open()
    store.write(payload("CANARY-rt-1"), None)
    v2 = store.write(payload("CANARY-rt-2"), "1")
    if how == "delete":
        kv.delete_latest_version_of_secret(path, mount_point="secret")
    else:
        kv.destroy_secret_versions(path, [int(v2)], mount_point="secret")
    assert store.read() is None
    with pytest.raises(StoreConflict):
        store.write(payload("CANARY-rt-x"), "1")
    assert store.write(payload("CANARY-rt-3"), None) == "3"  # Vault's cas still counts the deleted version 2
    with pytest.raises(StoreConflict):
        store.write(payload("CANARY-rt-4"), None)
    got = store.read()
    assert got is not None and got.version == "3" and "CANARY-rt-3" in got.value


def test_metadata_delete_starts_over(vault_target: StoreTarget) -> None:
    store = vault_target.open()
    store.write(payload(), None)
    bao(vault_target).root.secrets.kv.v2.delete_metadata_and_all_versions(vault_target.extra["path"],
                                                                           mount_point="secret")
    assert store.read() is None
    assert store.write(payload(), None) == "1"


def test_permission_denied_names_the_policy(vault_target: StoreTarget) -> None:
    store = vault_target.open(vault_target.denied_env)
    path = vault_target.extra["path"]
    for action, fn in (("read", store.read), ("write", lambda: store.write(payload(), None))):
        with pytest.raises(StoreError) as caught:
            fn()
        message, hint = str(caught.value), caught.value.hint or ""
        assert "permission denied" in message and vault_target.url in message and action in message
        assert f"secret/data/{path}" in hint and f"secret/data/{path}-lease" in hint
        assert ('"update"' in hint) == (action == "write")
        assert_clean(vault_target, describe(caught.value))
    lease = store.sibling("lease")
    with pytest.raises(StoreError) as caught:
        lease.read()
    assert f"secret/data/{path}-lease" in (caught.value.hint or "") and "lease-lease" not in (caught.value.hint or "")


def test_invalid_token_is_denied_without_echo(vault_target: StoreTarget) -> None:
    store = vault_target.open({"VAULT_ADDR": bao(vault_target).addr, "VAULT_TOKEN": "CANARY-vault-token"})
    with pytest.raises(StoreError) as caught:
        store.read()
    assert "permission denied" in str(caught.value) and "invalid or expired" in str(caught.value)
    assert_clean(vault_target, describe(caught.value), repr(store))


def test_unreachable(vault_target: StoreTarget) -> None:
    env = vault_target.unreachable_env
    for store in (vault_target.open(env), vault_target.open(vault_target.extra["approle_env"]  # type: ignore[operator]
                                                            | {"VAULT_ADDR": env["VAULT_ADDR"]})):
        with pytest.raises(StoreError) as caught:
            store.write(payload(), None)
        assert str(caught.value).startswith(f"cannot reach Vault at {env['VAULT_ADDR']}")
        assert_clean(vault_target, describe(caught.value))


def test_https_to_a_plain_http_server_is_a_tls_error(vault_target: StoreTarget) -> None:
    env = vault_target.env | {"VAULT_ADDR": bao(vault_target).addr.replace("http://", "https://")}
    with pytest.raises(StoreError, match="^TLS with Vault at https://127.0.0.1:[0-9]+ failed$"):
        vault_target.open(env).read()


def test_unreadable_jwt_file_is_a_config_error(vault_target: StoreTarget, tmp_path: Path) -> None:
    env = vault_target.extra["jwt_env"] | {"CODEX_CI_VAULT_JWT_FILE": str(tmp_path / "absent")}  # type: ignore[operator]
    store = vault_target.open(env)  # the JWT is read at the first request, not when the store opens
    with pytest.raises(ConfigError, match="CODEX_CI_VAULT_JWT_FILE"):
        store.read()


def test_foreign_shape_names_the_url(vault_target: StoreTarget) -> None:
    vault_target.put_foreign()
    with pytest.raises(StoredValueError) as caught:
        vault_target.open().read()
    assert vault_target.url in str(caught.value)


def test_missing_mount_and_kv_v1(vault_target: StoreTarget) -> None:
    server = bao(vault_target)
    env = {"VAULT_ADDR": server.addr, "VAULT_TOKEN": server.root.token}
    missing = open_store(f"vault://nomount-{uuid.uuid4().hex[:8]}/a", env)
    with pytest.raises(StoreError, match="no KV v2 secrets engine"):
        missing.read()
    kv1 = f"kv1-{uuid.uuid4().hex[:8]}"
    server.root.sys.enable_secrets_engine("kv", path=kv1, options={"version": "1"})
    store = open_store(f"vault://{kv1}/a", env)
    assert store.read() is None
    with pytest.raises(StoreError, match="KV v2"):
        store.write(payload(), None)
    with pytest.raises(StoreError, match="KV version 2"):
        store.read()


def test_missing_hvac_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "hvac", None)
    with pytest.raises(ConfigError) as caught:
        open_store("vault://secret/a", {"VAULT_ADDR": "http://127.0.0.1:1", "VAULT_TOKEN": "t"})
    assert caught.value.exit_code == ExitCode.USAGE
    assert "codex-ci[vault]" in (caught.value.hint or "")


def test_hvac_is_imported_only_when_a_vault_store_opens() -> None:
    code = (
        "import sys, codex_ci.cli, codex_ci.stores.vault\n"
        "assert 'hvac' not in sys.modules\n"
        "codex_ci.stores.open_store('vault://secret/a', {'VAULT_ADDR': 'http://127.0.0.1:1', 'VAULT_TOKEN': 't'})\n"
        "assert 'hvac' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
