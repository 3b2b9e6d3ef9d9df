"""codex_ci.github: workflow commands, outputs and the step summary (inert outside GitHub Actions), the run id, and
the Actions OIDC token fetched from a loopback stand-in for the runner's token service."""

from __future__ import annotations

import json
import logging
import re
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from codex_ci import github
from codex_ci.errors import ExitCode, StoreError
from codex_ci.secret import Secret
from testing.servers import ThreadedHTTPService, free_port

REQUEST_TOKEN = "CANARY-id-token-request-token"


@pytest.fixture
def actions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")


def heredocs(text: str) -> dict[str, tuple[str, str]]:
    """Parse ``$GITHUB_OUTPUT`` heredoc entries: name -> (value, delimiter)."""
    found = {}
    lines = text.split("\n")
    assert lines.pop() == ""
    while lines:
        name, _, delimiter = lines.pop(0).partition("<<")
        end = lines.index(delimiter)
        found[name] = ("\n".join(lines[:end]), delimiter)
        del lines[:end + 1]
    return found


# -- active ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "active"), [("true", True), ("false", False), ("True", False), ("1", False),
                                               ("", False)])
def test_active_only_when_github_actions_is_true(monkeypatch: pytest.MonkeyPatch, value: str, active: bool) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", value)
    assert github.active() is active


def test_inactive_outside_actions() -> None:
    assert github.active() is False


# -- workflow commands -------------------------------------------------------------------------------------------

def test_mask_writes_one_line_per_secret_line(actions: None, capsys: pytest.CaptureFixture[str]) -> None:
    github.mask([Secret("CANARY-one"), Secret("CANARY-two\n\n  \nCANARY-three\r\n")])
    assert capsys.readouterr().out == (
        "::add-mask::CANARY-one\n::add-mask::CANARY-two\n::add-mask::CANARY-three\n")


def test_mask_of_nothing_writes_nothing(actions: None, capsys: pytest.CaptureFixture[str]) -> None:
    github.mask([])
    github.mask([Secret(""), Secret(" \n ")])
    assert capsys.readouterr().out == ""


def test_commands_are_inert_outside_actions(capsys: pytest.CaptureFixture[str]) -> None:
    github.mask([Secret("CANARY-one")])
    github.error("an error")
    github.warning("a warning")
    assert capsys.readouterr() == ("", "")


def test_error_escapes_message_and_title(actions: None, capsys: pytest.CaptureFixture[str]) -> None:
    github.error("50% done\r\nnext line", title="codex-ci: refresh, failed")
    assert capsys.readouterr().out == "::error title=codex-ci%3A refresh%2C failed::50%25 done%0D%0Anext line\n"


def test_error_default_title(actions: None, capsys: pytest.CaptureFixture[str]) -> None:
    github.error("plain")
    assert capsys.readouterr().out == "::error title=codex-ci::plain\n"


def test_warning_escapes_the_message(actions: None, capsys: pytest.CaptureFixture[str]) -> None:
    github.warning("a\nb%0Ac")
    assert capsys.readouterr().out == "::warning title=codex-ci::a%0Ab%250Ac\n"


def test_a_message_cannot_smuggle_a_command(actions: None, capsys: pytest.CaptureFixture[str]) -> None:
    github.warning("x\n::add-mask::y")
    github.error("x\r::set-env name=A::b")
    out = capsys.readouterr().out
    assert out.splitlines() == ["::warning title=codex-ci::x%0A::add-mask::y",
                                "::error title=codex-ci::x%0D::set-env name=A::b"]


# -- outputs and summary -----------------------------------------------------------------------------------------

