"""codex-ci status: health, exit codes, JSON, masking, permissions, no token ever."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import login, write_login

from codex_ci.errors import ExitCode


@pytest.mark.parametrize(("expires_in", "health", "code"), [
    (7200, "healthy", ExitCode.OK),
    (1800, "expiring", ExitCode.EXPIRING),
    (-60, "expired", ExitCode.EXPIRED),
])
def test_status_health_and_exit_code(cli, home: Path, expires_in: int, health: str, code: int) -> None:
    write_login(home, login(expires_in=expires_in, issued_at=int(time.time())))
    (home / "config.toml").write_text('cli_auth_credentials_store = "file"\n')
    run = cli("status", "--json", "--codex-home", str(home))
    assert run.exit_code == code
    report = json.loads(run.stdout)
    assert report["health"] == health
    assert report["mode"] == "chatgpt"
    assert report["account_id"] == "acct...7890"
    assert report["email"] == "c***@example.com"
    assert report["plan"] == "plus"
    assert report["refresh_token_present"] is True
    assert report["file_mode"] == "0600" and report["dir_mode"] == "0700"
    assert report["credentials_store"] == "file"
    assert abs(report["access_expires_in_seconds"] - expires_in) < 30
    assert 0 <= report["last_refresh_age_seconds"] < 30
    assert report["warnings"] == []


def test_status_min_ttl_option(cli, home: Path) -> None:
    write_login(home, login(expires_in=7200))
    assert cli("status", "--codex-home", str(home), "--min-ttl", "3h").exit_code == ExitCode.EXPIRING
    assert cli("status", "--codex-home", str(home), "--min-ttl", "30m").exit_code == ExitCode.OK


def test_status_human_table(cli, home: Path) -> None:
    write_login(home, login(expires_in=7200))
    run = cli("status", "--codex-home", str(home))
    assert run.exit_code == 0
    rows = dict(line.split(None, 1) if " " in line else (line, "") for line in run.stdout.splitlines())
    assert run.stdout.splitlines()[0].split() == ["health", "healthy"]
    assert "acct...7890" in run.stdout and "c***@example.com" in run.stdout
    assert "file 0600, directory 0700" in run.stdout
    assert "left)" in run.stdout and "ago)" in run.stdout
    assert rows


def test_status_missing(cli, home: Path) -> None:
    run = cli("status", "--json", "--codex-home", str(home))
    assert run.exit_code == ExitCode.FILESYSTEM  # no CODEX_HOME at all: unusable, as for every command
    assert json.loads(run.stdout)["problem"].endswith("does not exist")
    assert not home.exists()  # status never creates anything
    home.mkdir()
    assert cli("status", "--codex-home", str(home)).exit_code == ExitCode.MISSING


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"tokens": {}}', b"\x00\x01"])
def test_status_invalid(cli, home: Path, content: bytes) -> None:
    write_login(home, content)
    run = cli("status", "--json", "--codex-home", str(home))
    assert run.exit_code == ExitCode.INVALID
    assert json.loads(run.stdout)["health"] == "invalid"
    assert (home / "auth.json").read_bytes() == content


def test_status_symlink_is_unusable(cli, home: Path, tmp_path: Path) -> None:
    target = tmp_path / "real.json"
    target.write_text(json.dumps(login()))
    home.mkdir()
    (home / "auth.json").symlink_to(target)
    run = cli("status", "--json", "--codex-home", str(home))
    assert run.exit_code == ExitCode.FILESYSTEM
    assert "symlink" in json.loads(run.stdout)["problem"]


def test_status_warns_about_permissions_and_keyring(cli, home: Path) -> None:
    path = write_login(home, login())
    path.chmod(0o644)
    home.chmod(0o755)
    (home / "config.toml").write_text('cli_auth_credentials_store = "keyring"\n')
    report = json.loads(cli("status", "--json", "--codex-home", str(home)).stdout)
    assert report["file_mode"] == "0644" and report["dir_mode"] == "0755"
    assert any("0644" in w for w in report["warnings"])
    assert any("0755" in w for w in report["warnings"])
    assert any("keyring" in w for w in report["warnings"])


def test_status_apikey(cli, home: Path) -> None:
    write_login(home, {"auth_mode": "apikey", "OPENAI_API_KEY": "sk-CANARY-key"})
    run = cli("status", "--json", "--codex-home", str(home))
    assert run.exit_code == 0
    report = json.loads(run.stdout)
    assert report["mode"] == "apikey" and report["refresh_token_present"] is False


def test_status_never_prints_a_token_even_verbose(cli, home: Path) -> None:
    write_login(home, login())
    run = cli("--verbose", "status", "--json", "--codex-home", str(home), env={"GITHUB_ACTIONS": "true"})
    assert run.exit_code == 0  # the cli fixture asserts no canary and no JWT in stdout or stderr
    assert "::add-mask::" not in run.stdout  # status output stays machine readable


def test_status_reads_under_a_shared_lock(cli, home: Path) -> None:
    """Readers share the lock; a writer (Codex or codex-ci, both exclusive) holds them off."""
    import fcntl
    import os

    write_login(home, login())
    fd = os.open(home / "auth.json.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        assert cli("status", "--codex-home", str(home), "--lock-timeout", "0.2").exit_code == 0
        fcntl.flock(fd, fcntl.LOCK_EX)
        run = cli("status", "--codex-home", str(home), "--lock-timeout", "0.2")
        assert run.exit_code == ExitCode.LOCK_TIMEOUT
        assert "timed out after 0.2s" in run.stderr
    finally:
        os.close(fd)
