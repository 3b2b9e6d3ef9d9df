"""restore / persist / refresh --store / keepalive / status --store, against every store."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SCRUBBED, assert_no_secrets, login, write_login

from codex_ci.errors import ExitCode
from testing.targets import StoreTarget
from testing.tokenserver import TokenServer


def put(target: StoreTarget, data: dict, expected: str | None = None) -> str:
    return target.open().write(json.dumps(data, indent=2), expected)


def stored(target: StoreTarget) -> dict:
    got = target.open().read()
    assert got is not None
    return json.loads(got.value)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> TokenServer:
    with TokenServer(initial_refresh_token="CANARY-rt-0", access_ttl=10 * 86400) as srv:
        monkeypatch.setenv("CODEX_REFRESH_TOKEN_URL_OVERRIDE", srv.url)
        yield srv


def test_restore_into_empty_home(cli, home: Path, store_target: StoreTarget, tmp_path: Path) -> None:
    data = login(refresh_token="CANARY-rt-stored")
    version = put(store_target, data)
    out = tmp_path / "out"
    env = store_target.env | {"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(out)}
    run = cli("restore", "--from", store_target.url, "--codex-home", str(home), env=env)
    assert run.exit_code == 0, run.stderr
    assert json.loads((home / "auth.json").read_text())["tokens"] == data["tokens"]
    assert stat.S_IMODE((home / "auth.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    state = json.loads((home / "codex-ci-state.json").read_text())
    assert state["store"] == store_target.open().key and state["version"] == version
    assert stat.S_IMODE((home / "codex-ci-state.json").stat().st_mode) == 0o600
    assert (home / "config.toml").exists()
    assert f"\n{version}\n" in out.read_text() and "\nrestored\n" in out.read_text()
    assert_no_secrets(out.read_text(), (home / "codex-ci-state.json").read_text())


def test_restore_twice_writes_once(cli, home: Path, store_target: StoreTarget, tmp_path: Path) -> None:
    store_target.open().write(json.dumps(login()), None)  # compact JSON: not Codex's shape
    assert cli("restore", "--from", store_target.url, "--codex-home", str(home), env=store_target.env).exit_code == 0
    before = (home / "auth.json").stat().st_mtime_ns, (home / "auth.json").read_bytes()
    out = tmp_path / "out"
    env = store_target.env | {"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(out)}
    assert cli("restore", "--from", store_target.url, "--codex-home", str(home), env=env).exit_code == 0
    assert ((home / "auth.json").stat().st_mtime_ns, (home / "auth.json").read_bytes()) == before
    assert "\nunchanged\n" in out.read_text()


def test_restore_from_empty_store_is_missing(cli, home: Path, store_target: StoreTarget) -> None:
    run = cli("restore", "--from", store_target.url, "--codex-home", str(home), env=store_target.env)
    assert run.exit_code == ExitCode.MISSING
    assert "holds no login" in run.stderr


def test_restore_keeps_a_newer_local_login(cli, home: Path, store_target: StoreTarget) -> None:
    put(store_target, login(refresh_token="CANARY-rt-old", last_refresh="2026-01-01T00:00:00Z"))
    path = write_login(home, login(refresh_token="CANARY-rt-new", last_refresh="2026-02-01T00:00:00Z"))
    before = path.read_bytes()
    run = cli("restore", "--from", store_target.url, "--codex-home", str(home), env=store_target.env)
    assert run.exit_code == 0
    assert path.read_bytes() == before
    assert "is newer than" in run.stderr


def test_restore_of_a_foreign_payload_changes_nothing(cli, home: Path, store_target: StoreTarget) -> None:
    store_target.put_foreign()
    path = write_login(home, login(refresh_token="CANARY-rt-local"))
    before = path.read_bytes()
    run = cli("restore", "--from", store_target.url, "--codex-home", str(home), env=store_target.env)
    assert run.exit_code == ExitCode.INVALID
    assert len(run.stderr.strip().splitlines()) == 1
    assert path.read_bytes() == before


def test_persist_unchanged_writes_nothing(cli, home: Path, store_target: StoreTarget) -> None:
    version = put(store_target, login())
    assert cli("restore", "--from", store_target.url, "--codex-home", str(home), env=store_target.env).exit_code == 0
    run = cli("persist", "--to", store_target.url, "--codex-home", str(home), env=store_target.env)
    assert run.exit_code == 0
    assert "has not changed" in run.stderr
    got = store_target.open().read()
    assert got is not None and got.version == version


def test_persist_creates_then_writes_by_compare_and_set(cli, home: Path, store_target: StoreTarget) -> None:
    write_login(home, login(refresh_token="CANARY-rt-1", last_refresh="2026-01-01T00:00:00Z"))
    run = cli("persist", "--to", store_target.url, "--codex-home", str(home), env=store_target.env)
    assert run.exit_code == 0 and "wrote" in run.stderr
    first = store_target.open().read()
    assert first is not None
    write_login(home, login(refresh_token="CANARY-rt-2", last_refresh="2026-01-02T00:00:00Z"))
    assert cli("persist", "--to", store_target.url, "--codex-home", str(home), env=store_target.env).exit_code == 0
    second = store_target.open().read()
    assert second is not None and second.version != first.version
    assert stored(store_target)["tokens"]["refresh_token"] == "CANARY-rt-2"


def test_older_runner_never_overwrites_the_store(cli, tmp_path: Path, store_target: StoreTarget) -> None:
    """Runner A restores, runner B rotates and persists; A's stale change must lose."""
    put(store_target, login(refresh_token="CANARY-rt-1", last_refresh="2026-01-01T00:00:00Z"))
    a, b = tmp_path / "a", tmp_path / "b"
    for home in (a, b):
        assert cli("restore", "--from", store_target.url, "--codex-home", str(home), env=store_target.env
                   ).exit_code == 0
    write_login(b, login(refresh_token="CANARY-rt-b", last_refresh="2026-01-03T00:00:00Z"))
    write_login(a, login(refresh_token="CANARY-rt-a", last_refresh="2026-01-02T00:00:00Z"))
    assert cli("persist", "--to", store_target.url, "--codex-home", str(b), env=store_target.env).exit_code == 0
    run = cli("persist", "--to", store_target.url, "--codex-home", str(a), env=store_target.env)
    assert run.exit_code == ExitCode.CONFLICT
    assert "both changed, so the store was not overwritten" in run.stderr and "persist --force" in run.stderr
    assert stored(store_target)["tokens"]["refresh_token"] == "CANARY-rt-b"


