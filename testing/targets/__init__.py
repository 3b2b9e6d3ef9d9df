"""Store targets: a running store server and a fresh secret location on it, what the shared contract and sync
tests (through testing/fixtures.py) and the benchmarks use. One module per store kind (``file``, ``vault``,
``aws``, ``gcp``, ``github``); :class:`StoreTarget` is what each gives a test."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from codex_ci.stores import Store, open_store


@dataclass
class StoreTarget:
    """A fresh, not-yet-existing secret location on a running store, and how to reach it.

    ``env``: the environment variables a runner would set (endpoint, credentials); never includes the value.
    ``denied_env``: ``env`` with credentials that may not read or write this location.
    ``unreachable_env``: ``env`` pointing at a closed loopback port.
    ``put_foreign``: writes a value at ``url`` in a shape codex-ci never writes (e.g. wrong field, binary).
    """

    kind: str
    url: str
    env: dict[str, str]
    denied_env: dict[str, str] | None
    unreachable_env: dict[str, str]
    put_foreign: Callable[[], None]
    extra: dict[str, object] = field(default_factory=dict)

    def open(self, env: dict[str, str] | None = None) -> Store:
        return open_store(self.url, {**os.environ, **(env if env is not None else self.env)})
