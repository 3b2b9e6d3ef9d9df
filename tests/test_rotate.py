"""codex_ci.rotate.refresh_home: one CODEX_HOME refreshed under Codex's locks against the strict loopback token
endpoint — one POST when due, none otherwise, never twice for one need, and the state file it leaves."""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import login, write_login

from codex_ci.authfile import ACCESS_ONLY_TOKEN, AuthFile
from codex_ci.claims import format_time
from codex_ci.errors import (
    AccessOnlyError,
    AmbiguousRefreshError,
    ExitCode,
    FileSystemError,
    MissingAuthError,
    TransientError,
)
from codex_ci.home import Home
from codex_ci.locks import AuthLock
from codex_ci.policy import Policy
from codex_ci.rotate import refresh_home
from codex_ci.secret import Secret
from codex_ci.state import STATE_NAME, State, digest
from testing.tokenserver import TokenServer, rfc3339

POLICY = Policy(min_ttl=timedelta(minutes=10), max_age=timedelta(days=8))
FORCED = Policy(min_ttl=timedelta(minutes=10), max_age=timedelta(days=8), force=True)
LOCK = 5.0
TOO_SOON = re.compile(r"it was refreshed \d+s ago, and a login is never rotated twice within a minute")


def token(path: Path) -> str:
    value: str = json.loads(path.read_text())["tokens"]["refresh_token"]
    return value


def backdate(home: Path) -> None:
    data = json.loads((home / "auth.json").read_text())
    data["last_refresh"] = rfc3339(time.time() - 3600)
    write_login(home, data)


# -- when it is due ----------------------------------------------------------------------------------------------

def test_a_stale_login_is_rotated_with_one_post(home: Path, token_server: TokenServer) -> None:
    path = write_login(home, login(expires_in=60))
    result = refresh_home(Home(home), POLICY, lock_timeout=LOCK)
    assert (result.action, result.reason, result.version) == (
        "refreshed", "the access token expires within the minimum TTL", None)
    assert token_server.posts == 1
    assert token_server.requests[0]["body"]["refresh_token"] == "CANARY-rt-0"
    assert token(path) == token_server.current_refresh_token != "CANARY-rt-0"
    assert result.auth.refresh_token == Secret(token_server.current_refresh_token)
    assert result.auth.to_bytes() == path.read_bytes()


def test_the_state_file_after_a_rotation(home: Path, token_server: TokenServer) -> None:
    path = write_login(home, login(expires_in=60))
    based = State(store="file:///s", version="3", local_digest=digest(path.read_bytes()), base_stamp="x,y",
                  not_before="2020-01-01T00:00:00.000000Z")
    Home(home).save_state(based)
    refresh_home(Home(home), POLICY, lock_timeout=LOCK)
    # its own rotation is recorded; the base stays (persist writes the rotation onto it); no earliest_refresh_at
    assert Home(home).state() == State(store="file:///s", version="3", local_digest=based.local_digest,
                                       base_stamp="x,y", not_before="", rotated=digest(path.read_bytes()))


@pytest.mark.parametrize("form", ["rfc3339", "epoch"])
def test_earliest_refresh_at_is_recorded_and_honoured_even_when_forced(home: Path, token_server: TokenServer,
                                                                       form: str) -> None:
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    token_server.extra_answer = {"earliest_refresh_at": rfc3339(later.timestamp()) if form == "rfc3339"
                                 else int(later.timestamp())}
    write_login(home, login(expires_in=60))
    refresh_home(Home(home), POLICY, lock_timeout=LOCK)
    assert Home(home).state().not_before == format_time(later)
    backdate(home)  # only earliest_refresh_at holds the next one off
    result = refresh_home(Home(home), FORCED, lock_timeout=LOCK)
    assert (result.action, result.reason) == (
        "not-refreshed", f"the token endpoint asked for no refresh before {format_time(later)}")
    assert token_server.posts == 1


def test_on_login_sees_the_login_read_and_the_one_made(home: Path, token_server: TokenServer) -> None:
    write_login(home, login(expires_in=60))
    seen: list[str] = []

    def hook(auth: AuthFile) -> None:
        assert auth.refresh_token is not None
        seen.append(auth.refresh_token.reveal())

    refresh_home(Home(home), POLICY, lock_timeout=LOCK, on_login=hook)
    assert seen == ["CANARY-rt-0", token_server.current_refresh_token]