def test_when_both_sides_changed_even_a_later_login_is_not_written_without_force(
        cli, tmp_path: Path, store_target: StoreTarget) -> None:
    """Two runners changed the same base: timestamps do not decide (clocks drift); --force is the recovery."""
    put(store_target, login(refresh_token="CANARY-rt-1", last_refresh="2026-01-01T00:00:00Z"))
    a, b = tmp_path / "a", tmp_path / "b"
    for home in (a, b):
        cli("restore", "--from", store_target.url, "--codex-home", str(home), env=store_target.env)
    write_login(b, login(refresh_token="CANARY-rt-b", last_refresh="2026-01-02T00:00:00Z"))
    write_login(a, login(refresh_token="CANARY-rt-a", last_refresh="2026-01-03T00:00:00Z"))
    assert cli("persist", "--to", store_target.url, "--codex-home", str(b), env=store_target.env).exit_code == 0
    run = cli("persist", "--to", store_target.url, "--codex-home", str(a), env=store_target.env)
    assert run.exit_code == ExitCode.CONFLICT
    assert stored(store_target)["tokens"]["refresh_token"] == "CANARY-rt-b"
    run = cli("persist", "--force", "--to", store_target.url, "--codex-home", str(a), env=store_target.env)
    assert run.exit_code == 0, run.stderr
    assert stored(store_target)["tokens"]["refresh_token"] == "CANARY-rt-a"


def test_persist_refuses_an_invalid_local_file(cli, home: Path, store_target: StoreTarget) -> None:
    put(store_target, login(refresh_token="CANARY-rt-good"))
    write_login(home, b"{broken")
    run = cli("persist", "--to", store_target.url, "--codex-home", str(home), env=store_target.env)
    assert run.exit_code == ExitCode.INVALID
    assert stored(store_target)["tokens"]["refresh_token"] == "CANARY-rt-good"


