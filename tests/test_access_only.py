"""Access-only copies, the handout and one rotator: jobs hold a login that can rotate nothing, so concurrent jobs
cannot spend the refresh token twice, whatever Codex does inside them. Plus the other Codex auth modes and masking
of every secret in the file. Real processes, the strict token server (no grace), the file store and OpenBao."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest
from conftest import backdated, login, write_login
from test_promise import environ, finish, put, run, spawn, stored, token

from codex_ci.authfile import ACCESS_ONLY_TOKEN
from codex_ci.errors import ExitCode
from testing.targets import StoreTarget
from testing.tokenserver import CLIENT_ID, TokenServer

LOCK = ("--lock-timeout", "60")


def handout_of(target: StoreTarget) -> StoreTarget:
    """A second secret next to the target's: the handout."""
    return StoreTarget(target.kind, target.url + "-handout", target.env, None, target.unreachable_env,
                       target.put_foreign)


def refresh_as_codex_would(home: Path, url: str) -> int:
    """What a Codex inside a job does when its access token is due: POST the refresh token auth.json holds."""
    data = json.loads((home / "auth.json").read_text())
    body = {"client_id": CLIENT_ID, "grant_type": "refresh_token", "refresh_token": data["tokens"]["refresh_token"]}
    return httpx.post(url, json=body, timeout=30).status_code


# -- seed, refresh, persist and status on an access-only home ----------------------------------------------------------

