"""File safety: modes whatever the umask, symlinks and special files refused, odd CODEX_HOME paths and owners,
atomic replacement, best-effort directory fsync.

What codex-ci does in the cases the README does not spell out is pinned here deliberately (each test says so):
a hardlinked auth.json is replaced, never written through; an existing directory's mode is left as it is
(``status`` warns); a CODEX_HOME owned by another user is used, with every file codex-ci writes owned by the
caller and unreadable by that user; ``status`` reports a symlinked auth.json as invalid (exit 3) and reads
without the lock when the lock file is unusable.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from conftest import login, run_process, write_login

from codex_ci import files
from codex_ci.errors import ExitCode, FileSystemError
from testing.checks import umask
from testing.tokenserver import TokenServer

OLD = "2024-01-01T00:00:00.000000Z"
NOBODY = 65534
PRIVATE_FILES = ("auth.json", "codex-ci-state.json", "config.toml", "auth.json.lock")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)




def seed_env(data: dict[str, Any]) -> dict[str, str]:
    return {"CODEX_AUTH_JSON": json.dumps(data)}


def stale(refresh_token: str = "CANARY-rt-0", **kw: Any) -> dict[str, Any]:
    return login(expires_in=-60, refresh_token=refresh_token, last_refresh=OLD, **kw)


def temp_files(*directories: Path) -> list[Path]:
    return [p for d in directories for p in d.iterdir() if p.name.endswith(".tmp")]


def store_files(path: Path) -> list[Path]:
    """A file store's files: the login, its lock, the lease and the lease's lock."""
    return [path, path.with_name(path.name + ".lock"), path.with_name(path.name + ".lease"),
            path.with_name(path.name + ".lease.lock")]


# == modes whatever the umask ===================================================================================
@pytest.mark.parametrize("mask", [0o000, 0o077, 0o022], ids=["umask-000", "umask-077", "umask-022"])
def test_modes_whatever_the_umask(cli, tmp_path: Path, token_server: TokenServer, mask: int) -> None:
    home, other = tmp_path / "home", tmp_path / "other"
    store = tmp_path / "store" / "auth.json"
    url = f"file://{store}"
    with umask(mask):
        assert cli("seed", "--codex-home", str(home), env=seed_env(stale())).exit_code == 0
        lock = os.stat(home / "auth.json.lock").st_ino
        assert cli("persist", "--to", url, "--codex-home", str(home)).exit_code == 0
        assert cli("restore", "--from", url, "--codex-home", str(other)).exit_code == 0
        assert cli("refresh", "--store", url, "--codex-home", str(home)).exit_code == 0
        assert cli("status", "--codex-home", str(home)).exit_code == 0
    assert token_server.posts == 1
    for directory in (home, other, store.parent):
        assert mode(directory) == 0o700, directory
    for path in [*(home / name for name in PRIVATE_FILES), *(other / name for name in PRIVATE_FILES),
                 *store_files(store)]:
        assert mode(path) == 0o600, path
    assert os.stat(home / "auth.json.lock").st_ino == lock  # never deleted or replaced
    assert temp_files(home, other, store.parent) == []


def test_modes_in_a_real_process_under_umask_000(tmp_path: Path) -> None:
    home, store = tmp_path / "home", tmp_path / "store" / "auth.json"
    env = seed_env(login())
    for args in (("seed", "--codex-home", str(home)), ("persist", "--to", f"file://{store}", "--codex-home",
                                                      str(home))):
        run = run_process(*args, env=env, timeout=30, umask=0)  # set by the fork's C code: no Python runs there
        assert run.exit_code == 0, run.stderr
    assert mode(home) == mode(store.parent) == 0o700
    assert [mode(p) for p in (home / "auth.json", home / "config.toml", home / "auth.json.lock", home /
                              "codex-ci-state.json", *store_files(store)[:2])] == [0o600] * 6


def test_the_temp_file_is_private_before_the_rename(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, int]] = []
    real = os.replace

    def spy(src: Any, dst: Any, *args: Any, **kw: Any) -> None:
        seen.append((Path(dst).name, mode(Path(src))))
        real(src, dst, *args, **kw)

    monkeypatch.setattr(os, "replace", spy)
    with umask(0):
        assert cli("seed", "--codex-home", str(tmp_path / "home"), env=seed_env(login())).exit_code == 0
        assert cli("persist", "--to", f"file://{tmp_path / 'store.json'}", "--codex-home", str(tmp_path / "home")
                   ).exit_code == 0
    assert {name for name, _ in seen} == {"auth.json", "config.toml", "store.json", "codex-ci-state.json"}
    assert {m for _, m in seen} == {0o600}


def test_missing_parents_of_codex_home_are_not_world_writable(cli, tmp_path: Path) -> None:
    with umask(0):
        assert cli("seed", "--codex-home", str(tmp_path / "a" / "b" / "home"), env=seed_env(login())).exit_code == 0
    assert mode(tmp_path / "a" / "b" / "home") == 0o700
    assert [mode(tmp_path / "a") & 0o022, mode(tmp_path / "a" / "b") & 0o022] == [0, 0]


def test_missing_parents_of_a_file_store_are_not_world_writable(cli, tmp_path: Path) -> None:
    write_login(tmp_path / "home", login())
    store = tmp_path / "s1" / "s2" / "auth.json"
    with umask(0):
        assert cli("persist", "--to", f"file://{store}", "--codex-home", str(tmp_path / "home")).exit_code == 0
    assert mode(store.parent) == 0o700 and mode(store) == 0o600
    assert mode(tmp_path / "s1") & 0o022 == 0


def test_existing_modes_are_kept_and_reported(cli, tmp_path: Path, token_server: TokenServer) -> None:
    """Deliberate: codex-ci never chmods a directory it did not create (CODEX_HOME may be $HOME); it writes
    auth.json 0600 whenever it writes it, tightens a lock file it owns, and status warns about the rest."""
    home = tmp_path / "home"
    write_login(home, stale())
    home.chmod(0o755)
    (home / "auth.json").chmod(0o644)
    (home / "auth.json.lock").touch(mode=0o666)
    (home / "auth.json.lock").chmod(0o666)
    assert cli("seed", "--codex-home", str(home), env=seed_env(login())).exit_code == 0  # kept: nothing written
    assert (mode(home), mode(home / "auth.json")) == (0o755, 0o644)
    report = json.loads(cli("status", "--json", "--codex-home", str(home)).stdout)
    assert "auth.json is 0644; expected 0600" in report["warnings"]
    assert "CODEX_HOME is 0755; expected 0700" in report["warnings"]
    assert cli("refresh", "--codex-home", str(home)).exit_code == 0
    assert (mode(home), mode(home / "auth.json"), mode(home / "auth.json.lock")) == (0o755, 0o600, 0o600)


# == symlinks =====================================================================================================
def prepare(root: Path) -> tuple[Path, Path, str]:
    """A CODEX_HOME with a stale login newer than the file store's (also stale), and config.toml; written directly."""
    home, store = root / "home", root / "store" / "auth.json"
    write_login(home, login(expires_in=-60, refresh_token="CANARY-rt-local", last_refresh="2026-01-02T00:00:00Z"))
    (home / "config.toml").write_text('cli_auth_credentials_store = "file"\n')
    (home / "config.toml").chmod(0o600)
    value = json.dumps(login(expires_in=-60, refresh_token="CANARY-rt-stored", last_refresh="2026-01-01T00:00:00Z"))
    store.parent.mkdir(mode=0o700)
    store.write_text(json.dumps({"format": 1, "version": 1, "value": value}))
    store.chmod(0o600)
    return home, store, f"file://{store}"