def test_distributed_refresh_of_a_stale_login(cli, home: Path, store_target: StoreTarget, server) -> None:
    put(store_target, login(expires_in=-60))
    run = cli("refresh", "--store", store_target.url, "--codex-home", str(home), env=store_target.env)
    assert run.exit_code == 0, run.stderr
    assert server.posts == 1
    new = stored(store_target)["tokens"]["refresh_token"]
    assert new == server.current_refresh_token
    assert json.loads((home / "auth.json").read_text())["tokens"]["refresh_token"] == new
    lease = store_target.open().sibling("lease").read()
    assert lease is not None and json.loads(lease.value)["holder"] is None  # released


def test_distributed_refresh_of_a_fresh_login_sends_nothing(cli, home: Path, store_target: StoreTarget, server
                                                            ) -> None:
    version = put(store_target, login(expires_in=86400))
    assert cli("refresh", "--store", store_target.url, "--codex-home", str(home), env=store_target.env
               ).exit_code == 0
    assert server.posts == 0
    got = store_target.open().read()
    assert got is not None and got.version == version
    assert store_target.open().sibling("lease").read() is None  # no lease taken


def test_keepalive_rotates_once_and_reports_health(cli, tmp_path: Path, store_target: StoreTarget, server) -> None:
    put(store_target, login(expires_in=86400))
    run = cli("keepalive", "--store", store_target.url, "--codex-home", str(tmp_path / "k1"), env=store_target.env)
    assert run.exit_code == 0, run.stderr
    assert server.posts == 1 and "health: healthy" in run.stderr
    run = cli("keepalive", "--store", store_target.url, "--max-age", "1d", "--codex-home", str(tmp_path / "k2"),
              env=store_target.env)
    assert run.exit_code == 0
    assert server.posts == 1  # refreshed less than a day ago: nothing to do


def test_keepalive_max_age_refreshes_an_old_login_with_a_long_lived_token(cli, tmp_path: Path,
                                                                          store_target: StoreTarget, server) -> None:
    put(store_target, login(expires_in=9 * 86400, last_refresh="2026-01-01T00:00:00Z"))
    run = cli("keepalive", "--store", store_target.url, "--max-age", "1d", "--codex-home", str(tmp_path / "k"),
              env=store_target.env)
    assert run.exit_code == 0, run.stderr
    assert server.posts == 1
    assert "last_refresh is older than --max-age" in run.stderr


def test_keepalive_rejected_login_exits_5(cli, tmp_path: Path, store_target: StoreTarget, server) -> None:
    put(store_target, login(expires_in=86400))
    server.set_mode("reused")
    run = cli("keepalive", "--store", store_target.url, "--codex-home", str(tmp_path / "k"), env=store_target.env)
    assert run.exit_code == ExitCode.LOGIN_REJECTED


def test_status_with_store(cli, home: Path, store_target: StoreTarget) -> None:
    version = put(store_target, login(issued_at=int(time.time())))
    cli("restore", "--from", store_target.url, "--codex-home", str(home), env=store_target.env)
    run = cli("status", "--json", "--store", store_target.url, "--codex-home", str(home), env=store_target.env)
    assert run.exit_code == 0
    view = json.loads(run.stdout)["store"]
    assert view["version"] == version and view["in_sync"] is True
    assert 0 <= view["last_refresh_age_seconds"] < 60


def test_fleet_of_16_runners_rotates_once(tmp_path: Path, store_target: StoreTarget, server) -> None:
    """16 runners at once, each with its own CODEX_HOME: refresh --store, then persist. One rotation."""
    put(store_target, login(expires_in=-60))
    base = {k: v for k, v in os.environ.items() if k not in SCRUBBED} | store_target.env
    base["CODEX_REFRESH_TOKEN_URL_OVERRIDE"] = server.url
    script = (
        f"{sys.executable} -m codex_ci refresh --store {store_target.url} && "
        f"{sys.executable} -m codex_ci persist --to {store_target.url}"
    )
    procs = [
        subprocess.Popen(["bash", "-c", script], env=base | {"CODEX_HOME": str(tmp_path / f"runner{i}")},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(16)
    ]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert [code for code, _, _ in results] == [0] * 16, [err for _, _, err in results]
    assert server.posts == 1 and server.reused == 0 and not server.revoked
    newest = server.current_refresh_token
    assert stored(store_target)["tokens"]["refresh_token"] == newest
    for i in range(16):
        local = json.loads((tmp_path / f"runner{i}" / "auth.json").read_text())
        assert local["tokens"]["refresh_token"] == newest
    for _, out, err in results:
        assert_no_secrets(out, err)
