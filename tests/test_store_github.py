"""The github store end to end: real ``python -m codex_ci`` processes against the loopback fake GitHub API and the
strict token server. The full login and its handout live in Actions secrets; reads come from the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import login, write_login
from test_promise import environ, run, token

from codex_ci.authfile import ACCESS_ONLY_TOKEN
from codex_ci.errors import ConfigError, ExitCode
from codex_ci.stores import open_store
from testing.fake_github import BODY_MARKER, WRITE_TOKEN, FakeGitHub
from testing.targets.github import GITHUB_VARIABLES, github_url
from testing.tokenserver import TokenServer

LOCK = ("--lock-timeout", "60")
FULL, ACCESS = "CODEX_AUTH_JSON", "CODEX_ACCESS_JSON"
REPO = "repos/octo/app/actions"
STORE, HANDOUT = f"github://octo/app/{FULL}", f"github://octo/app/{ACCESS}"


@pytest.fixture
def server() -> Any:
    with TokenServer(initial_refresh_token="CANARY-rt-0", access_ttl=10 * 86400, grace=0.0) as srv:
        yield srv


def gh_env(github: FakeGitHub, tokens: TokenServer, **extra: str) -> dict[str, str]:
    """A runner's environment: the fake API, the write token, and whatever secrets the step passes in."""
    env = {k: v for k, v in environ(None, tokens).items() if k not in GITHUB_VARIABLES}
    return env | {"GITHUB_API_URL": github.url, "CODEX_CI_GITHUB_TOKEN": WRITE_TOKEN} | extra


def text(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2)


def stored(github: FakeGitHub, name: str, scope: str = REPO) -> dict[str, Any]:
    value = github.value(scope, name)
    assert value is not None, f"{scope}/{name} was never written"
    data: dict[str, Any] = json.loads(value)
    return data


def puts(github: FakeGitHub) -> list[str]:
    return [path for method, path in github.requests if method == "PUT"]


# -- persist and restore -----------------------------------------------------------------------------------------------

def test_persist_creates_the_secret_then_writes_nothing_while_the_login_is_unchanged(
        home: Path, github_server: FakeGitHub, server: TokenServer) -> None:
    write_login(home, login(refresh_token="CANARY-rt-seed"))
    env = gh_env(github_server, server)
    code, err = run("persist", "--to", STORE, "--codex-home", str(home), env=env)
    assert code == 0, err
    assert github_server.value(REPO, FULL) == (home / "auth.json").read_bytes()
    assert github_server.statuses[-1] == 201 and len(puts(github_server)) == 1
    code, err = run("persist", "--to", STORE, "--codex-home", str(home), env=env)
    assert code == 0 and "has not changed" in err, err
    assert len(puts(github_server)) == 1  # nothing sent
    write_login(home, login(refresh_token="CANARY-rt-changed"))
    code, err = run("persist", "--to", STORE, "--codex-home", str(home), env=env)
    assert code == 0, err
    assert stored(github_server, FULL)["tokens"]["refresh_token"] == "CANARY-rt-changed"
    assert github_server.statuses[-1] == 204 and len(puts(github_server)) == 2


def test_restore_reads_the_secret_from_the_environment_and_never_calls_the_api(
        home: Path, github_server: FakeGitHub, server: TokenServer) -> None:
    data = login(refresh_token="CANARY-rt-passed-in")
    env = gh_env(github_server, server, **{FULL: text(data)})
    del env["CODEX_CI_GITHUB_TOKEN"]  # a job that only restores needs no token
    code, err = run("restore", "--from", STORE, "--codex-home", str(home), env=env)
    assert code == 0, err
    assert token(home / "auth.json") == "CANARY-rt-passed-in"
    assert github_server.requests == []
    code, err = run("persist", "--to", STORE, "--codex-home", str(home), env=env)
    assert code == 0 and "has not changed" in err, err  # the state file's digest: nothing to write
    assert github_server.requests == []


