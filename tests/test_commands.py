"""codex_ci.commands: what refresh, keepalive, restore and persist do once their options are parsed — open the stores,
refuse a bad combination before any network call, make the one core call, report the outcome."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import login, write_login

from codex_ci import commands
from codex_ci.authfile import ACCESS_ONLY_TOKEN
from codex_ci.errors import ConfigError, ExitCode, SupersededError
from codex_ci.settings import RefreshSettings
from codex_ci.stores import url_forms
from codex_ci.stores.file import FileStore
from testing.tokenserver import TokenServer


def settings(lease_ttl: str = "2m") -> RefreshSettings:
    return RefreshSettings.for_refresh(min_ttl="10m", max_age="8d", force=False, timeout=30, retries=0,
                                       lock_timeout=5, lease_ttl=lease_ttl, lease_wait=30)


def outputs(path: Path) -> dict[str, str]:
    """``$GITHUB_OUTPUT``'s heredoc entries: name -> value."""
    found = {}
    lines = path.read_text().split("\n")
    assert lines.pop() == ""
    while lines:
        name, _, delimiter = lines.pop(0).partition("<<")
        end = lines.index(delimiter)
        found[name] = "\n".join(lines[:end])
        del lines[:end + 1]
    return found


@pytest.fixture
def github_output(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    path = tmp_path / "github-output"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_OUTPUT", str(path))
    return path


def token_of(value: str | bytes) -> str:
    found: str = json.loads(value)["tokens"]["refresh_token"]
    return found


# -- require_store, open_store -------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [None, ""])
def test_require_store_without_a_store(value: str | None) -> None:
    with pytest.raises(ConfigError) as caught:
        commands.require_store(value, "--from")
    assert caught.value.message == "--from (or CODEX_CI_STORE_URL) is required"
    assert caught.value.exit_code == ExitCode.USAGE


def test_require_store_returns_the_store() -> None:
    assert commands.require_store("file:///s/login.json", "--to") == "file:///s/login.json"


def test_open_store_opens_the_url(tmp_path: Path) -> None:
    store = commands.open_store(f"file://{tmp_path}/s/login.json")
    assert isinstance(store, FileStore)
    assert store.path == tmp_path / "s" / "login.json"
    assert not (tmp_path / "s").exists()  # opening reads and creates nothing


def test_open_store_refuses_an_unknown_scheme() -> None:
    with pytest.raises(ConfigError) as caught:
        commands.open_store("nope://x")
    assert caught.value.message == f"a store must be {url_forms()}"
    assert caught.value.exit_code == ExitCode.USAGE


# -- refresh -------------------------------------------------------------------------------------------------------

def test_a_handout_without_a_store_is_refused_before_any_network_call(home: Path, tmp_path: Path,
                                                                     token_server: TokenServer) -> None:
    path = write_login(home, login(expires_in=60))  # due: a refresh would POST
    before = path.read_bytes()
    with pytest.raises(ConfigError) as caught:
        commands.refresh(str(home), None, settings(), title="codex-ci refresh",
                         handout=f"file://{tmp_path}/handout.json")
    assert caught.value.message == "--handout needs --store: the full login must be saved before its access-only copy"
    assert caught.value.exit_code == ExitCode.USAGE
    assert token_server.posts == 0
    assert path.read_bytes() == before
    assert not (tmp_path / "handout.json").exists()


def test_a_lease_too_short_for_one_request_is_refused_before_the_store_is_read(home: Path, tmp_path: Path,
                                                                              token_server: TokenServer) -> None:
    store = FileStore(tmp_path / "s" / "login.json")
    store.write(json.dumps(login(expires_in=60)), None)
    with pytest.raises(ConfigError) as caught:
        commands.refresh(str(home), store.url, settings(lease_ttl="10s"), title="codex-ci refresh")
    assert caught.value.message == ("--lease-ttl 10s is too short for one request (--timeout 30s plus connecting); "
                                    "raise it or lower --timeout")
    assert token_server.posts == 0
    assert not home.exists()


def test_a_local_refresh_reports_it(home: Path, token_server: TokenServer, github_output: Path,
                                    caplog: pytest.LogCaptureFixture) -> None:
    write_login(home, login(expires_in=60))
    with caplog.at_level(logging.INFO, logger="codex_ci"):
        commands.refresh(str(home), None, settings(), title="codex-ci refresh")
    assert token_server.posts == 1
    got = outputs(github_output)
    assert got["refreshed"] == "true"
    assert set(got) == {"auth-mode", "expires-at", "last-refresh", "refreshed"}
    assert caplog.records[-1].getMessage() == (
        f"refreshed: the access token expires within the minimum TTL (access token valid until {got['expires-at']})")


def test_a_fresh_local_login_reports_no_refresh(home: Path, token_server: TokenServer, github_output: Path) -> None:
    write_login(home, login(expires_in=7200))
    commands.refresh(str(home), None, settings(), title="codex-ci refresh")
    assert token_server.posts == 0
    assert outputs(github_output)["refreshed"] == "false"


def test_a_store_refresh_writes_the_handout_after_the_login(home: Path, tmp_path: Path, token_server: TokenServer,
                                                            github_output: Path) -> None:
    store, handout = FileStore(tmp_path / "s" / "login.json"), FileStore(tmp_path / "s" / "handout.json")
    store.write(json.dumps(login(expires_in=60)), None)
    commands.refresh(str(home), store.url, settings(), title="codex-ci keepalive", handout=handout.url,
                     rotator=True)
    assert token_server.posts == 1
    got = outputs(github_output)
    assert (got["refreshed"], got["store-version"], got["handout"]) == ("true", "2", "created")
    saved, copy = store.read(), handout.read()
    assert saved is not None and copy is not None
    assert token_of(saved.value) == token_server.current_refresh_token
    assert token_of(copy.value) == ACCESS_ONLY_TOKEN


# -- restore and persist -------------------------------------------------------------------------------------------

def test_sync_without_a_store_is_refused(home: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        commands.sync("restore", None, "--from", codex_home=str(home), lock_timeout=5, force=False)
    assert caught.value.message == "--from (or CODEX_CI_STORE_URL) is required"
    assert not home.exists()


def test_restore_reports_it(home: Path, tmp_path: Path, github_output: Path) -> None:
    store = FileStore(tmp_path / "s" / "login.json")
    store.write(json.dumps(login()), None)
    commands.sync("restore", store.url, "--from", codex_home=str(home), lock_timeout=5, force=False)
    got = outputs(github_output)
    assert (got["restored"], got["store-version"], got["auth-mode"]) == ("restored", "1", "chatgpt")
    assert (home / "auth.json").exists()


def test_a_superseded_persist_is_reported_then_refused(home: Path, tmp_path: Path, github_output: Path) -> None:
    newer: dict[str, Any] = login(refresh_token="CANARY-rt-newer", issued_at=int(time.time()) - 3600)
    store = FileStore(tmp_path / "s" / "login.json")
    store.write(json.dumps(newer), None)
    write_login(home, login())  # issued earlier, and this home has no base in the store
    with pytest.raises(SupersededError) as caught:
        commands.sync("persist", store.url, "--to", codex_home=str(home), lock_timeout=5, force=False)
    assert caught.value.exit_code == ExitCode.CONFLICT
    assert outputs(github_output)["persisted"] == "superseded"
    saved = store.read()
    assert saved is not None and (saved.version, token_of(saved.value)) == ("1", "CANARY-rt-newer")