def test_seed_access_only_writes_a_copy_that_holds_no_refresh_token(home: Path, server: TokenServer,
                                                                    tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = environ(None, server, CODEX_AUTH_JSON=json.dumps(login(refresh_token="CANARY-rt-real")),
                  GITHUB_ACTIONS="true", GITHUB_OUTPUT=str(out), GITHUB_STEP_SUMMARY=str(tmp_path / "summary"))
    code, err = run("seed", "--access-only", "--codex-home", str(home), env=env)
    assert code == 0, err
    assert token(home / "auth.json") == ACCESS_ONLY_TOKEN
    assert "CANARY-rt-real" not in (home / "auth.json").read_text() + out.read_text() + err
    assert json.loads((home / "codex-ci-state.json").read_text())["access_only"] == "yes"
    code, err = run("status", "--json", "--codex-home", str(home), env=environ(None, server))
    proc = spawn("status", "--json", "--codex-home", str(home), env=environ(None, server))
    report = json.loads(proc.communicate(timeout=60)[0])
    assert code == 0 and report["access_only"] is True and report["refresh_token_present"] is False
    assert report["health"] == "healthy" and "access-only copy" in report["note"]


def test_refresh_of_an_access_only_copy_never_posts(home: Path, server: TokenServer) -> None:
    write_login(home, login(expires_in=7200, refresh_token=ACCESS_ONLY_TOKEN))
    env = environ(None, server)
    code, err = run("refresh", "--codex-home", str(home), *LOCK, env=env)
    assert code == 0 and "access-only copy, fresh enough" in err, err
    for args in (["--min-ttl", "3h"], ["--force", "--min-ttl", "3h"]):
        code, err = run("refresh", *args, "--codex-home", str(home), *LOCK, env=env)
        assert code == ExitCode.ACCESS_ONLY, err
        assert "access-only copy whose access token expires within --min-ttl" in err and "keepalive" in err
    write_login(home, login(expires_in=-60, refresh_token=ACCESS_ONLY_TOKEN))
    code, err = run("refresh", "--codex-home", str(home), *LOCK, env=env)
    assert code == ExitCode.ACCESS_ONLY and "has expired" in err, err
    assert server.posts == 0


def test_persist_of_an_access_only_copy_writes_nothing(tmp_path: Path, target: StoreTarget, server: TokenServer
                                                       ) -> None:
    version = put(target, login(refresh_token="CANARY-rt-full"))
    home = tmp_path / "job"
    env = environ(target, server)
    assert run("restore", "--access-only", "--from", target.url, "--codex-home", str(home), env=env)[0] == 0
    assert token(home / "auth.json") == ACCESS_ONLY_TOKEN
    code, err = run("persist", "--to", target.url, "--codex-home", str(home), env=env)
    assert code == 0 and "never persisted" in err, err
    got = target.open().read()
    assert got is not None and got.version == version
    assert stored(target)["tokens"]["refresh_token"] == "CANARY-rt-full"


# -- the handout: the rotator writes the full login, then the access-only copy -----------------------------------------

def test_keepalive_writes_the_full_login_then_the_handout(tmp_path: Path, target: StoreTarget, server: TokenServer
                                                          ) -> None:
    put(target, login(expires_in=-60))
    handout = handout_of(target)
    env = environ(target, server)
    code, err = run("keepalive", "--store", target.url, "--handout", handout.url, "--codex-home",
                    str(tmp_path / "rotator"), *LOCK, env=env)
    assert code == 0, err
    full, copy = stored(target), stored(handout)
    assert full["tokens"]["refresh_token"] == server.current_refresh_token
    assert copy["tokens"]["refresh_token"] == ACCESS_ONLY_TOKEN
    assert copy["tokens"]["access_token"] == full["tokens"]["access_token"]
    assert "CANARY-rt" not in json.dumps(copy)
    # a job restores the handout without any flag, and its home never sees the refresh token
    job = tmp_path / "job"
    code, err = run("restore", "--from", handout.url, "--codex-home", str(job), env=env)
    assert code == 0 and "access-only copy" in err, err
    assert token(job / "auth.json") == ACCESS_ONLY_TOKEN
    assert all("CANARY-rt" not in p.read_text() for p in job.iterdir() if p.is_file())
    # a second keepalive seconds later rotates nothing and leaves the handout as it is
    code, err = run("keepalive", "--store", target.url, "--handout", handout.url, "--codex-home",
                    str(tmp_path / "rotator"), *LOCK, env=env)
    assert code == 0 and "already holds this copy" in err, err
    assert server.successes == 1 and server.reused == 0


def test_a_handout_that_cannot_be_written_leaves_the_full_login_saved_first(
        tmp_path: Path, file_target: StoreTarget, server: TokenServer) -> None:
    put(file_target, login(expires_in=-60))
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the handout's directory should be")
    env = environ(file_target, server)
    code, err = run("keepalive", "--store", file_target.url, "--handout", f"file://{blocked}/handout.json",
                    "--codex-home", str(tmp_path / "rotator"), *LOCK, env=env)
    assert code == ExitCode.STORE, err
    assert stored(file_target)["tokens"]["refresh_token"] == server.current_refresh_token  # saved before
    assert server.successes == 1


def test_a_job_refuses_a_handout_that_would_expire_mid_job(tmp_path: Path, file_target: StoreTarget,
                                                          server: TokenServer) -> None:
    handout = handout_of(file_target)
    put(handout, login(expires_in=1800, refresh_token=ACCESS_ONLY_TOKEN))
    job = tmp_path / "job"
    code, err = run("restore", "--from", handout.url, "--codex-home", str(job), env=environ(file_target, server))
    assert code == ExitCode.ACCESS_ONLY, err
    assert "within --min-ttl" in err and "keepalive" in err
    assert not (job / "auth.json").exists()
    code, err = run("restore", "--from", handout.url, "--min-ttl", "10m", "--codex-home", str(job),
                    env=environ(file_target, server))
    assert code == 0, err


def test_an_access_only_restore_does_not_replace_an_unsaved_full_login(tmp_path: Path, file_target: StoreTarget,
                                                                       server: TokenServer) -> None:
    handout = handout_of(file_target)
    put(handout, login(refresh_token=ACCESS_ONLY_TOKEN))
    home = tmp_path / "rotator"
    write_login(home, login(refresh_token="CANARY-rt-only-here"))
    code, err = run("restore", "--from", handout.url, "--codex-home", str(home), env=environ(file_target, server))
    assert code == ExitCode.CONFLICT and "full login" in err, err
    assert token(home / "auth.json") == "CANARY-rt-only-here"


@pytest.mark.parametrize(("args", "message"), [
    (["--handout", "SAME"], "--handout must name another secret than --store"),
    (["--no-store"], "--handout needs --store"),
])
def test_handout_usage_errors(tmp_path: Path, file_target: StoreTarget, server: TokenServer, args: list[str],
                              message: str) -> None:
    put(file_target, login(expires_in=-60))
    if args == ["--no-store"]:
        argv = ["refresh", "--handout", file_target.url + "-handout"]
    else:
        argv = ["refresh", "--store", file_target.url, "--handout", file_target.url]
    code, err = run(*argv, "--codex-home", str(tmp_path / "h"), env=environ(file_target, server))
    assert code == ExitCode.USAGE and message in err, err


# -- sixteen concurrent jobs while the rotator rotates -----------------------------------------------------------------

def test_sixteen_jobs_on_the_handout_while_the_keepalive_rotates(tmp_path: Path, target: StoreTarget,
                                                                 server: TokenServer) -> None:
    """Each job restores the handout, then refreshes "as Codex would" mid-job (the worst a job can do). The rotator
    rotates three times meanwhile. Zero reuse; exactly the rotator's rotations; every job had a valid access
    token; no job home ever held a real refresh token."""
    put(target, login(expires_in=-60))
    handout = handout_of(target)
    env = environ(target, server)
    rotations: list[int] = []

    def rotator() -> None:
        for _ in range(3):
            # an hour passes between two keepalive runs (a login is never rotated twice within a minute)
            current = target.open().read()
            assert current is not None
            target.open().write(backdated(current.value), current.version)
            code, _ = run("keepalive", "--store", target.url, "--handout", handout.url,
                          "--codex-home", str(tmp_path / "rotator"), *LOCK, env=env)
            rotations.append(code)

    code, err = run("keepalive", "--store", target.url, "--handout", handout.url, "--codex-home",
                    str(tmp_path / "rotator"), *LOCK, env=env)  # the first handout, before any job starts
    assert code == 0, err
    thread = threading.Thread(target=rotator)
    thread.start()
    results = []
    for wave in range(4):
        jobs = [tmp_path / f"job-{wave}-{i}" for i in range(4)]
        procs = [spawn("restore", "--from", handout.url, "--codex-home", str(job), *LOCK, env=env) for job in jobs]
        for job, proc in zip(jobs, procs, strict=True):
            code, err = finish(proc)
            assert code == 0, err
            status = refresh_as_codex_would(job, server.url)
            exp = json.loads((job / "auth.json").read_text())["tokens"]["access_token"]
            results.append((job, status, exp))
    thread.join(timeout=300)
    assert rotations == [0, 0, 0]
    assert server.reused == 0 and not server.revoked
    assert server.successes == 4  # the first keepalive and the rotator's three: nobody else rotated
    assert all(status == 401 for _, status, _ in results)  # the placeholder is refused; the login is untouched
    for job, _, _ in results:
        assert token(job / "auth.json") == ACCESS_ONLY_TOKEN
        assert all("CANARY-rt" not in p.read_text() for p in job.iterdir() if p.is_file())
        status_code, err = run("status", "--codex-home", str(job), env=env)
        assert status_code == 0, err  # a valid access token, for longer than --min-ttl


# -- other Codex auth modes, and masking every secret in the file ------------------------------------------------------

def test_a_personal_access_token_login_needs_no_rotation(home: Path, server: TokenServer) -> None:
    data = {"personal_access_token": "at-CANARY-personal-access-token-0123456789"}
    env = environ(None, server, CODEX_AUTH_JSON=json.dumps(data))
    code, err = run("seed", "--codex-home", str(home), env=env)
    assert code == 0 and "a personalAccessToken login: it does not rotate" in err, err
    code, err = run("refresh", "--codex-home", str(home), env=env)
    assert code == 0 and "nothing to refresh" in err, err
    assert server.posts == 0


@pytest.mark.parametrize(("variable", "says"), [
    ("CODEX_ACCESS_TOKEN", "Codex signs in with it and ignores auth.json"),
    ("OPENAI_FEDERATION_RULE_ID", "workload identity federation"),
    ("CODEX_API_KEY", "`codex exec` uses it"),
])
def test_status_says_when_the_environment_makes_codex_ignore_auth_json(home: Path, server: TokenServer,
                                                                      variable: str, says: str) -> None:
    write_login(home, login())
    proc = spawn("status", "--json", "--codex-home", str(home), env=environ(None, server, **{variable: "x-value"}))
    out, _ = proc.communicate(timeout=60)
    assert any(says in warning for warning in json.loads(out)["warnings"]), out


def test_every_secret_in_the_file_is_masked_wherever_it_sits(home: Path, server: TokenServer, tmp_path: Path) -> None:
    data = login(refresh_token="CANARY-rt-0")
    data["agent_identity"] = {"agent_id": "agent-1", "agent_private_key": "CANARY-agent-private-key-0123456789"}
    data["bedrock_access_keys"] = [{"id": "AKIA-CANARY-0000", "secret": "CANARY-bedrock-secret-0123456789"}]
    env = environ(None, server, CODEX_AUTH_JSON=json.dumps(data), GITHUB_ACTIONS="true",
                  GITHUB_OUTPUT=str(tmp_path / "out"), GITHUB_STEP_SUMMARY=str(tmp_path / "summary"))
    proc = spawn("seed", "--codex-home", str(home), env=env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    masks = {line.removeprefix("::add-mask::") for line in out.splitlines() if line.startswith("::add-mask::")}
    for secret in ("CANARY-agent-private-key-0123456789", "CANARY-bedrock-secret-0123456789", "AKIA-CANARY-0000",
                   "CANARY-rt-0"):
        assert secret in masks
    assert "chatgpt" not in masks and "acct-1234567890" not in masks  # not secrets: never blanked in the log
    assert json.loads((home / "auth.json").read_text())["agent_identity"]["agent_id"] == "agent-1"  # kept