@pytest.mark.parametrize("value", [None, "", "   "])
def test_restore_without_the_variable_shows_the_yaml_line(home: Path, github_server: FakeGitHub, server: TokenServer,
                                                         value: str | None) -> None:
    env = gh_env(github_server, server, **({} if value is None else {FULL: value}))
    code, err = run("restore", "--from", STORE, "--codex-home", str(home), env=env)
    assert code == ExitCode.MISSING, err
    assert f"`{FULL}: ${{{{ secrets.{FULL} }}}}`" in err
    assert not (home / "auth.json").exists()


def test_an_environment_secret_restore_hint_names_the_environment(home: Path, github_server: FakeGitHub,
                                                                 server: TokenServer) -> None:
    url, _ = github_url("environment", FULL)
    code, err = run("restore", "--from", url, "--codex-home", str(home), env=gh_env(github_server, server))
    assert code == ExitCode.MISSING and "environment:" in err, err


# -- the rotator: keepalive --store github://… --handout github://… --------------------------------------------------

def test_keepalive_rotates_and_writes_the_full_login_before_the_handout(
        tmp_path: Path, github_server: FakeGitHub, server: TokenServer) -> None:
    env = gh_env(github_server, server, **{FULL: text(login(expires_in=-60))})
    code, err = run("keepalive", "--store", STORE, "--handout", HANDOUT, "--codex-home", str(tmp_path / "rotator"),
                    *LOCK, env=env)
    assert code == 0, err
    assert server.successes == 1 and server.reused == 0
    assert puts(github_server) == [f"/{REPO}/secrets/{FULL}", f"/{REPO}/secrets/{ACCESS}"]  # the full login first
    full, copy = stored(github_server, FULL), stored(github_server, ACCESS)
    assert full["tokens"]["refresh_token"] == server.current_refresh_token
    assert copy["tokens"]["refresh_token"] == ACCESS_ONLY_TOKEN
    assert copy["tokens"]["access_token"] == full["tokens"]["access_token"]
    assert "CANARY-rt" not in json.dumps(copy)
    # the write check came first: both public keys and both secrets, before any PUT
    first_put = next(i for i, (method, _) in enumerate(github_server.requests) if method == "PUT")
    checked = set(github_server.requests[:first_put])
    for name in (FULL, ACCESS):
        assert ("GET", f"/{REPO}/secrets/{name}") in checked
    assert ("GET", f"/{REPO}/secrets/public-key") in checked
    headers = github_server.headers[0]
    assert headers["accept"] == "application/vnd.github+json" and headers["x-github-api-version"] == "2022-11-28"
    # a job restores the handout from its variable, and never sees the refresh token
    job = tmp_path / "job"
    code, err = run("restore", "--from", HANDOUT, "--codex-home", str(job),
                    env=gh_env(github_server, server, **{ACCESS: github_server.value(REPO, ACCESS).decode()}))
    assert code == 0 and "access-only copy" in err, err
    assert token(job / "auth.json") == ACCESS_ONLY_TOKEN
    # the next run starts from the rotated secret, seconds later: nothing is rotated again
    env[FULL] = github_server.value(REPO, FULL).decode()
    code, err = run("keepalive", "--store", STORE, "--handout", HANDOUT, "--codex-home", str(tmp_path / "next"),
                    *LOCK, env=env)
    assert code == 0, err
    assert server.successes == 1 and server.reused == 0
    assert stored(github_server, FULL)["tokens"]["refresh_token"] == server.current_refresh_token


@pytest.mark.parametrize("handout_only", [False, True])
def test_keepalive_with_a_token_that_cannot_write_rotates_nothing(
        tmp_path: Path, github_server: FakeGitHub, server: TokenServer, handout_only: bool) -> None:
    env = gh_env(github_server, server, **{FULL: text(login(expires_in=-60))})
    handout = HANDOUT
    if handout_only:  # the login's repository is fine, the handout's is another one the token cannot see
        handout = f"github://octo/other/{ACCESS}"
    else:
        env["CODEX_CI_GITHUB_TOKEN"] = "ghs_CANARY_not_a_valid_token_42"
    code, err = run("keepalive", "--store", STORE, "--handout", handout, "--codex-home", str(tmp_path / "r"),
                    *LOCK, env=env)
    assert code == ExitCode.STORE, err
    assert ("HTTP 404" if handout_only else "HTTP 401") in err and "Secrets: write" in err
    assert BODY_MARKER not in err
    assert server.posts == 0 and puts(github_server) == []