def test_a_login_ahead_of_this_clock_is_refreshed_with_a_warning(home: Path, token_server: TokenServer,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    write_login(home, login(expires_in=60, last_refresh=rfc3339(time.time() + 86400)))
    with caplog.at_level(logging.WARNING, logger="codex_ci"):
        result = refresh_home(Home(home), POLICY, lock_timeout=LOCK)
    assert result.action == "refreshed"
    assert [r.getMessage() for r in caplog.records] == [
        "auth.json's last_refresh is more than 5 minutes ahead of this machine's clock; ignoring it"]
    assert token_server.posts == 1


# -- when it is not ------------------------------------------------------------------------------------------------

def test_a_fresh_login_sends_nothing_and_writes_nothing(home: Path, token_server: TokenServer) -> None:
    path = write_login(home, login(expires_in=7200))
    before = path.read_bytes()
    result = refresh_home(Home(home), POLICY, lock_timeout=LOCK)
    assert (result.action, result.reason) == ("not-refreshed", "the access token is fresh enough")
    assert token_server.posts == 0
    assert path.read_bytes() == before
    assert not (home / STATE_NAME).exists()


def test_an_apikey_login_has_nothing_to_refresh(home: Path, token_server: TokenServer) -> None:
    write_login(home, {"OPENAI_API_KEY": "sk-CANARY-key-0123456789"})
    result = refresh_home(Home(home), FORCED, lock_timeout=LOCK)
    assert (result.action, result.reason) == ("not-refreshed", "apikey login: nothing to refresh")
    assert token_server.posts == 0


def test_an_access_only_copy_is_never_posted(home: Path, token_server: TokenServer) -> None:
    write_login(home, login(expires_in=7200, refresh_token=ACCESS_ONLY_TOKEN))
    result = refresh_home(Home(home), POLICY, lock_timeout=LOCK)
    assert result.reason == "an access-only copy, fresh enough (its login is rotated elsewhere)"
    write_login(home, login(expires_in=60, refresh_token=ACCESS_ONLY_TOKEN))
    with pytest.raises(AccessOnlyError) as caught:
        refresh_home(Home(home), POLICY, lock_timeout=LOCK)
    assert caught.value.exit_code == ExitCode.ACCESS_ONLY
    assert token_server.posts == 0


def test_a_login_refreshed_by_another_process_while_this_one_waited_is_not_rotated_again(
        home: Path, token_server: TokenServer) -> None:
    """``expected`` is the refresh token the caller set out to refresh: auth.json holding another one means someone
    refreshed it meanwhile, whatever the new token's lifetime (here it is just as stale)."""
    path = write_login(home, login(expires_in=60, refresh_token="CANARY-rt-other"))
    result = refresh_home(Home(home), POLICY, lock_timeout=LOCK, expected=Secret("CANARY-rt-0"))
    assert (result.action, result.reason) == ("not-refreshed", "another process refreshed it while this one waited")
    assert token_server.posts == 0
    assert token(path) == "CANARY-rt-other"


def test_the_expected_token_still_in_auth_json_is_rotated(home: Path, token_server: TokenServer) -> None:
    write_login(home, login(expires_in=60))
    result = refresh_home(Home(home), POLICY, lock_timeout=LOCK, expected=Secret("CANARY-rt-0"))
    assert result.action == "refreshed"
    assert token_server.posts == 1


class RefreshedWhileWaiting(Home):
    """A home whose auth.json another process rewrites, stamped now, just before this one gets the lock (the same
    refresh token: only last_refresh tells that it happened)."""

    def lock(self, timeout: float) -> AuthLock:
        write_login(self.path, login(expires_in=60, last_refresh=rfc3339(time.time())))
        return super().lock(timeout)


def test_a_login_stamped_after_this_run_started_is_not_rotated_again(home: Path, token_server: TokenServer) -> None:
    write_login(home, login(expires_in=60))
    result = refresh_home(RefreshedWhileWaiting(home), FORCED, lock_timeout=LOCK)
    assert (result.action, result.reason) == ("not-refreshed", "another process refreshed it while this one waited")
    assert token_server.posts == 0


def test_too_soon_after_a_rotation_even_when_forced(home: Path, token_server: TokenServer) -> None:
    write_login(home, login(expires_in=60))
    assert refresh_home(Home(home), POLICY, lock_timeout=LOCK).action == "refreshed"
    result = refresh_home(Home(home), FORCED, lock_timeout=LOCK)
    assert result.action == "not-refreshed"
    assert TOO_SOON.fullmatch(result.reason), result.reason
    assert token_server.posts == 1


def test_too_soon_after_another_machines_rotation_even_when_forced(home: Path, token_server: TokenServer) -> None:
    write_login(home, login(expires_in=7200, last_refresh=rfc3339(time.time() - 10)))
    result = refresh_home(Home(home), FORCED, lock_timeout=LOCK)
    assert result.action == "not-refreshed"
    assert TOO_SOON.fullmatch(result.reason), result.reason
    assert token_server.posts == 0


# -- failures ------------------------------------------------------------------------------------------------------

def test_unusable_tokens_from_the_endpoint_are_an_ambiguous_refresh(home: Path, token_server: TokenServer) -> None:
    token_server.extra_answer = {"access_token": "not-a-jwt"}
    path = write_login(home, login(expires_in=60))
    before = path.read_bytes()
    with pytest.raises(AmbiguousRefreshError) as caught:
        refresh_home(Home(home), POLICY, lock_timeout=LOCK)
    assert caught.value.message == ("the token endpoint answered with unusable tokens: tokens.access_token is not a "
                                    "JWT (expected three dot-separated parts)")
    assert caught.value.exit_code == ExitCode.TRANSIENT == 6
    assert token_server.successes == 1  # the endpoint rotated: that is why it is ambiguous
    assert path.read_bytes() == before
    assert not (home / STATE_NAME).exists()


def test_no_post_past_the_deadline(home: Path, token_server: TokenServer) -> None:
    path = write_login(home, login(expires_in=60))
    before = path.read_bytes()
    with pytest.raises(TransientError) as caught:
        refresh_home(Home(home), POLICY, lock_timeout=LOCK, deadline=time.monotonic())
    assert caught.value.message == "not enough time left on the refresh lease for another request; nothing was sent"
    assert token_server.posts == 0
    assert path.read_bytes() == before


def test_a_missing_home_is_not_created(tmp_path: Path, token_server: TokenServer) -> None:
    with pytest.raises(FileSystemError) as caught:
        refresh_home(Home(tmp_path / "absent"), POLICY, lock_timeout=LOCK)
    assert caught.value.message == f"CODEX_HOME {tmp_path / 'absent'} does not exist"
    assert not (tmp_path / "absent").exists()


def test_a_missing_auth_json(home: Path, token_server: TokenServer) -> None:
    home.mkdir()
    with pytest.raises(MissingAuthError) as caught:
        refresh_home(Home(home), POLICY, lock_timeout=LOCK)
    assert caught.value.message == f"{home / 'auth.json'} does not exist"
    assert token_server.posts == 0
