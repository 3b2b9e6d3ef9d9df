"""codex_ci.report: the non-secret facts every command outputs, step outputs and the summary (on GitHub Actions only),
and the masks of a login's secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codex_ci.authfile import AuthFile
from codex_ci.report import facts, mask, report
from testing.tokenserver import make_login

EXPIRES = 2_000_000_000  # 2033-05-18T03:33:20Z
LAST_REFRESH = "2026-01-02T03:04:05.123456Z"


def chatgpt(access_exp: int | None = EXPIRES, last_refresh: str | None = LAST_REFRESH) -> AuthFile:
    data = make_login(access_exp=access_exp, refresh_token="CANARY-rt-0", last_refresh=last_refresh, canary="CANARY")
    return AuthFile.parse(json.dumps(data), "test")


def heredocs(text: str) -> list[tuple[str, str]]:
    """``$GITHUB_OUTPUT``'s heredoc entries in order: (name, value); the whole text must be entries."""
    found = []
    lines = text.split("\n")
    assert lines.pop() == ""
    while lines:
        name, _, delimiter = lines.pop(0).partition("<<")
        assert delimiter.startswith("ghadelimiter_")
        end = lines.index(delimiter)
        found.append((name, "\n".join(lines[:end])))
        del lines[:end + 1]
    return found


@pytest.fixture
def runner_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, Path]:
    output, summary = tmp_path / "output", tmp_path / "summary"
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    return output, summary


# -- facts -------------------------------------------------------------------------------------------------------

def test_facts_of_a_chatgpt_login() -> None:
    assert facts(chatgpt()) == {"auth-mode": "chatgpt", "expires-at": "2033-05-18T03:33:20.000000Z",
                                "last-refresh": "2026-01-02T03:04:05.123456Z"}


def test_facts_without_an_expiry_or_a_last_refresh_are_empty() -> None:
    assert facts(chatgpt(access_exp=None, last_refresh=None)) == {"auth-mode": "chatgpt", "expires-at": "",
                                                                  "last-refresh": ""}


def test_facts_of_an_apikey_login() -> None:
    auth = AuthFile.parse(json.dumps({"OPENAI_API_KEY": "sk-CANARY-key-0123456789"}), "test")
    assert facts(auth) == {"auth-mode": "apikey", "expires-at": "", "last-refresh": ""}


def test_facts_hold_no_secret() -> None:
    assert "CANARY" not in json.dumps(facts(chatgpt()))


# -- report --------------------------------------------------------------------------------------------------------

def test_report_on_actions_writes_the_outputs_and_the_summary(monkeypatch: pytest.MonkeyPatch,
                                                              runner_files: tuple[Path, Path]) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    output, summary = runner_files
    report("codex-ci refresh", chatgpt(), {"refreshed": True, "store-version": "2"})
    assert heredocs(output.read_text()) == [
        ("auth-mode", "chatgpt"), ("expires-at", "2033-05-18T03:33:20.000000Z"),
        ("last-refresh", "2026-01-02T03:04:05.123456Z"), ("refreshed", "true"), ("store-version", "2"),
    ]
    assert summary.read_text() == (
        "### codex-ci refresh\n\n| | |\n|---|---|\n"
        "| auth-mode | chatgpt |\n| expires-at | 2033-05-18T03:33:20.000000Z |\n"
        "| last-refresh | 2026-01-02T03:04:05.123456Z |\n| refreshed | true |\n| store-version | 2 |\n\n"
    )


def test_report_appends(monkeypatch: pytest.MonkeyPatch, runner_files: tuple[Path, Path]) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    output, _ = runner_files
    output.write_text("earlier<<ghadelimiter_x\nstep\nghadelimiter_x\n")
    report("codex-ci status", chatgpt(), {})
    assert [name for name, _ in heredocs(output.read_text())] == ["earlier", "auth-mode", "expires-at",
                                                                  "last-refresh"]


@pytest.mark.parametrize("actions", [None, "false"])
def test_report_elsewhere_writes_nothing(monkeypatch: pytest.MonkeyPatch, runner_files: tuple[Path, Path],
                                         actions: str | None) -> None:
    if actions is not None:
        monkeypatch.setenv("GITHUB_ACTIONS", actions)
    report("codex-ci refresh", chatgpt(), {"refreshed": True})
    assert [path.exists() for path in runner_files] == [False, False]


# -- mask ----------------------------------------------------------------------------------------------------------

def test_mask_on_actions_masks_every_token(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    auth = chatgpt()
    mask(auth)
    tokens = json.loads(auth.to_bytes())["tokens"]
    assert capsys.readouterr().out.splitlines() == [
        f"::add-mask::{tokens['id_token']}", f"::add-mask::{tokens['access_token']}", "::add-mask::CANARY-rt-0"]


def test_mask_elsewhere_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    mask(chatgpt())
    assert capsys.readouterr() == ("", "")