def test_a_bad_token_on_persist_is_a_store_error_that_shows_no_token(
        home: Path, github_server: FakeGitHub, server: TokenServer) -> None:
    write_login(home, login())
    env = gh_env(github_server, server, CODEX_CI_GITHUB_TOKEN="ghs_CANARY_not_a_valid_token_42")
    proc = subprocess.run([sys.executable, "-m", "codex_ci", "persist", "--to", STORE, "--codex-home", str(home)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == ExitCode.STORE, proc.stderr
    assert "ghs_" not in proc.stdout + proc.stderr and "CANARY" not in proc.stdout + proc.stderr
    assert BODY_MARKER not in proc.stderr and "HTTP 401" in proc.stderr


# -- configuration errors (exit 2), before anything is read or sent ----------------------------------------------------

@pytest.mark.parametrize("api", ["http://api.example.com", "ftp://127.0.0.1/", "https://user:pw@api.example.com"])
def test_an_unsafe_api_url_is_a_usage_error(home: Path, github_server: FakeGitHub, server: TokenServer,
                                           api: str) -> None:
    write_login(home, login())
    code, err = run("persist", "--to", STORE, "--codex-home", str(home),
                    env=gh_env(github_server, server, GITHUB_API_URL=api))
    assert code == ExitCode.USAGE and "GITHUB_API_URL" in err, err
    assert "pw" not in err


def test_only_github_token_is_a_clear_usage_error(home: Path, github_server: FakeGitHub, server: TokenServer) -> None:
    write_login(home, login())
    env = gh_env(github_server, server, GITHUB_TOKEN="ghs_CANARY_workflow_token_77")
    del env["CODEX_CI_GITHUB_TOKEN"]
    code, err = run("persist", "--to", STORE, "--codex-home", str(home), env=env)
    assert code == ExitCode.USAGE, err
    assert "GITHUB_TOKEN cannot write Actions secrets" in err
    assert "CODEX_CI_GITHUB_TOKEN" in err and "GH_TOKEN" in err and "create-github-app-token" in err
    assert github_server.requests == []


def test_gh_token_is_used_when_codex_ci_github_token_is_not_set(home: Path, github_server: FakeGitHub,
                                                                server: TokenServer) -> None:
    write_login(home, login())
    env = gh_env(github_server, server, GH_TOKEN=WRITE_TOKEN, GITHUB_TOKEN="ghs_CANARY_workflow_token_77")
    del env["CODEX_CI_GITHUB_TOKEN"]
    code, err = run("persist", "--to", STORE, "--codex-home", str(home), env=env)
    assert code == 0, err
    assert github_server.value(REPO, FULL) == (home / "auth.json").read_bytes()


def test_refresh_store_on_github_is_refused(home: Path, github_server: FakeGitHub, server: TokenServer) -> None:
    env = gh_env(github_server, server, **{FULL: text(login(expires_in=-60))})
    for extra in ([], ["--handout", HANDOUT]):
        code, err = run("refresh", "--store", STORE, *extra, "--codex-home", str(home), *LOCK, env=env)
        assert code == ExitCode.USAGE, err
        assert "compare-and-set" in err and "keepalive" in err
    assert github_server.requests == [] and server.posts == 0 and not home.exists()


@pytest.mark.parametrize("url", ["github://octo/NAME", "github://octo/app/1BAD", "github://octo/app/GITHUB_X",
                                 "github://octo/app/environments/NAME", "github://orgs/NAME", "github://a/b/c/d"])
def test_bad_github_urls_are_usage_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        open_store(url, {})


# -- the store itself --------------------------------------------------------------------------------------------------

def test_an_organisation_secret_keeps_its_visibility(github_server: FakeGitHub) -> None:
    from testing.fake_github import Secret

    env = {"GITHUB_API_URL": github_server.url, "CODEX_CI_GITHUB_TOKEN": WRITE_TOKEN}
    scope = "orgs/octo/actions"
    open_store("github://orgs/octo/NEW_ONE", env).write("new", None)
    assert github_server.secrets[(scope, "NEW_ONE")].visibility == "private"  # a new one: private
    github_server.secrets[(scope, "SHARED")] = Secret(b"old", "selected", [11, 22])
    github_server.secrets[(scope, "EVERYONE")] = Secret(b"old", "all")
    open_store("github://orgs/octo/SHARED", env).write("v2", None)
    open_store("github://orgs/octo/EVERYONE", env).write("v2", None)
    shared = github_server.secrets[(scope, "SHARED")]
    assert (shared.plaintext, shared.visibility, shared.selected) == (b"v2", "selected", [11, 22])
    assert github_server.secrets[(scope, "EVERYONE")].visibility == "all"


def test_the_token_never_shows(github_server: FakeGitHub) -> None:
    store = open_store(STORE, {"GITHUB_API_URL": github_server.url, "CODEX_CI_GITHUB_TOKEN": WRITE_TOKEN})
    passed = open_store(STORE, {FULL: "CANARY-the-login"})
    for shown in (store, passed):
        assert "CANARY" not in repr(shown) + str(vars(shown)) + shown.url


def test_missing_pynacl_names_the_extra(github_server: FakeGitHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nacl.public", None)
    store = open_store(STORE, {"GITHUB_API_URL": github_server.url, "CODEX_CI_GITHUB_TOKEN": WRITE_TOKEN})
    with pytest.raises(ConfigError) as caught:
        store.write("{}", None)
    assert caught.value.exit_code == ExitCode.USAGE and caught.value.hint == "pip install 'codex-ci[github]'"
    assert puts(github_server) == []


def test_reading_imports_neither_pynacl_nor_httpx() -> None:
    code = ("import sys; from codex_ci.stores import open_store; "
            f"s = open_store({STORE!r}, {{{FULL!r}: '{{}}'}}); assert s.read() is not None; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('nacl', 'httpx')))")
    env = {k: v for k, v in os.environ.items() if k not in GITHUB_VARIABLES}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_a_run_started_from_an_older_secret_keeps_the_newer_login_this_home_wrote(
        home: Path, github_server: FakeGitHub, server: TokenServer) -> None:
    from testing.tokenserver import rfc3339

    now = time.time()
    older = login(refresh_token="CANARY-rt-older", last_refresh=rfc3339(now - 7200))
    newer = login(refresh_token="CANARY-rt-newer", last_refresh=rfc3339(now - 60))
    write_login(home, newer)
    env = gh_env(github_server, server)
    assert run("persist", "--to", STORE, "--codex-home", str(home), env=env)[0] == 0
    env[FULL] = text(older)  # the secret this run was given is older than what the home wrote
    code, err = run("restore", "--from", STORE, "--codex-home", str(home), env=env)
    assert code == 0 and "passed in an older login" in err, err
    assert token(home / "auth.json") == "CANARY-rt-newer"
    code, err = run("persist", "--to", STORE, "--codex-home", str(home), env=env)
    assert code == 0, err
    assert stored(github_server, FULL)["tokens"]["refresh_token"] == "CANARY-rt-newer"
    assert len(puts(github_server)) == 2  # written again over the older value
    env[FULL] = text(login(refresh_token="CANARY-rt-newest", last_refresh=rfc3339(now - 10)))
    code, err = run("restore", "--from", STORE, "--codex-home", str(home), env=env)
    assert code == 0 and token(home / "auth.json") == "CANARY-rt-newest", err  # a newer one is taken