def command(name: str, home: Path, url: str) -> tuple[list[str], dict[str, str]]:
    env = seed_env(login(refresh_token="CANARY-rt-seed"))
    args = {
        "seed": ["seed"], "seed --force": ["seed", "--force"], "refresh": ["refresh", "--force"],
        "status": ["status", "--json"], "restore": ["restore", "--from", url], "persist": ["persist", "--to", url],
        "refresh --store": ["refresh", "--store", url], "keepalive": ["keepalive", "--store", url],
        "status --store": ["status", "--json", "--store", url],
    }[name]
    return [*args, "--codex-home", str(home)], env


# (the link, where: home or store, command, exit code)
SYMLINK_CASES = [
    *[("auth.json", "home", c, 8) for c in ("seed", "seed --force", "refresh", "restore", "persist",
                                            "refresh --store", "keepalive")],
    ("auth.json", "home", "status", ExitCode.FILESYSTEM),
    *[("codex-ci-state.json", "home", c, 8) for c in ("restore", "persist", "refresh --store")],
    *[("auth.json.lock", "home", c, 8) for c in ("seed --force", "refresh", "restore", "persist",
                                                 "refresh --store")],
    ("auth.json.lock", "home", "status", ExitCode.EXPIRED),  # read without the lock, with a warning
    *[("config.toml", "home", c, 8) for c in ("seed --force", "restore")],
    ("config.toml", "home", "status", ExitCode.FILESYSTEM),
    *[("auth.json", "store", c, 9) for c in ("restore", "persist", "refresh --store", "status --store")],
    *[("auth.json.lock", "store", c, 9) for c in ("restore", "persist", "refresh --store")],
    ("auth.json.lease", "store", "refresh --store", 9),
    ("auth.json.lease.lock", "store", "refresh --store", 9),
]


