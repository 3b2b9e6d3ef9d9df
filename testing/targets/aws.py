"""The AWS Secrets Manager store's test target (a pytest plugin listed in conftest.py).

One moto server per session, in its own process (``python -m moto.server``) on a free loopback port, so its
global settings (IAM enforcement) and state never mix with anything in the test process. IAM is enforced: an
``admin`` user may do secretsmanager:* and a ``denied`` user has no policy, so AccessDenied is real.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from storetargets import StoreTarget

REGION = "us-east-1"


@dataclass
class MotoServer:
    endpoint: str
    admin: dict[str, str]  # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
    denied: dict[str, str]

    def client(self, region: str = REGION, keys: dict[str, str] | None = None) -> Any:
        keys = keys or self.admin
        return boto3.client("secretsmanager", region_name=region, endpoint_url=self.endpoint,
                            aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"])

    def env(self, keys: dict[str, str] | None = None, endpoint: str | None = None) -> dict[str, str]:
        """What a runner sets; the empty values override whatever the developer's own shell has."""
        return {"AWS_ENDPOINT_URL": endpoint or self.endpoint, "AWS_REGION": REGION, **(keys or self.admin),
                "AWS_SESSION_TOKEN": "", "AWS_ENDPOINT_URL_SECRETS_MANAGER": "", "CODEX_CI_AWS_REGION": ""}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start() -> tuple[subprocess.Popen[bytes], str]:
    for _ in range(3):  # the free port may be taken before the server binds it
        endpoint = f"http://127.0.0.1:{free_port()}"
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", endpoint[17:]],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                    return proc, endpoint
            except OSError:
                time.sleep(0.05)
        proc.kill()
        proc.wait()
    raise RuntimeError("moto server did not start")


@pytest.fixture(scope="session")
def moto_aws() -> Iterator[MotoServer]:
    proc, endpoint = _start()
    try:
        iam = boto3.client("iam", region_name=REGION, endpoint_url=endpoint, aws_access_key_id="testing",
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
        request = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                         headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=5):
            pass
        yield MotoServer(endpoint, keys["admin"], keys["denied"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def aws_target(moto_aws: MotoServer) -> StoreTarget:
    name = f"codex-ci/{uuid.uuid4().hex}"
    client = moto_aws.client()

    def put_foreign() -> None:
        client.create_secret(Name=name, SecretBinary=b"\x00\x01")

    return StoreTarget(
        kind="aws",
        url=f"aws://{name}",
        env=moto_aws.env(),
        denied_env=moto_aws.env(moto_aws.denied),
        unreachable_env=moto_aws.env(endpoint=f"http://127.0.0.1:{free_port()}"),
        put_foreign=put_foreign,
        extra={"client": client, "name": name, "server": moto_aws},
    )
