"""codex-ci seed: write-if-absent, validation, shape, permissions, config.toml, GitHub Actions output."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from conftest import assert_no_secrets, login, write_login

from codex_ci.errors import ExitCode
from testing.tokenserver import make_jwt


def seed_env(data: object) -> dict[str, str]:
    return {"CODEX_AUTH_JSON": data if isinstance(data, str) else json.dumps(data)}


def test_seed_writes_when_absent_with_codex_shape_and_modes(cli, home: Path) -> None:
    data = login()
    data["future_key"] = {"kept": True}
    del data["tokens"]["account_id"]
    data["tokens"]["account_id"] = None
    run = cli("seed", "--codex-home", str(home), env=seed_env(data))
    assert run.exit_code == 0
    path = home / "auth.json"
    written = json.loads(path.read_text())
    assert list(written) == ["auth_mode", "OPENAI_API_KEY", "tokens", "last_refresh", "future_key"]
    assert list(written["tokens"]) == ["id_token", "access_token", "refresh_token", "account_id"]
    assert written["tokens"]["account_id"] == "acct-1234567890"  # filled from the id_token claim
    assert written["future_key"] == {"kept": True}
    assert path.read_text().startswith('{\n  "auth_mode": "chatgpt",\n')
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert (home / "config.toml").read_text() == 'cli_auth_credentials_store = "file"\n'
    assert f"wrote {path}" in run.stderr


def test_seed_fills_last_refresh_when_missing(cli, home: Path) -> None:
    data = login()
    del data["last_refresh"]
    assert cli("seed", "--codex-home", str(home), env=seed_env(data)).exit_code == 0
    assert json.loads((home / "auth.json").read_text())["last_refresh"].endswith("Z")


def test_seed_ignores_umask(cli, home: Path) -> None:
    old = os.umask(0)
    try:
        assert cli("seed", "--codex-home", str(home), env=seed_env(login())).exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "auth.json").stat().st_mode) == 0o600


@pytest.mark.parametrize("encode", [
    lambda s: base64.b64encode(s.encode()).decode(),
    lambda s: base64.urlsafe_b64encode(s.encode()).decode().rstrip("="),
    lambda s: base64.encodebytes(s.encode()).decode(),  # wrapped at 76 columns
    lambda s: f"  {s}\n",
], ids=["base64", "base64url-unpadded", "base64-wrapped", "json-padded"])
def test_seed_accepts_json_or_base64(cli, home: Path, encode) -> None:
    data = login()
    assert cli("seed", "--codex-home", str(home), env=seed_env(encode(json.dumps(data)))).exit_code == 0
    assert json.loads((home / "auth.json").read_text())["tokens"] == data["tokens"]


def test_seed_leaves_existing_file(cli, home: Path) -> None:
    path = write_login(home, login(refresh_token="CANARY-rt-old"))
    before = path.read_bytes()
    run = cli("seed", "--codex-home", str(home), env=seed_env(login(refresh_token="CANARY-rt-new")))
    assert run.exit_code == 0
    assert path.read_bytes() == before
    assert "already exists; left unchanged" in run.stderr


def test_seed_force_replaces(cli, home: Path) -> None:
    path = write_login(home, login(refresh_token="CANARY-rt-old"))
    assert cli("seed", "--force", "--codex-home", str(home), env=seed_env(login(refresh_token="CANARY-rt-new"))
               ).exit_code == 0
    assert json.loads(path.read_text())["tokens"]["refresh_token"] == "CANARY-rt-new"


@pytest.mark.parametrize(("file_time", "seed_time", "replaced"), [
    ("2026-01-01T00:00:00Z", "2026-02-01T00:00:00.123456789Z", True),
    ("2026-02-01T00:00:00Z", "2026-01-01T00:00:00Z", False),
    ("2026-02-01T00:00:00Z", "2026-02-01T00:00:00Z", False),
])
def test_seed_if_newer(cli, home: Path, file_time: str, seed_time: str, replaced: bool) -> None:
    path = write_login(home, login(refresh_token="CANARY-rt-old", last_refresh=file_time))
    run = cli("seed", "--if-newer", "--codex-home", str(home),
              env=seed_env(login(refresh_token="CANARY-rt-new", last_refresh=seed_time)))
    assert run.exit_code == 0
    expected = "CANARY-rt-new" if replaced else "CANARY-rt-old"
    assert json.loads(path.read_text())["tokens"]["refresh_token"] == expected


def test_seed_from_file_and_stdin(cli, home: Path, tmp_path: Path) -> None:
    source = tmp_path / "seed.json"
    source.write_text(json.dumps(login(refresh_token="CANARY-rt-file")))
    assert cli("seed", "--codex-home", str(home), "--from-file", str(source)).exit_code == 0
    assert "CANARY-rt-file" in (home / "auth.json").read_text()
    other = home.parent / "other"
    assert cli("seed", "--codex-home", str(other), "--from-file", "-",
               input=json.dumps(login(refresh_token="CANARY-rt-stdin"))).exit_code == 0
    assert "CANARY-rt-stdin" in (other / "auth.json").read_text()


def test_seed_apikey_mode(cli, home: Path) -> None:
    run = cli("seed", "--codex-home", str(home), env=seed_env({"OPENAI_API_KEY": "sk-CANARY-key"}))
    assert run.exit_code == 0
    assert json.loads((home / "auth.json").read_text()) == {
        "OPENAI_API_KEY": "sk-CANARY-key", "last_refresh": json.loads((home / "auth.json").read_text())["last_refresh"]
    }


def test_seed_codex_home_from_environment(cli, home: Path) -> None:
    assert cli("seed", env=seed_env(login()) | {"CODEX_HOME": str(home)}).exit_code == 0
    assert (home / "auth.json").exists()


def test_seed_without_source_is_missing(cli, home: Path) -> None:
    run = cli("seed", "--codex-home", str(home))
    assert run.exit_code == ExitCode.MISSING
    assert "CODEX_AUTH_JSON is not set" in run.stderr
    assert not home.exists()


@pytest.mark.parametrize(("setting", "warns"), [("keyring", True), ("auto", True), ("file", False)])
def test_seed_warns_about_keyring_config(cli, home: Path, setting: str, warns: bool) -> None:
    home.mkdir(mode=0o700)
    config = home / "config.toml"
    config.write_text(f'model = "o3"\ncli_auth_credentials_store = "{setting}"\n')
    run = cli("seed", "--codex-home", str(home), env=seed_env(login()))
    assert run.exit_code == 0
    assert ("would move the login out of auth.json" in run.stderr) is warns
    assert config.read_text().startswith('model = "o3"')  # never rewritten


def _bad_inputs() -> dict[str, str]:
    good = login()
    def variant(**changes: object) -> str:
        data = json.loads(json.dumps(good))
        for dotted, value in changes.items():
            target = data
            *parents, last = dotted.split("__")
            for key in parents:
                target = target[key]
            if value is KeyError:
                del target[last]
            else:
                target[last] = value
        return json.dumps(data)
    return {
        "empty": "",
        "whitespace": "  \n\t ",
        "not-json": "this is not json",
        "array": "[1, 2]",
        "string": '"CANARY-string"',
        "number": "42",
        "null": "null",
        "truncated": json.dumps(good)[:-20],
        "bad-base64": "eyJ!!!notbase64@@@",
        "base64-of-garbage": base64.b64encode(b"CANARY garbage").decode(),
        "missing-tokens": variant(tokens=KeyError),
        "tokens-not-object": variant(tokens="CANARY"),
        "missing-refresh-token": variant(tokens__refresh_token=KeyError),
        "refresh-token-number": variant(tokens__refresh_token=12345),
        "access-token-list": variant(tokens__access_token=["CANARY"]),
        "id-token-not-jwt": variant(tokens__id_token="CANARY-not-a-jwt"),
        "id-token-undecodable": variant(tokens__id_token="eyJhbGciOiJub25lIn0.%%%%.sig"),
        "access-token-payload-not-json": variant(tokens__access_token="eyJhbGciOiJub25lIn0.bm90IGpzb24.sig"),
        "id-token-payload-array": variant(tokens__id_token="eyJh.WzFd.sig"),
        "account-id-number": variant(tokens__account_id=5),
        "no-account-id-anywhere": variant(tokens__account_id=KeyError, tokens__id_token=make_jwt({"email": "x"})),
        "last-refresh-garbage": variant(last_refresh="yesterday"),
        "auth-mode-number": variant(auth_mode=3),
        "apikey-empty": json.dumps({"auth_mode": "apikey", "OPENAI_API_KEY": ""}),
        "nul-bytes": json.dumps(good)[:40] + "\x00" + json.dumps(good)[40:],
        "deep-nesting": "[" * 100000 + "]" * 100000,
        "lone-surrogate": variant(note="\\ud800").replace("\\\\ud800", "\\ud800"),
    }


BAD = _bad_inputs()


@pytest.mark.parametrize("name", sorted(BAD))
def test_seed_rejects_bad_input_and_keeps_existing_file(cli, home: Path, tmp_path: Path, name: str) -> None:
    path = write_login(home, login(refresh_token="CANARY-rt-keep"))
    before = path.read_bytes()
    source = tmp_path / "seed"
    source.write_bytes(BAD[name].encode("utf-8", "surrogatepass"))
    run = cli("seed", "--force", "--codex-home", str(home), "--from-file", str(source))
    assert run.exit_code == ExitCode.INVALID, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert run.stderr.startswith("codex-ci: error: ")
    assert path.read_bytes() == before
    assert sorted(p.name for p in home.iterdir()) == ["auth.json"]


def test_seed_rejects_huge_input(cli, home: Path, tmp_path: Path) -> None:
    source = tmp_path / "huge"
    source.write_bytes(b'{"pad": "' + b"A" * (10 * 1024 * 1024) + b'"}')
    run = cli("seed", "--codex-home", str(home), "--from-file", str(source))
    assert run.exit_code == ExitCode.INVALID
    assert "too large" in run.stderr
    assert not (home / "auth.json").exists()


def test_seed_bad_environment_value(cli, home: Path) -> None:
    run = cli("seed", "--codex-home", str(home), env=seed_env("{not json"))
    assert run.exit_code == ExitCode.INVALID
    assert "CODEX_AUTH_JSON is not valid JSON" in run.stderr


def test_seed_codex_home_is_a_file(cli, tmp_path: Path) -> None:
    home = tmp_path / "file"
    home.write_text("x")
    run = cli("seed", "--codex-home", str(home), env=seed_env(login()))
    assert run.exit_code == ExitCode.FILESYSTEM
    assert "is not a directory" in run.stderr
    assert home.read_text() == "x"


def test_seed_refuses_symlinked_auth_json(cli, home: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text("precious")
    home.mkdir(mode=0o700)
    (home / "auth.json").symlink_to(target)
    run = cli("seed", "--force", "--codex-home", str(home), env=seed_env(login()))
    assert run.exit_code == ExitCode.FILESYSTEM
    assert "symlink" in run.stderr
    assert target.read_text() == "precious"
    assert (home / "auth.json").is_symlink()


def test_seed_refuses_symlinked_lock(cli, home: Path, tmp_path: Path) -> None:
    home.mkdir(mode=0o700)
    (home / "auth.json.lock").symlink_to(tmp_path / "elsewhere")
    run = cli("seed", "--codex-home", str(home), env=seed_env(login()))
    assert run.exit_code == ExitCode.FILESYSTEM
    assert not (tmp_path / "elsewhere").exists()
    assert not (home / "auth.json").exists()


def test_seed_refuses_auth_json_directory(cli, home: Path) -> None:
    (home / "auth.json").mkdir(parents=True)
    run = cli("seed", "--force", "--codex-home", str(home), env=seed_env(login()))
    assert run.exit_code == ExitCode.FILESYSTEM
    assert "not a regular file" in run.stderr
    assert (home / "auth.json").is_dir()


def test_seed_unwritable_directory(cli, home: Path) -> None:
    home.mkdir(mode=0o500)
    if os.access(home, os.W_OK):  # root ignores permissions: use a read-only path instead
        pytest.skip("running as root; see test_seed_read_only_filesystem")
    run = cli("seed", "--codex-home", str(home), env=seed_env(login()))
    assert run.exit_code == ExitCode.FILESYSTEM


def test_seed_read_only_filesystem(cli) -> None:
    ro = Path("/proc/self/fdinfo")  # exists, is a directory, and nobody may create files in it
    run = cli("seed", "--codex-home", str(ro), env=seed_env(login()))
    assert run.exit_code == ExitCode.FILESYSTEM
    errors = [line for line in run.stderr.splitlines() if line.startswith("codex-ci: error: ")]
    assert len(errors) == 1 and run.stderr.splitlines()[-1] == errors[0]


def test_seed_in_github_actions_masks_first_and_writes_outputs(cli, home: Path, tmp_path: Path) -> None:
    out, summary = tmp_path / "out", tmp_path / "summary"
    data = login()
    env = seed_env(data) | {"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(out), "GITHUB_STEP_SUMMARY": str(summary)}
    run = cli("seed", "--codex-home", str(home), env=env)
    assert run.exit_code == 0
    lines = run.stdout.splitlines()
    masks = [line.removeprefix("::add-mask::") for line in lines if line.startswith("::add-mask::")]
    assert set(masks) == {data["tokens"]["id_token"], data["tokens"]["access_token"], "CANARY-rt-0"}
    assert lines[: len(masks)] == [f"::add-mask::{m}" for m in masks]  # before anything else
    outputs = out.read_text()
    for key in ("auth-mode<<", "expires-at<<", "last-refresh<<", "seeded<<"):
        assert key in outputs
    assert "\ntrue\n" in outputs and "\nchatgpt\n" in outputs
    assert "| seeded | true |" in summary.read_text()
    assert_no_secrets(outputs, summary.read_text())


def test_seed_error_in_github_actions_is_annotated(cli, home: Path) -> None:
    run = cli("seed", "--codex-home", str(home), env=seed_env("[]") | {"GITHUB_ACTIONS": "true"})
    assert run.exit_code == ExitCode.INVALID
    assert run.stdout.startswith("::error title=codex-ci::CODEX_AUTH_JSON must be a JSON object")


def test_a_killed_writer_leaves_no_temp_file_behind(cli, home: Path) -> None:
    home.mkdir(mode=0o700)
    stale = home / ".auth.json.abc12345.tmp"
    stale.write_text("half a login")
    assert cli("seed", "--codex-home", str(home), env=seed_env(login())).exit_code == 0
    assert not stale.exists()
    assert json.loads((home / "auth.json").read_text())["tokens"]["refresh_token"] == "CANARY-rt-0"