@pytest.mark.parametrize("target_kind", ["existing", "dangling"])
@pytest.mark.parametrize(("link", "where", "name", "code"), SYMLINK_CASES,
                         ids=[f"{w}-{link}-{c.replace(' --', '-')}" for link, w, c, _ in SYMLINK_CASES])
def test_symlinks_are_refused_and_their_target_untouched(cli, tmp_path: Path, token_server: TokenServer,
                                                         link: str, where: str, name: str, code: int,
                                                         target_kind: str) -> None:
    home, store, url = prepare(tmp_path)
    path = (home if where == "home" else store.parent) / link
    target = tmp_path / "elsewhere" / "target"
    target.parent.mkdir()
    if target_kind == "existing":
        target.write_text("original\n")
        os.utime(target, (1_000_000_000, 1_000_000_000))
    if path.exists():
        path.unlink()
    path.symlink_to(target)
    args, env = command(name, home, url)
    run = cli(*args, env=env)
    assert run.exit_code == code, run.stdout + run.stderr
    assert path.is_symlink() and os.readlink(path) == str(target)
    if target_kind == "existing":
        assert target.read_text() == "original\n" and target.stat().st_mtime == 1_000_000_000
    else:
        assert not target.exists()
    assert token_server.posts == 0
    said = run.stdout + run.stderr
    if code != ExitCode.EXPIRED:
        assert "is a symlink; refusing to follow it" in said
    else:
        assert "read without the lock" in said


