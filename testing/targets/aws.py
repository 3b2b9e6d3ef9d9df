"""The AWS Secrets Manager store's target: moto's server in its own process (``python -m moto.server``) on a free
loopback port, so its global settings (IAM enforcement) and state never mix with the process using it.

:func:`moto_with_iam` enforces IAM: an ``admin`` user may do secretsmanager:* and a ``denied`` user has no
policy, so AccessDenied is real. :func:`moto` is the bare server (any key works).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from testing.servers import ServerProcess, free_port, http_ok, start_server
from testing.targets import StoreTarget

REGION = "us-east-1"
ANY_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass
class MotoServer:
    endpoint: str
    admin: dict[str, str]  # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
    denied: dict[str, str]

    def client(self, region: str = REGION, keys: dict[str, str] | None = None) -> Any:
        import boto3

        keys = keys or self.admin
        return boto3.client("secretsmanager", region_name=region, endpoint_url=self.endpoint,
                            aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"])

    def env(self, keys: dict[str, str] | None = None, endpoint: str | None = None) -> dict[str, str]:
        """What a runner sets; the empty values override whatever the developer's own shell has."""
        return {"AWS_ENDPOINT_URL": endpoint or self.endpoint, "AWS_REGION": REGION, **(keys or self.admin),
                "AWS_SESSION_TOKEN": "", "AWS_ENDPOINT_URL_SECRETS_MANAGER": "", "CODEX_CI_AWS_REGION": ""}


def start_moto(env: Mapping[str, str] | None = None) -> ServerProcess:
    """moto's server in a child process (``env`` added to this one's environment), healthy."""
    return start_server(lambda port: [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                        http_ok("/moto-api/"), name="moto server", env={**os.environ, **(env or {})})


@contextlib.contextmanager
def moto(env: Mapping[str, str] | None = None) -> Iterator[MotoServer]:
    """moto's server without IAM enforcement (any key, here ``ANY_KEYS``); stopped on exit."""
    with start_moto(env) as server:
        yield MotoServer(server.url, ANY_KEYS, ANY_KEYS)


@contextlib.contextmanager
def moto_with_iam() -> Iterator[MotoServer]:
    """moto's server enforcing IAM, with an ``admin`` and a ``denied`` user; stopped on exit."""
    import boto3

    with start_moto() as server:
        iam = boto3.client("iam", region_name=REGION, endpoint_url=server.url, aws_access_key_id="testing",
                           aws_secret_access_key="testing")
        policy = {"Version": "2012-10-17",
                  "Statement": [{"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"}]}
        keys = {}
        for user in ("admin", "denied"):
            iam.create_user(UserName=user)
            if user == "admin":
                iam.put_user_policy(UserName=user, PolicyName="secrets", PolicyDocument=json.dumps(policy))
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        # From now on every request must be signed by a known IAM user and allowed by its policies.
        request = urllib.request.Request(f"{server.url}/moto-api/reset-auth", data=b"0", method="POST",
                                         headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=5):
            pass
        yield MotoServer(server.url, keys["admin"], keys["denied"])


def aws_target(server: MotoServer) -> StoreTarget:
    """A fresh secret name under codex-ci/ (not created yet)."""
    name = f"codex-ci/{uuid.uuid4().hex}"
    client = server.client()

    def put_foreign() -> None:
        client.create_secret(Name=name, SecretBinary=b"\x00\x01")

    return StoreTarget(
        kind="aws",
        url=f"aws://{name}",
        env=server.env(),
        denied_env=server.env(server.denied),
        unreachable_env=server.env(endpoint=f"http://127.0.0.1:{free_port()}"),
        put_foreign=put_foreign,
        extra={"client": client, "name": name, "server": server},
    )
