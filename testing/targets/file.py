"""The file store's target: a fresh path in a directory of the caller's."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from testing.targets import StoreTarget


def file_target(directory: Path) -> StoreTarget:
    path = directory / "store" / f"codex-{uuid.uuid4().hex[:8]}.json"

    def put_foreign() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"something": "else"}))

    return StoreTarget(
        kind="file",
        url=f"file://{path}",
        env={},
        denied_env=None,  # root ignores file permissions; see test_file_store_unwritable
        unreachable_env={},
        put_foreign=put_foreign,
    )