def test_set_outputs_heredoc_with_random_delimiters(
        actions: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    output = tmp_path / "output"
    output.write_text("earlier=kept\n")
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    github.set_outputs({"action": "refreshed", "multi": "a\nb", "flag": True, "off": False, "none": None, "n": 3})
    github.set_outputs({"action": "again"})
    text = output.read_text()
    assert text.startswith("earlier=kept\n")
    entries = heredocs(text.removeprefix("earlier=kept\n"))
    assert {name: value for name, (value, _) in entries.items()} == {
        "action": "again", "multi": "a\nb", "flag": "true", "off": "false", "none": "", "n": "3"}
    delimiters = [delimiter for _, delimiter in entries.values()]
    assert all(re.fullmatch(r"ghadelimiter_[0-9a-f-]{36}", d) for d in delimiters)
    assert len(set(delimiters)) == len(delimiters)
    assert text.count("action<<") == 2


def test_set_outputs_value_cannot_end_the_heredoc(
        actions: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    output = tmp_path / "output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    github.set_outputs({"evil": "ghadelimiter_\nEOF\ninjected=1"})
    assert {n: v for n, (v, _) in heredocs(output.read_text()).items()} == {"evil": "ghadelimiter_\nEOF\ninjected=1"}


def test_outputs_and_summary_are_inert_outside_actions(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "output"))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary"))
    github.set_outputs({"action": "refreshed"})
    github.summary("codex-ci", [("action", "refreshed")])
    assert sorted(tmp_path.iterdir()) == []


def test_outputs_without_the_variable_write_nothing(actions: None, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    github.set_outputs({"action": "refreshed"})
    github.summary("codex-ci", [("action", "refreshed")])
    assert sorted(tmp_path.iterdir()) == []


def test_summary_is_a_markdown_table(actions: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    summary = tmp_path / "summary"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    github.summary("codex-ci refresh", [("action", "refreshed"), ("pipe", "a|b"), ("forced", False), ("none", None)])
    assert summary.read_text() == (
        "### codex-ci refresh\n\n| | |\n|---|---|\n| action | refreshed |\n| pipe | a\\|b |\n| forced | false |\n"
        "| none |  |\n\n")


def test_a_value_with_line_breaks_stays_one_row(actions: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    summary = tmp_path / "summary"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    github.summary("t", [("reason", "one\r\n| two\nthree")])
    assert summary.read_text() == "### t\n\n| | |\n|---|---|\n| reason | one \\| two three |\n\n"


@pytest.mark.parametrize("variable", ["GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"])
def test_an_unwritable_runner_file_warns_and_does_not_raise(
        actions: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        variable: str) -> None:
    monkeypatch.setenv(variable, str(tmp_path))  # a directory: open() fails
    with caplog.at_level(logging.WARNING, logger="codex_ci"):
        github.set_outputs({"action": "refreshed"})
        github.summary("codex-ci", [("action", "refreshed")])
    assert caplog.messages == [f"cannot write ${variable}: Is a directory"]


# -- run id ------------------------------------------------------------------------------------------------------

def test_run_id_from_a_mapping() -> None:
    assert github.run_id({"GITHUB_RUN_ID": "12345"}) == "12345"
    assert github.run_id({"GITHUB_RUN_ID": ""}) is None
    assert github.run_id({}) is None


def test_run_id_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_RUN_ID", "777")
    assert github.run_id() == "777"
    assert github.run_id({}) is None  # a mapping given wins over the environment
    monkeypatch.delenv("GITHUB_RUN_ID")
    assert github.run_id() is None


# -- OIDC token --------------------------------------------------------------------------------------------------

class TokenService(ThreadedHTTPService):
    """The runner's ID-token service: records each request and answers with ``reply`` (status, body)."""

    def __init__(self) -> None:
        super().__init__(_Handler, name="oidc")
        self.requests: list[tuple[str, str | None]] = []
        self.reply: tuple[int | None, bytes] = (200, json.dumps({"value": "header.payload.sig"}).encode())


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        service: TokenService = self.server.service  # type: ignore[attr-defined]
        service.requests.append((self.path, self.headers.get("Authorization")))
        status, body = service.reply
        if status is None:
            self.close_connection = True
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def service() -> Iterator[TokenService]:
    with TokenService() as running:
        yield running


def env_for(url: str) -> dict[str, str]:
    return {"ACTIONS_ID_TOKEN_REQUEST_URL": url, "ACTIONS_ID_TOKEN_REQUEST_TOKEN": REQUEST_TOKEN}


def test_oidc_token_sends_the_bearer_and_the_audience(service: TokenService) -> None:
    token = github.oidc_token(env_for(f"{service.base_url}/token?api-version=2.0"), "vault://a b/c", what="Vault")
    assert token == "header.payload.sig"
    assert service.requests == [("/token?api-version=2.0&audience=vault%3A%2F%2Fa%20b%2Fc", f"bearer {REQUEST_TOKEN}")]


def test_oidc_token_audience_as_the_first_parameter(service: TokenService) -> None:
    github.oidc_token(env_for(f"{service.base_url}/token"), "sts.amazonaws.com", what="AWS")
    assert service.requests == [("/token?audience=sts.amazonaws.com", f"bearer {REQUEST_TOKEN}")]


def test_oidc_token_without_audience(service: TokenService) -> None:
    github.oidc_token(env_for(f"{service.base_url}/token?x=1"), "", what="Vault")
    assert service.requests == [("/token?x=1", f"bearer {REQUEST_TOKEN}")]


@pytest.mark.parametrize("reply", [
    (403, b'{"message": "no id-token permission"}'),
    (500, b'{"value": "header.payload.sig"}'),
    (200, b"not json"),
    (200, b"[]"),
    (200, b"{}"),
    (200, b'{"value": ""}'),
    (200, b'{"value": 5}'),
    (None, b""),  # the connection closed without an answer
])
def test_oidc_token_failure_is_a_store_error_with_the_permission_hint(
        service: TokenService, reply: tuple[int | None, bytes]) -> None:
    service.reply = reply
    with pytest.raises(StoreError) as caught:
        github.oidc_token(env_for(f"{service.base_url}/token"), "vault", what="Vault")
    assert_oidc_failure(caught.value)
    assert len(service.requests) == 1


def test_oidc_token_unreachable_service() -> None:
    with pytest.raises(StoreError) as caught:
        github.oidc_token(env_for(f"http://127.0.0.1:{free_port()}/token"), "vault", what="Vault")
    assert_oidc_failure(caught.value)


def test_oidc_token_malformed_url() -> None:
    with pytest.raises(StoreError) as caught:
        github.oidc_token(env_for("http://[::1/token"), "vault", what="Vault")
    assert_oidc_failure(caught.value)


def assert_oidc_failure(error: StoreError) -> None:
    assert type(error) is StoreError
    assert error.exit_code == ExitCode.STORE
    assert error.message == "cannot get the GitHub Actions OIDC token for Vault"
    assert error.hint == "The job needs `permissions: id-token: write`."
    shown = f"{error} {error.hint} {error!r}" + "".join(traceback.format_exception(error))
    assert REQUEST_TOKEN not in shown
    assert "CANARY" not in shown
