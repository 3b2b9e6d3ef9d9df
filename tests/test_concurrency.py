"""Many refreshes of one CODEX_HOME at once: one POST, every process succeeds, the file holds the new tokens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import SCRUBBED, assert_no_secrets, login, write_login

from testing.tokenserver import TokenServer


def test_32_processes_refresh_one_stale_home_with_one_post(home: Path) -> None:
    path = write_login(home, login(expires_in=-60))
    with TokenServer(initial_refresh_token="CANARY-rt-0", delay=0.2, access_ttl=10 * 86400) as server:
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
        env |= {"CODEX_REFRESH_TOKEN_URL_OVERRIDE": server.url, "CODEX_HOME": str(home)}
        procs = [
            subprocess.Popen([sys.executable, "-m", "codex_ci", "refresh"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(32)
        ]
        results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
        assert [code for code, _, _ in results] == [0] * 32, results
        assert server.posts == 1
        assert server.reused == 0
        saved = json.loads(path.read_text())
        assert saved["tokens"]["refresh_token"] == server.current_refresh_token
    outcomes = [err for _, _, err in results]
    assert sum("codex-ci: refreshed:" in err for err in outcomes) == 1
    assert sum("codex-ci: not refreshed:" in err for err in outcomes) == 31
    for _, out, err in results:
        assert_no_secrets(out, err)
    assert sorted(p.name for p in home.iterdir()) == ["auth.json", "auth.json.lock", "auth.lock", "codex-ci-state.json"]


def test_forced_herd_refreshes_once(home: Path) -> None:
    """--force means "refresh unless another process did while I waited", so a forced herd still POSTs once."""
    write_login(home, login(expires_in=7200))
    with TokenServer(initial_refresh_token="CANARY-rt-0", delay=0.3) as server:
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
        env |= {"CODEX_REFRESH_TOKEN_URL_OVERRIDE": server.url, "CODEX_HOME": str(home)}
        procs = [subprocess.Popen([sys.executable, "-m", "codex_ci", "refresh", "--force"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(8)]
        assert [p.wait(timeout=120) for p in procs] == [0] * 8
        assert server.posts >= 1 and server.reused == 0
        assert server.posts < 8
