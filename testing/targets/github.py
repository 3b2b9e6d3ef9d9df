"""The GitHub Actions secrets store's target: a fresh secret in a repository, an environment or an organisation of
the loopback fake API (testing/fake_github.py).

Not among the compare-and-set stores (testing/fixtures.py STORE_KINDS): the github store cannot compare-and-set,
so it runs its own part of the contract."""

from __future__ import annotations

import uuid

from testing.fake_github import READ_ONLY_TOKEN, WRITE_TOKEN, FakeGitHub
from testing.targets import StoreTarget

GITHUB_KINDS = ["repo", "environment", "org"]
# Variables that change what the github store does; every github test sets the ones it needs explicitly.
GITHUB_VARIABLES = ("GITHUB_API_URL", "GITHUB_TOKEN", "GH_TOKEN", "CODEX_CI_GITHUB_TOKEN")


def github_url(kind: str, name: str) -> tuple[str, str]:
    """(store URL, API scope) of secret ``name`` in the fake's repository, environment or organisation."""
    url, scope = {
        "repo": ("github://octo/app/", "repos/octo/app/actions"),
        "environment": ("github://octo/app/environments/prod/", "repos/octo/app/environments/prod"),
        "org": ("github://orgs/octo/", "orgs/octo/actions"),
    }[kind]
    return url + name, scope


def make_github_target(server: FakeGitHub, kind: str, unused_port: int) -> StoreTarget:
    name = f"CODEX_AUTH_{uuid.uuid4().hex[:8].upper()}"
    url, scope = github_url(kind, name)
    env = {"GITHUB_API_URL": server.url, "CODEX_CI_GITHUB_TOKEN": WRITE_TOKEN}

    def put_foreign() -> None:
        raise NotImplementedError("a GitHub secret is only ever read from the environment")

    return StoreTarget(
        kind=f"github-{kind}", url=url, env=env,
        denied_env=env | {"CODEX_CI_GITHUB_TOKEN": READ_ONLY_TOKEN},
        unreachable_env=env | {"GITHUB_API_URL": f"http://127.0.0.1:{unused_port}"},
        put_foreign=put_foreign, extra={"server": server, "name": name, "scope": scope},
    )
