"""The GCP Secret Manager store's test target: loopback gRPC fakes (a pytest plugin listed in conftest.py).

Two fakes per session: ``gcp_fake`` serves the tests, ``gcp_denying_fake`` answers PERMISSION_DENIED to every
call, so ``denied_env`` (which can only change the environment, not the URL) points there.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest
from storetargets import StoreTarget

PROJECT = "codex-test"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def gcp_fake() -> Iterator[object]:
    pytest.importorskip("google.cloud.secretmanager")
    from fake_secretmanager import FakeSecretManager

    with FakeSecretManager() as fake:
        yield fake


@pytest.fixture(scope="session")
def gcp_denying_fake() -> Iterator[object]:
    pytest.importorskip("google.cloud.secretmanager")
    from fake_secretmanager import FakeSecretManager

    with FakeSecretManager(deny_all=True) as fake:
        yield fake


@pytest.fixture
def gcp_target(gcp_fake: object, gcp_denying_fake: object, monkeypatch: pytest.MonkeyPatch) -> Iterator[StoreTarget]:
    from fake_secretmanager import FakeSecretManager

    assert isinstance(gcp_fake, FakeSecretManager) and isinstance(gcp_denying_fake, FakeSecretManager)
    monkeypatch.delenv("CODEX_CI_GCP_ENDPOINT", raising=False)
    name = f"projects/{PROJECT}/secrets/codex-{uuid.uuid4().hex}"

    def put_foreign() -> None:
        gcp_fake.put(name, b"\xff\xfe")  # a version that is not UTF-8, and the codex-ci alias on it

    yield StoreTarget(
        kind="gcp",
        url=f"gcp://{name}",
        env={"CODEX_CI_GCP_ENDPOINT": gcp_fake.endpoint},
        denied_env={"CODEX_CI_GCP_ENDPOINT": gcp_denying_fake.endpoint},
        unreachable_env={"CODEX_CI_GCP_ENDPOINT": f"127.0.0.1:{closed_port()}"},
        put_foreign=put_foreign,
        extra={"server": gcp_fake, "name": name, "project": PROJECT},
    )
    gcp_fake.reset()