def test_a_stale_temp_file_that_is_a_symlink_is_removed_not_followed(cli, tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_login(home, login())
    target = tmp_path / "target"
    target.write_text("original\n")
    (home / ".auth.json.k1lled_x.tmp").symlink_to(target)  # the name mkstemp would have given it
    assert cli("seed", "--force", "--codex-home", str(home), env=seed_env(login())).exit_code == 0
    assert target.read_text() == "original\n"
    assert temp_files(home) == []


def test_a_symlinked_codex_home_is_followed(cli, tmp_path: Path) -> None:
    """Deliberate: CODEX_HOME itself may be a symlink (e.g. ~/.codex onto a persistent disk); what is inside is
    checked. A dangling one cannot be created through."""
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    assert cli("seed", "--codex-home", str(tmp_path / "link"), env=seed_env(login())).exit_code == 0
    assert (real / "auth.json").is_file() and (tmp_path / "link").is_symlink()
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    run = cli("seed", "--codex-home", str(tmp_path / "dangling"), env=seed_env(login()))
    assert run.exit_code == ExitCode.FILESYSTEM and "cannot create CODEX_HOME" in run.stderr
    assert not (tmp_path / "nowhere").exists()


def test_codex_home_that_is_a_file_and_auth_json_that_is_a_directory(cli, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    run = cli("seed", "--codex-home", str(tmp_path / "file"), env=seed_env(login()))
    assert run.exit_code == ExitCode.FILESYSTEM and "is not a directory" in run.stderr
    (tmp_path / "home" / "auth.json").mkdir(parents=True)
    for args in (["seed"], ["refresh"], ["persist", "--to", f"file://{tmp_path / 's.json'}"]):
        run = cli(*args, "--codex-home", str(tmp_path / "home"), env=seed_env(login()))
        assert run.exit_code == ExitCode.FILESYSTEM and "is not a regular file" in run.stderr


# == hardlinks, owners, odd paths ===============================================================================
def test_a_hardlinked_auth_json_is_replaced_not_written_through(cli, tmp_path: Path,
                                                                token_server: TokenServer) -> None:
    """Deliberate: a hardlink is a regular file, so it is read; every write is a rename, so the other name keeps
    the old bytes and is never written through (nothing checks st_nlink)."""
    home = tmp_path / "home"
    path = write_login(home, stale())
    other = tmp_path / "other-name.json"
    os.link(path, other)
    before = other.read_bytes()
    assert cli("seed", "--codex-home", str(home), env=seed_env(login())).exit_code == 0  # kept
    assert os.stat(path).st_nlink == 2
    assert cli("refresh", "--codex-home", str(home)).exit_code == 0
    assert os.stat(path).st_nlink == 1 and os.stat(other).st_nlink == 1
    assert other.read_bytes() == before != path.read_bytes()
    assert mode(path) == 0o600


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as nobody (the fork's C code drops the groups, the gid, then the uid: no Python runs there)."""
    return subprocess.run(list(argv), user=NOBODY, group=NOBODY, extra_groups=[], capture_output=True, text=True,
                          timeout=10)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_codex_home_owned_by_someone_else(cli, token_server: TokenServer) -> None:
    """Deliberate (no ownership check): codex-ci uses a CODEX_HOME owned by another user. Every file it writes is
    the caller's, 0600, so that user cannot read the login; a lock file that user made keeps its mode."""
    top = Path(tempfile.mkdtemp(prefix="codex-ci-owner-"))
    try:
        top.chmod(0o711)
        home = top / "home"
        home.mkdir(mode=0o700)
        (home / "auth.json.lock").touch()
        for path in (home, home / "auth.json.lock"):
            os.chown(path, NOBODY, NOBODY)
        (home / "auth.json.lock").chmod(0o666)
        assert cli("seed", "--codex-home", str(home), env=seed_env(stale())).exit_code == 0
        assert cli("refresh", "--codex-home", str(home)).exit_code == 0
        assert cli("status", "--codex-home", str(home)).exit_code == 0
        assert token_server.posts == 1
        for name in ("auth.json", "config.toml"):
            info = os.stat(home / name)
            assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (os.geteuid(), 0o600)
        lock = os.stat(home / "auth.json.lock")
        assert (lock.st_uid, stat.S_IMODE(lock.st_mode)) == (NOBODY, 0o666)
        assert as_nobody("ls", str(home)).returncode == 0  # the owner can look in...
        denied = as_nobody("cat", str(home / "auth.json"))
        assert denied.returncode != 0 and "Permission denied" in denied.stderr  # ...but not read the login
    finally:
        shutil.rmtree(top)


def test_codex_home_with_spaces_and_unicode(cli, tmp_path: Path, token_server: TokenServer) -> None:
    base = tmp_path / "dir with spaces" / "ünïcødé ✓ 雪"
    home = base / "codex home"
    store = base / "store dir" / "løgin.json"
    url = f"file://{store}"
    assert cli("seed", "--codex-home", str(home), env=seed_env(stale())).exit_code == 0
    assert cli("persist", "--to", url, "--codex-home", str(home)).exit_code == 0
    assert cli("refresh", "--store", url, "--codex-home", str(home)).exit_code == 0
    assert cli("restore", "--from", url, "--codex-home", str(base / "second home")).exit_code == 0
    report = json.loads(cli("status", "--json", "--store", url, "--codex-home", str(home)).stdout)
    assert report["auth_file"] == str(home / "auth.json") and report["store"]["in_sync"] is True
    assert token_server.posts == 1
    assert json.loads((home / "auth.json").read_text()) == json.loads((base / "second home" / "auth.json").read_text())
    assert mode(home) == 0o700 and mode(store) == 0o600


def test_relative_codex_home_is_relative_to_the_working_directory(cli, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli("seed", "--codex-home", "rel/home", env=seed_env(login())).exit_code == 0
    assert cli("seed", env=seed_env(login()) | {"CODEX_HOME": "rel-env"}).exit_code == 0
    assert cli("persist", "--to", "file://rel-store/login.json", "--codex-home", "rel/home").exit_code == 0
    for path in ("rel/home/auth.json", "rel-env/auth.json", "rel-store/login.json"):
        assert (tmp_path / path).is_file() and mode(tmp_path / path) == 0o600
    state = json.loads((tmp_path / "rel/home/codex-ci-state.json").read_text())
    assert state["store"] == f"file://{tmp_path / 'rel-store/login.json'}"  # a file store is made absolute
    assert cli("status", "--codex-home", "rel/home").exit_code == 0


def test_a_literal_tilde_in_codex_home_is_refused_and_the_default_is_home(
        cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``~`` that reached codex-ci unexpanded (YAML ``env:`` passes it as is) would not be expanded by Codex
    either: exit 2, nothing created. With no CODEX_HOME the default is ~/.codex, as Codex's."""
    user_home, cwd = tmp_path / "user", tmp_path / "cwd"
    user_home.mkdir()
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(user_home))
    assert cli("seed", "--codex-home", "~/x", env=seed_env(login())).exit_code == ExitCode.USAGE
    assert cli("seed", env=seed_env(login()) | {"CODEX_HOME": "~/y"}).exit_code == ExitCode.USAGE
    assert cli("seed", env=seed_env(login())).exit_code == 0  # no CODEX_HOME: ~/.codex, as Codex
    assert cli("persist", "--to", "file://~/store.json", "--codex-home", str(user_home / ".codex")).exit_code == 0
    for path in (".codex/auth.json", "store.json"):
        assert (user_home / path).is_file(), path
    assert not (user_home / "x").exists() and not (user_home / "y").exists()
    assert list(cwd.iterdir()) == []  # no directory literally named ~


# == special files ================================================================================================
FIFO_CASES = [
    ("auth.json", "home", "seed", 8),
    ("auth.json", "home", "refresh", 8),
    ("auth.json", "home", "restore", 8),
    ("auth.json", "home", "persist", 8),
    ("auth.json", "home", "status", ExitCode.FILESYSTEM),
    ("auth.json.lock", "home", "seed --force", 8),
    ("auth.json.lock", "home", "status", ExitCode.EXPIRED),  # read without the lock, with a warning
    ("codex-ci-state.json", "home", "persist", 8),
    ("config.toml", "home", "restore", 8),
    ("auth.json", "store", "restore", 9),
    ("auth.json.lock", "store", "persist", 9),
]


@pytest.mark.parametrize(("name", "where", "cmd", "code"), FIFO_CASES,
                         ids=[f"{w}-{n}-{c.replace(' --', '-')}" for n, w, c, _ in FIFO_CASES])
def test_a_fifo_is_refused_without_hanging(tmp_path: Path, name: str, where: str, cmd: str, code: int) -> None:
    """In a real process with a timeout: opening a FIFO with no writer would block forever."""
    home, store, url = prepare(tmp_path)
    path = (home if where == "home" else store.parent) / name
    if path.exists():
        path.unlink()
    os.mkfifo(path, 0o600)
    args, env = command(cmd, home, url)
    env["CODEX_REFRESH_TOKEN_URL_OVERRIDE"] = "http://127.0.0.1:9/oauth/token"
    run = run_process(*args, env=env, timeout=20)
    assert run.exit_code == code, run.stdout + run.stderr
    assert stat.S_ISFIFO(os.lstat(path).st_mode)
    if code in (8, 9):
        assert "is not a regular file" in run.stdout + run.stderr  # status says it in its report


def special_file(path: Path, kind: str) -> Any:
    if kind == "device":
        try:
            os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # what /dev/null is
        except PermissionError:
            pytest.skip("this machine does not allow mknod")
        return None
    if kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        return sock
    path.mkdir()
    return None


@pytest.mark.parametrize("kind", ["device", "socket", "directory"])
def test_devices_sockets_and_directories_are_refused(cli, tmp_path: Path, kind: str) -> None:
    home, store, url = prepare(tmp_path)
    (home / "auth.json").unlink()
    keep = special_file(home / "auth.json", kind)
    try:
        for name, code in (("seed", 8), ("seed --force", 8), ("refresh", 8), ("restore", 8), ("persist", 8),
                           ("status", ExitCode.FILESYSTEM)):
            args, env = command(name, home, url)
            run = cli(*args, env=env)
            assert run.exit_code == code, (name, run.stdout + run.stderr)
            assert "is not a regular file" in run.stdout + run.stderr
    finally:
        if keep is not None:
            keep.close()


# == atomic replacement and fsync ================================================================================
def test_a_read_only_auth_json_is_replaced_atomically(cli, tmp_path: Path, token_server: TokenServer) -> None:
    home = tmp_path / "home"
    path = write_login(home, stale())
    path.chmod(0o400)
    before = os.stat(path).st_ino
    assert cli("refresh", "--codex-home", str(home)).exit_code == 0
    assert os.stat(path).st_ino != before and mode(path) == 0o600
    assert json.loads(path.read_text())["tokens"]["refresh_token"] == token_server.current_refresh_token
    path.chmod(0o400)
    before = os.stat(path).st_ino
    new = login(refresh_token="CANARY-rt-forced")
    assert cli("seed", "--force", "--codex-home", str(home), env=seed_env(new)).exit_code == 0
    assert os.stat(path).st_ino != before and mode(path) == 0o600
    assert json.loads(path.read_text())["tokens"]["refresh_token"] == "CANARY-rt-forced"


def is_directory(fd: int) -> bool:
    return stat.S_ISDIR(os.fstat(fd).st_mode)


@pytest.mark.parametrize("failure", ["fsync", "open"])
def test_the_directory_fsync_is_best_effort(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            failure: str) -> None:
    real_fsync, real_open = os.fsync, os.open
    failed: list[str] = []

    def fsync(fd: int) -> None:
        if is_directory(fd):
            failed.append("fsync")
            raise OSError(errno.EINVAL, "Invalid argument")
        real_fsync(fd)

    def open_(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        if flags & os.O_DIRECTORY:
            failed.append("open")
            raise OSError(errno.EACCES, "Permission denied")
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, failure, fsync if failure == "fsync" else open_)
    home = tmp_path / "home"
    data = login(refresh_token="CANARY-rt-fsync")
    assert cli("seed", "--codex-home", str(home), env=seed_env(data)).exit_code == 0
    assert failed and set(failed) == {failure}
    assert json.loads((home / "auth.json").read_text())["tokens"] == data["tokens"]
    assert mode(home / "auth.json") == 0o600 and temp_files(home) == []


@pytest.mark.parametrize("failure", ["fsync", "replace", "write"])
def test_a_failed_file_write_leaves_the_old_file_and_no_temp_file(cli, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  failure: str) -> None:
    home = tmp_path / "home"
    path = write_login(home, login(refresh_token="CANARY-rt-old"))
    before = path.read_bytes()

    def broken(*args: Any, **kw: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    real_fsync = os.fsync
    if failure == "fsync":
        monkeypatch.setattr(os, "fsync", lambda fd: broken() if not is_directory(fd) else real_fsync(fd))
    else:
        monkeypatch.setattr(os, failure, broken)
    run = cli("seed", "--force", "--codex-home", str(home), env=seed_env(login(refresh_token="CANARY-rt-new")))
    assert run.exit_code == ExitCode.FILESYSTEM
    assert "No space left on device" in run.stderr
    assert path.read_bytes() == before and temp_files(home) == []


def test_write_atomic_directly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The core function: a directory fsync failure is swallowed, a file fsync failure is a FileSystemError."""
    target = tmp_path / "file.json"
    real_fsync = os.fsync

    def fsync_failing(directories_only: bool) -> Any:
        def fsync(fd: int) -> None:
            if directories_only and not is_directory(fd):
                real_fsync(fd)
                return
            raise OSError(errno.EIO, "Input/output error")

        return fsync

    monkeypatch.setattr(os, "fsync", fsync_failing(directories_only=True))
    files.write_atomic(target, b"{}")
    assert target.read_bytes() == b"{}" and mode(target) == 0o600
    monkeypatch.setattr(os, "fsync", fsync_failing(directories_only=False))
    with pytest.raises(FileSystemError) as caught:
        files.write_atomic(target, b'{"new": 1}')
    assert caught.value.exit_code == ExitCode.FILESYSTEM and "Input/output error" in str(caught.value)
    assert target.read_bytes() == b"{}" and temp_files(tmp_path) == []
