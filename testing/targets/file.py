"""The file store's test target (a pytest plugin listed in conftest.py)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from storetargets import StoreTarget


@pytest.fixture
def file_target(tmp_path: Path) -> StoreTarget:
    path = tmp_path / "store" / f"codex-{uuid.uuid4().hex[:8]}.json"

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
