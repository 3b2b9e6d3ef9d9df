"""The GCP Secret Manager store's target: a fresh secret name on the loopback gRPC fake
(testing/fake_secretmanager.py). ``denied`` is a fake that answers PERMISSION_DENIED to every call: a target's
``denied_env`` can only change the environment, not the URL, so it points there."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from testing.servers import free_port
from testing.targets import StoreTarget

if TYPE_CHECKING:
    from testing.fake_secretmanager import FakeSecretManager

PROJECT = "codex-test"


def gcp_target(fake: FakeSecretManager, denied: FakeSecretManager) -> StoreTarget:
    name = f"projects/{PROJECT}/secrets/codex-{uuid.uuid4().hex}"

    def put_foreign() -> None:
        fake.put(name, b"\xff\xfe")  # a version that is not UTF-8, and the codex-ci alias on it

    return StoreTarget(
        kind="gcp",
        url=f"gcp://{name}",
        env={"CODEX_CI_GCP_ENDPOINT": fake.endpoint},
        denied_env={"CODEX_CI_GCP_ENDPOINT": denied.endpoint},
        unreachable_env={"CODEX_CI_GCP_ENDPOINT": f"127.0.0.1:{free_port()}"},
        put_foreign=put_foreign,
        extra={"server": fake, "name": name, "project": PROJECT},
    )
