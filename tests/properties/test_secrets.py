"""Canary secrets through every command and failure path: no token may reach any output, log, error or argv.

Every CLI run happens twice (the ``run`` fixture): with ``--verbose``, and as on GitHub Actions
(``GITHUB_ACTIONS=true`` with ``$GITHUB_OUTPUT`` and ``$GITHUB_STEP_SUMMARY`` files). Each run is checked for
canaries in stdout, stderr (only ``::add-mask::`` lines may name a token, and only on Actions), both files, and
for child processes (codex-ci spawns none). On Actions every token of the login a command reads must be masked
before any other line, and every token a refresh brings before the line that reports it.

The core functions are also called in process: the text, repr, hint and full traceback of every CodexCIError
(with its visible chain, which must hold no SDK exception) and every log record at DEBUG must be clean. The
composite action runs twice under tests/actionrunner.py while a thread samples the argv of every descendant
process: secrets travel by environment, stdin and files, never by argv.

Canaries: refresh tokens and API keys contain "CANARY" (API keys start ``sk-CANARY-``), JWTs start with eyJ and
carry a "CANARY" claim. No test or parameter id here contains that word, so none reaches a path in a message.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, SCRUBBED, backdate, backdated, login, write_login
from typer.testing import CliRunner

from codex_ci import distributed, rotate, seed, status, sync
from codex_ci.cli import app
from codex_ci.errors import CodexCIError, ConflictError, ExitCode, StoredValueError, StoreError
from codex_ci.home import Home
from codex_ci.policy import Policy
from codex_ci.refresh import TokenClient
from codex_ci.stores import StoreConflict, Versioned, open_store
from testing import tokenserver
from testing.servers import ThreadedHTTPService
from testing.tables import ENDPOINT, STORE_FAULTS, endpoint, store_fault
from testing.targets import StoreTarget
from testing.tokenserver import TokenServer, make_jwt

JWT = re.compile(r"eyJ[\w-]{4,}\.[\w-]{4,}")
MASK = "::add-mask::"
API_KEY = "sk-CANARY-apikey-5f2d8e1a9c7b4d3e"
PAT = "CANARY-pat-8a1f3c5e"
OLD = "2024-01-01T00:00:00.000000Z"
RETRIES = ("--retries", "0")
SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "KEY")


# -- what a leak is ---------------------------------------------------------------------------------------------
def leaks(text: str, canaries: Iterable[str] = (), *, masks_allowed: bool = False) -> list[str]:
    """Why ``text`` leaks: the word canary in any case, a given value in any case, or a JWT."""
    kept = "\n".join(
        line for line in text.splitlines() if not (masks_allowed and line.startswith(MASK))
    )
    low, found = kept.lower(), []
    if "canary" in low:
        found.append("the word CANARY")
    found += [f"the value {value[:12]}..." for value in canaries if value and value.lower() in low]
    if JWT.search(kept):
        found.append("a JWT")
    return found


def assert_clean(where: str, text: str, canaries: Iterable[str] = (), *, masks_allowed: bool = False) -> None:
    found = leaks(text, list(canaries), masks_allowed=masks_allowed)
    assert not found, f"{where} leaks {found}:\n{text}"


def tokens_of(data: dict[str, Any]) -> list[str]:
    """Every token value of an auth.json dict: what a CI log must mask."""
    tokens = data.get("tokens") if isinstance(data.get("tokens"), dict) else {}
    values = [tokens.get(k) for k in ("id_token", "access_token", "refresh_token")]
    values += [data.get(k) for k in ("OPENAI_API_KEY", "personal_access_token", "bedrock_api_key")]
    return [v for v in values if isinstance(v, str) and v]


def tokens_on_disk(home: Path) -> list[str]:
    path = home / "auth.json"
    return tokens_of(json.loads(path.read_text())) if path.is_file() else []


def credentials(env: dict[str, str]) -> list[str]:
    """The store credentials in a target's environment: canaries too."""
    return [v for k, v in env.items() if any(w in k for w in SECRET_WORDS) and len(v) >= 8]


def stale(refresh_token: str = "CANARY-rt-0", **kw: Any) -> dict[str, Any]:
    return login(expires_in=-60, refresh_token=refresh_token, last_refresh=OLD, **kw)


# -- no child processes ---------------------------------------------------------------------------------------------
SPAWN_EVENTS = frozenset({"subprocess.Popen", "os.system", "os.fork", "os.forkpty", "os.posix_spawn", "os.exec",
                          "os.spawn"})
_watched: set[int] = set()
_spawned: list[str] = []
_hooked = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event in SPAWN_EVENTS and threading.get_ident() in _watched:
        _spawned.append(f"{event}: {str(args)[:200]}")


class NoSpawn:
    """Records (with an audit hook, installed once) every process this thread starts while inside."""

    def __enter__(self) -> NoSpawn:
        global _hooked
        if not _hooked:
            sys.addaudithook(_audit)
            _hooked = True
        _spawned.clear()
        _watched.add(threading.get_ident())
        return self

    def __exit__(self, *exc: object) -> None:
        _watched.discard(threading.get_ident())
        assert _spawned == [], f"codex-ci started a process: {_spawned}"


# -- the CLI, run twice -----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Outcome:
    mode: str
    code: int
    stdout: str
    stderr: str
    output: str  # stdout and stderr as a terminal (or the Actions log) shows them, interleaved
    files: dict[str, str]


def masks_before(lines: list[str], stop: Callable[[str], bool]) -> set[str]:
    """The values masked before the first line for which ``stop`` is true."""
    found = set()
    for line in lines:
        if line.startswith(MASK):
            found.add(line[len(MASK):])
        elif stop(line):
            break
    return found


@pytest.fixture(params=["verbose", "actions"])
def run(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Outcome]:
    """``run(*args, env=, input=, expect=, canaries=, masked_first=, masked_later=, marker=)``.

    ``masked_first``: values that must be masked before any other line (on Actions). ``masked_later``: values
    that must be masked before the first line containing ``marker`` (before the end if there is none).
    """
    mode = request.param
    counter = itertools.count()
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None, input: str | bytes | None = None,
               expect: int | None = None, canaries: Iterable[str] = (), masked_first: Iterable[str] = (),
               masked_later: Iterable[str] = (), marker: str | None = None) -> Outcome:
        n = next(counter)
        full_env = dict(env or {})
        argv = list(args)
        files = {"GITHUB_OUTPUT": tmp_path / f"gh-output-{n}", "GITHUB_STEP_SUMMARY": tmp_path / f"gh-summary-{n}"}
        if mode == "verbose":
            argv = ["--verbose", *argv]
        else:
            for path in files.values():
                path.write_text("")
            full_env |= {"GITHUB_ACTIONS": "true"} | {k: str(v) for k, v in files.items()}
        with NoSpawn():
            result = runner.invoke(app, argv, env=full_env, input=input, catch_exceptions=False)
        written = {k: v.read_text() for k, v in files.items() if v.exists()}
        out = Outcome(mode, result.exit_code, result.stdout, result.stderr, result.output, written)
        canaries = list(canaries)
        on_actions = mode == "actions"
        assert "Traceback" not in out.output
        assert_clean(f"{mode} stdout of {args[0]}", out.stdout, canaries, masks_allowed=on_actions)
        assert_clean(f"{mode} stderr of {args[0]}", out.stderr, canaries)
        for name, text in written.items():
            assert_clean(f"{mode} {name} of {args[0]}", text, canaries)
        if on_actions:
            assert all(not line.startswith(MASK) for line in out.stderr.splitlines())
            lines = out.output.splitlines()
            first = masks_before(lines, lambda line: True)
            missing = [v[:12] for v in masked_first if v not in first]
            assert not missing, f"not masked before the first line: {missing}\n{out.output}"
            later = masks_before(lines, lambda line: marker is not None and marker in line)
            missing = [v[:12] for v in masked_later if v not in later]
            assert not missing, f"not masked before {marker!r}: {missing}\n{out.output}"
        else:
            assert written == {}
        if expect is not None:
            assert out.code == expect, out.output
        return out

    return invoke


# -- in process: errors and log records -----------------------------------------------------------------------
def visible_chain(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions a traceback would show: the cause, else the context unless suppressed."""
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)


def assert_error_clean(exc: CodexCIError, canaries: Iterable[str] = ()) -> None:
    canaries = list(canaries)
    chain = list(visible_chain(exc))
    assert all(isinstance(e, CodexCIError) for e in chain), f"an SDK exception is shown: {chain!r}"
    texts = [str(exc), repr(exc), exc.hint or "", repr(exc.args), "".join(traceback.format_exception(exc))]
    texts += [repr(e) for e in chain]
    for text in texts:
        assert_clean(f"{type(exc).__name__}", text, canaries)
    assert "\n" not in str(exc)


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Capture codex_ci's log at DEBUG (undoing what an earlier CLI run in this process set); returns a check."""
    logger = logging.getLogger("codex_ci")
    monkeypatch.setattr(logger, "propagate", True)
    monkeypatch.setattr(logger, "handlers", [])
    caplog.set_level(logging.DEBUG, logger="codex_ci")

    def check(canaries: Iterable[str] = ()) -> None:
        canaries = list(canaries)
        for record in caplog.records:
            texts = [record.getMessage(), repr(record.args)]
            if record.exc_info:
                texts.append("".join(traceback.format_exception(*record.exc_info)))
            for text in texts:
                assert_clean(f"log record {record.name}:{record.lineno}", text, canaries)

    return check


def expect_error(kind: type[CodexCIError], fn: Callable[[], object], canaries: Iterable[str] = (),
                 code: int | None = None) -> CodexCIError:
    with NoSpawn(), pytest.raises(kind) as caught:
        fn()
    assert_error_clean(caught.value, canaries)
    if code is not None:
        assert caught.value.exit_code == code, caught.value
    return caught.value


# == seed ========================================================================================================
def _truncated_after(data: dict[str, Any], value: str) -> str:
    text = json.dumps(data)
    return text[: text.index(value) + len(value) + 1]


def _jwt_with_payload(payload: bytes) -> str:
    b64 = base64.urlsafe_b64encode
    return ".".join(p.decode().rstrip("=") for p in (b64(b'{"alg":"none"}'), b64(payload), b64(b"CANARY-sig")))


def _with_tokens(**tokens: Any) -> dict[str, Any]:
    data = login(refresh_token="CANARY-rt-seed")
    data["tokens"].update(tokens)
    return data


def _without_account() -> dict[str, Any]:
    data = login(refresh_token="CANARY-rt-noacct")
    data["tokens"]["account_id"] = None
    claims = {"email": "ci@example.com", "canary": "CANARY-claim"}
    data["tokens"]["id_token"] = make_jwt(claims)
    return data


_GOOD = login(refresh_token="CANARY-rt-trunc")
# (id, the seed as text or bytes, how it is given, exit code, a fragment of the error message)
INVALID_SEEDS: list[tuple[str, str | bytes, str, int, str]] = [
    ("truncated-json", _truncated_after(_GOOD, "CANARY-rt-trunc"), "env", 3, "is cut short"),
    ("json-array", json.dumps(["CANARY-rt-arr", API_KEY, _GOOD["tokens"]["id_token"]]), "env", 3, "not an array"),
    ("json-string", json.dumps("CANARY-rt-str"), "env", 3, "not a string"),
    ("json-unknown-key", json.dumps({"CANARY-key": "CANARY-rt-key"}), "env", 3, "tokens is missing"),
    ("id-token-not-jwt", json.dumps(_with_tokens(id_token="CANARY-idtoken-not-a-jwt")), "env", 3,
     "tokens.id_token is not a JWT"),
    ("id-token-bad-payload", json.dumps(_with_tokens(id_token="CANARYhdr.CANARY~payload.CANARYsig")), "env", 3,
     "its payload does not decode"),
    ("access-token-array-payload",
     json.dumps(_with_tokens(access_token=_jwt_with_payload(b'["CANARY-in-payload"]'))), "env", 3,
     "payload is not a JSON object"),
    ("refresh-token-object", json.dumps(_with_tokens(refresh_token={"value": "CANARY-rt-obj"})), "env", 3,
     "tokens.refresh_token must be a non-empty string"),
    ("tokens-array", json.dumps({"auth_mode": "chatgpt", "tokens": ["CANARY-rt-list"]}), "env", 3,
     "tokens must be an object"),
    ("api-key-array", json.dumps({"auth_mode": "apikey", "OPENAI_API_KEY": [API_KEY]}), "env", 3,
     "OPENAI_API_KEY must be a string"),
    ("api-key-mode-without-key", json.dumps({"auth_mode": "apikey", "OPENAI_API_KEY": "", "x": API_KEY}), "env", 3,
     "OPENAI_API_KEY is empty"),
    ("last-refresh-garbage", json.dumps(login(refresh_token="CANARY-rt-lr", last_refresh="CANARY-when")), "env", 3,
     "last_refresh is not an RFC 3339"),
    ("no-account-id", json.dumps(_without_account()), "env", 3, "tokens.account_id is missing"),
    ("base64-of-garbage", base64.b64encode(b"CANARY-b64 garbage \x01\x02 not json").decode(), "env", 3,
     "neither JSON nor base64"),
    ("base64-of-broken-json", base64.b64encode(b'{"tokens": {"refresh_token": "CANARY-b64-rt"').decode(), "env", 3,
     "(base64-decoded) is cut short"),
    ("plain-text", "CANARY plain text secret", "env", 3, "neither JSON nor base64"),
    ("lone-surrogate", '{"tokens": {"refresh_token": "CANARY-\\ud800-rt"}}', "env", 3, "invalid unicode escapes"),
    ("deeply-nested", "[" * 100_000 + '"CANARY-deep"' + "]" * 100_000, "file", 3, "nested too deeply"),
    ("invalid-utf8", b'{"tokens": {"refresh_token": "CANARY-\xff-rt"}}', "file", 3, "not valid UTF-8"),
    ("nul-byte", b'{"tokens": {"refresh_token": "CANARY-nul\x00-rt"}}', "file", 3, "NUL bytes"),
    ("too-large", b'{"x": "' + b"CANARY-big " * 300_000 + b'"}', "file", 3, "too large"),
    ("stdin-garbage", "{CANARY-stdin-rt", "stdin", 3, "is not valid JSON"),
]


def seed_source(home: Path, tmp_path: Path, raw: str | bytes, via: str) -> tuple[list[str], dict[str, str], Any]:
    """The CLI arguments, environment and stdin that hand ``raw`` to ``codex-ci seed``."""
    args = ["seed", "--codex-home", str(home)]
    if via == "env":
        assert isinstance(raw, str)
        return args, {"CODEX_AUTH_JSON": raw}, None
    if via == "stdin":
        return [*args, "--from-file", "-"], {}, raw
    source = tmp_path / "seed-input"
    source.write_bytes(raw if isinstance(raw, bytes) else raw.encode())
    return [*args, "--from-file", str(source)], {}, None


def seed_canaries(raw: str | bytes) -> list[str]:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    found = re.findall(r"(?:sk-)?CANARY[\w~-]*|eyJ[\w.-]+", text)
    return sorted(set(found), key=len)[-20:] + ([text] if len(text) < 500 else [])


@pytest.mark.parametrize(("raw", "via", "code", "fragment"), [case[1:] for case in INVALID_SEEDS],
                         ids=[case[0] for case in INVALID_SEEDS])
def test_seed_rejects_bad_input(run, tmp_path: Path, raw: str | bytes, via: str, code: int, fragment: str) -> None:
    home = tmp_path / "home"
    args, env, stdin = seed_source(home, tmp_path, raw, via)
    out = run(*args, env=env, input=stdin, expect=code, canaries=seed_canaries(raw))
    assert fragment in out.stderr
    assert not (home / "auth.json").exists()


@pytest.mark.parametrize(("raw", "via", "code", "fragment"), [case[1:] for case in INVALID_SEEDS],
                         ids=[case[0] for case in INVALID_SEEDS])
def test_seed_core_errors(records, tmp_path: Path, raw: str | bytes, via: str, code: int, fragment: str) -> None:
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    exc = expect_error(CodexCIError, lambda: seed.seed(
        Home(tmp_path / "home"), data, "CODEX_AUTH_JSON", force=False, if_newer=False, lock_timeout=5),
        seed_canaries(raw))
    assert exc.exit_code == code and fragment in str(exc)
    records(seed_canaries(raw))


def test_seed_written_kept_forced_and_if_newer(run, tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = login(refresh_token="CANARY-rt-first")
    first |= {"personal_access_token": PAT, "agent_identity": {"secret": "CANARY-agent-secret"}}
    env = {"CODEX_AUTH_JSON": json.dumps(first)}
    seen = tokens_of(first) + ["CANARY-agent-secret"]
    out = run("seed", "--codex-home", str(home), env=env, expect=0, canaries=seen, masked_first=tokens_of(first))
    assert "wrote" in out.stderr
    if out.mode == "actions":
        assert "seeded<<" in out.files["GITHUB_OUTPUT"] and "| seeded | true |" in out.files["GITHUB_STEP_SUMMARY"]
    out = run("seed", "--codex-home", str(home), env=env, expect=0, canaries=seen, masked_first=tokens_of(first))
    assert "left unchanged" in out.stderr
    second = login(refresh_token="CANARY-rt-second")
    seen += tokens_of(second)
    env = {"CODEX_AUTH_JSON": base64.b64encode(json.dumps(second).encode()).decode()}
    seen.append(env["CODEX_AUTH_JSON"])
    out = run("seed", "--force", "--codex-home", str(home), env=env, expect=0, canaries=seen,
              masked_first=tokens_of(second))
    assert "replaced" in out.stderr
    older = login(refresh_token="CANARY-rt-older", last_refresh=OLD)
    seen += tokens_of(older)
    out = run("seed", "--if-newer", "--codex-home", str(home), env={"CODEX_AUTH_JSON": json.dumps(older)}, expect=0,
              canaries=seen, masked_first=tokens_of(older))
    assert "as new as the seed or newer" in out.stderr
    assert tokens_on_disk(home) == tokens_of(second)


def test_seed_api_key_login_from_stdin(run, tmp_path: Path) -> None:
    data = {"auth_mode": "apikey", "OPENAI_API_KEY": API_KEY}
    out = run("seed", "--from-file", "-", "--codex-home", str(tmp_path / "home"), input=json.dumps(data), expect=0,
              canaries=[API_KEY], masked_first=[API_KEY])
    assert "apikey" in out.stderr


# == refresh =====================================================================================================
def echoing(reply: Any, *values: str) -> Any:
    """The same status and error shape, with ``values`` echoed in the body and a header."""
    echo = " ".join(values)
    body = reply.body
    if reply.content_type == "application/json":
        obj = json.loads(body)
        if isinstance(obj, dict):
            if isinstance(obj.get("error"), dict):
                obj["error"] = {**obj["error"], "message": f"bad refresh token {echo}"}
            obj |= {"message": echo, "error_description": f"refresh_token {echo} is not valid"}
        body = json.dumps(obj).encode()
    else:
        body = body.replace(b"</body>", echo.encode() + b"</body>").replace(b"</html>", echo.encode() + b"</html>")
    return dataclasses.replace(reply, body=body, headers=(*reply.headers, ("X-Echo", values[0])))


@pytest.fixture
def echo_faults(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every canned answer of testing/tokenserver.py (but "drop") now echoes the refresh token it was sent, and a
    JWT, in its body and a header."""
    data = stale()
    values = [data["tokens"]["refresh_token"], data["tokens"]["access_token"]]
    for mode, reply in list(tokenserver._FAULTS.items()):
        if reply.status is not None:
            monkeypatch.setitem(tokenserver._FAULTS, mode, echoing(reply, *values))
    return values


@pytest.mark.parametrize("mode", [row.mode for row in ENDPOINT])
def test_refresh_every_endpoint_answer(run, tmp_path: Path, token_server: TokenServer, echo_faults: list[str],
                                       mode: str) -> None:
    row = endpoint(mode)
    home = tmp_path / "home"
    data = stale()
    write_login(home, data)
    token_server.set_mode(mode)
    args = ["refresh", "--codex-home", str(home), *RETRIES]
    if mode == "slow":
        token_server.delay = 0.6
        args += ["--timeout", "0.2"]
    run(*args, expect=row.exit_code, canaries=tokens_of(data) + echo_faults, masked_first=tokens_of(data))
    after = tokens_on_disk(home)
    assert (after != tokens_of(data)) == row.changed
    if not row.changed:
        assert after == tokens_of(data)


def test_refresh_ok_masks_the_new_tokens_before_reporting(run, tmp_path: Path, token_server: TokenServer) -> None:
    home = tmp_path / "home"
    data = stale()
    write_login(home, data)
    out = run("refresh", "--codex-home", str(home), expect=0, canaries=tokens_of(data), masked_first=tokens_of(data))
    new = tokens_on_disk(home)
    assert set(new).isdisjoint(tokens_of(data))
    backdate(home)
    forced = run("refresh", "--force", "--codex-home", str(home), expect=0, canaries=new, masked_first=new)
    newest = tokens_on_disk(home)
    for attempt, tokens in ((out, new), (forced, newest)):
        assert "refreshed: " in attempt.stderr
        if attempt.mode == "actions":
            assert set(tokens) <= masks_before(attempt.output.splitlines(), lambda line: "refreshed:" in line)
            assert "refreshed<<" in attempt.files["GITHUB_OUTPUT"]
    assert newest != new
    out = run("refresh", "--codex-home", str(home), expect=0, canaries=new + newest, masked_first=newest)
    assert "fresh enough" in out.stderr


def test_refresh_api_key_and_missing_and_invalid_files(run, tmp_path: Path, token_server: TokenServer) -> None:
    home = tmp_path / "home"
    write_login(home, {"auth_mode": "apikey", "OPENAI_API_KEY": API_KEY})
    out = run("refresh", "--codex-home", str(home), expect=0, canaries=[API_KEY], masked_first=[API_KEY])
    assert "nothing to refresh" in out.stderr
    broken = _truncated_after(_GOOD, "CANARY-rt-trunc")
    write_login(home, broken.encode())
    run("refresh", "--codex-home", str(home), expect=3, canaries=seed_canaries(broken))
    (home / "auth.json").unlink()
    run("refresh", "--codex-home", str(home), expect=4)
    assert token_server.posts == 0


def test_refresh_url_with_credentials_is_never_printed(run, tmp_path: Path, unused_port: int,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    write_login(home, stale())
    canaries = tokens_of(stale())
    for url, code in ((f"http://127.0.0.1:{unused_port}/oauth/token?key=CANARY-url-query", 6),
                      (f"http://user:CANARY-url-password@127.0.0.1:{unused_port}/oauth/token", 2),
                      ("http://CANARY-host.example/oauth/token", 2)):
        monkeypatch.setenv("CODEX_REFRESH_TOKEN_URL_OVERRIDE", url)
        out = run("refresh", "--codex-home", str(home), *RETRIES, expect=code, canaries=[url, *canaries])
        if code == 6:
            assert "cannot connect to 127.0.0.1" in out.stderr


class EchoServer(ThreadedHTTPService):
    """A token endpoint that answers with what ``reply(refresh_token, raw_body)`` builds from each request."""

    def __init__(self, reply: Callable[[str, bytes], tuple[int, str, bytes, dict[str, str]]]) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    token = str(json.loads(raw).get("refresh_token"))
                except ValueError:
                    token = ""
                outer.posts += 1
                status_code, kind, body, headers = reply(token, raw)
                self.send_response(status_code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self.posts = 0
        super().__init__(Handler)
        self.url = f"{self.base_url}/oauth/token"


def _js(obj: Any) -> bytes:
    return json.dumps(obj).encode()


ECHO_REPLIES: dict[str, tuple[Callable[[str, bytes], tuple[int, str, bytes, dict[str, str]]], int]] = {
    "error-message": (lambda rt, raw: (400, "application/json", _js({"error": {"code": "x", "message": rt}}), {}), 6),
    "error-description": (lambda rt, raw: (401, "application/json",
                                           _js({"error": "invalid_token", "error_description": rt}), {}), 5),
    "permanent-code-with-message": (lambda rt, raw: (401, "application/json", _js(
        {"error": {"code": "refresh_token_reused", "message": f"{rt} was already used"}}), {}), 5),
    "request-body-as-text": (lambda rt, raw: (500, "text/plain", b"could not parse " + raw, {"X-Token": rt}), 6),
    "request-body-as-json-string": (lambda rt, raw: (502, "application/json", _js(raw.decode()), {}), 6),
    "redirect-with-token": (lambda rt, raw: (302, "text/html", b"", {"Location": f"http://127.0.0.1/?rt={rt}"}), 6),
    "unusable-tokens-200": (lambda rt, raw: (200, "application/json",
                                             _js({"access_token": rt, "id_token": rt, "refresh_token": rt}), {}), 6),
    "non-string-token-200": (lambda rt, raw: (200, "application/json", _js({"refresh_token": [rt]}), {}), 6),
    "html-200": (lambda rt, raw: (200, "text/html", f"<html>{rt}</html>".encode(), {}), 6),
}


@pytest.mark.parametrize("case", list(ECHO_REPLIES))
def test_refresh_never_prints_what_the_server_says(run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   case: str) -> None:
    reply, code = ECHO_REPLIES[case]
    home = tmp_path / "home"
    data = stale("CANARY-rt-echo")
    write_login(home, data)
    with EchoServer(reply) as server:
        monkeypatch.setenv("CODEX_REFRESH_TOKEN_URL_OVERRIDE", server.url)
        run("refresh", "--codex-home", str(home), *RETRIES, expect=code, canaries=tokens_of(data),
            masked_first=tokens_of(data))
    assert server.posts == 1
    assert tokens_on_disk(home) == tokens_of(data)


def test_refresh_does_not_print_an_error_code_that_is_the_token(run, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    data = stale("CANARY_rt_shaped_like_a_code")
    write_login(home, data)
    with EchoServer(lambda rt, raw: (400, "application/json", _js({"error": {"code": rt, "message": rt}}), {})
                    ) as server:
        monkeypatch.setenv("CODEX_REFRESH_TOKEN_URL_OVERRIDE", server.url)
        run("refresh", "--codex-home", str(home), *RETRIES, expect=6, canaries=tokens_of(data))


@pytest.mark.parametrize("mode", [row.mode for row in ENDPOINT])
def test_refresh_core_errors(records, tmp_path: Path, token_server: TokenServer, echo_faults: list[str],
                             mode: str) -> None:
    row = endpoint(mode)
    home = tmp_path / "home"
    data = stale()
    write_login(home, data)
    token_server.set_mode(mode)
    if mode == "slow":
        token_server.delay = 0.6
    policy = Policy(timedelta(hours=1), timedelta(days=8))
    canaries = tokens_of(data) + echo_faults

    def call() -> object:
        return rotate.refresh_home(Home(home), policy, lock_timeout=5, client=TokenClient(read_timeout=0.2, attempts=1))

    if row.exit_code == 0:
        with NoSpawn():
            result = call()
        assert result.refreshed
        assert_clean("Result", repr(result), canaries + tokens_on_disk(home))
    else:
        expect_error(CodexCIError, call, canaries, row.exit_code)
    records(canaries + tokens_on_disk(home))


@pytest.mark.parametrize("case", list(ECHO_REPLIES))
def test_refresh_core_errors_when_the_server_echoes(records, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    case: str) -> None:
    reply, code = ECHO_REPLIES[case]
    home = tmp_path / "home"
    data = stale("CANARY-rt-echo")
    write_login(home, data)
    with EchoServer(reply) as server:
        monkeypatch.setenv("CODEX_REFRESH_TOKEN_URL_OVERRIDE", server.url)
        expect_error(CodexCIError, lambda: rotate.refresh_home(
            Home(home), Policy(timedelta(hours=1), timedelta(days=8)), lock_timeout=5, client=TokenClient(attempts=1)),
            tokens_of(data), code)
    records(tokens_of(data))


def test_refresh_retries_log_no_secret(records, caplog: pytest.LogCaptureFixture, tmp_path: Path,
                                       token_server: TokenServer, echo_faults: list[str]) -> None:
    home = tmp_path / "home"
    data = stale()
    write_login(home, data)
    token_server.set_mode("http503", count=1)
    client = TokenClient(attempts=3, backoff=0.01)
    with NoSpawn():
        result = rotate.refresh_home(Home(home), Policy(timedelta(hours=1), timedelta(days=8)), lock_timeout=5,
                                    client=client)
    assert result.refreshed and token_server.posts == 2
    assert any("retrying" in record.getMessage() for record in caplog.records)
    records(tokens_of(data) + echo_faults + tokens_on_disk(home))


# == status ======================================================================================================
def test_status_of_healthy_expired_api_key_and_invalid_files(run, tmp_path: Path) -> None:
    home = tmp_path / "home"
    cases: list[tuple[dict[str, Any] | bytes, int]] = [
        (login(refresh_token="CANARY-rt-healthy", expires_in=86400), 0),
        (login(refresh_token="CANARY-rt-expiring", expires_in=600), 20),
        (stale("CANARY-rt-expired"), 21),
        ({"auth_mode": "apikey", "OPENAI_API_KEY": API_KEY}, 0),
        (_truncated_after(_GOOD, "CANARY-rt-trunc").encode(), 3),
        (json.dumps(_with_tokens(id_token="CANARY-idtoken-not-a-jwt")).encode(), 3),
        (json.dumps(["CANARY-rt-arr", API_KEY]).encode(), 3),
        (b"CANARY-\xff-not-utf8", 3),
    ]
    for data, code in cases:
        write_login(home, data)
        canaries = tokens_of(data) if isinstance(data, dict) else seed_canaries(data)
        for extra in ((), ("--json",)):
            out = run("status", "--codex-home", str(home), *extra, expect=code, canaries=canaries)
            if extra:
                assert json.loads(out.stdout)["health"]
    (home / "auth.json").unlink()
    run("status", "--codex-home", str(home), expect=4)


@pytest.mark.parametrize("run", ["actions"], indirect=True)
def test_status_on_actions_prints_no_token_and_no_mask(run, tmp_path: Path) -> None:
    """status reads the login but prints none of it, and keeps stdout machine-readable: no mask lines either."""
    home = tmp_path / "home"
    data = login(refresh_token="CANARY-rt-status")
    write_login(home, data)
    run("status", "--codex-home", str(home), expect=0, canaries=tokens_of(data))


def test_status_core_is_plain_data(records, tmp_path: Path) -> None:
    home = tmp_path / "home"
    for data in (login(refresh_token="CANARY-rt-x"), _truncated_after(_GOOD, "CANARY-rt-trunc").encode()):
        write_login(home, data)
        with NoSpawn():
            report = status.read_status(Home(home), min_ttl=timedelta(hours=1), lock_timeout=5)
        canaries = tokens_of(data) if isinstance(data, dict) else seed_canaries(data)
        assert_clean("status", repr(report) + json.dumps(report.as_dict()) + status.render(report), canaries)
    records([*tokens_of(login(refresh_token="CANARY-rt-x"))])


# == stores ======================================================================================================
def put(target: StoreTarget, data: dict[str, Any] | str, expected: str | None = None) -> str:
    value = data if isinstance(data, str) else json.dumps(data, indent=2)
    return target.open().write(value, expected)


def put_foreign_with_secret(target: StoreTarget) -> list[str]:
    """A value at the target in a shape codex-ci never writes, carrying secrets; returns them."""
    secret = "CANARY-foreign-rt"
    if target.kind == "file":
        path = Path(target.url[len("file://"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"format": 1, "version": [secret], "value": {"refresh_token": secret}}))
    elif target.kind == "vault":
        target.extra["root_client"].secrets.kv.v2.create_or_update_secret(
            target.extra["path"], {"refresh_token": secret, "auth_json": [secret, API_KEY]}, mount_point="secret")
    elif target.kind == "aws":
        target.extra["client"].create_secret(Name=target.extra["name"], SecretBinary=f"{secret} {API_KEY}".encode())
    else:
        target.extra["server"].put(target.extra["name"], b"\xff" + f"{secret} {API_KEY}".encode())
    return [secret, API_KEY]


def refusals(target: StoreTarget) -> list[str]:
    """The faults of testing/tables.py that make the target's store refuse every call: a server unreachable or
    denying its credentials; a directory in the file store's place."""
    return [row.fault for row in STORE_FAULTS if row.kind == target.kind and row.fault in ("unreachable", "forbidden")]


def broken_target(target: StoreTarget, fault: str, where: Path) -> tuple[StoreTarget, dict[str, str]]:
    """A target and the environment in which its store fails with ``fault``: a server's ``env`` fault of
    testing/tables.py, or a file store's ``path`` fault, made under ``where``."""
    row = store_fault(target.kind, fault)
    if row.injected == "env":
        env = target.unreachable_env if fault == "unreachable" else target.denied_env
        assert env is not None
        return target, env
    assert row.injected == "path", row
    path = where / fault / "store.json"
    if fault == "parent-is-a-file":
        path.parent.parent.mkdir(parents=True, exist_ok=True)
        path.parent.write_text("")
    else:
        path.mkdir(parents=True)
    return dataclasses.replace(target, url=f"file://{path}"), {}


def store_cmd(target: StoreTarget, home: Path, command: str, *extra: str) -> list[str]:
    option = {"restore": "--from", "persist": "--to"}.get(command, "--store")
    return [command, option, target.url, "--codex-home", str(home), *extra]


class Wrapped:
    """A real store with every Protocol member passed through; subclasses change ``write``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    @property
    def url(self) -> str:
        return str(self.inner.url)

    @property
    def key(self) -> str:
        return str(self.inner.key)

    @property
    def compare_and_set(self) -> bool:
        return bool(self.inner.compare_and_set)

    @property
    def missing_hint(self) -> str | None:
        hint: str | None = self.inner.missing_hint
        return hint

    def check_writable(self) -> None:
        self.inner.check_writable()

    def read(self) -> Versioned | None:
        result: Versioned | None = self.inner.read()
        return result

    def write(self, value: str, expected: str | None) -> str:
        return str(self.inner.write(value, expected))

    def sibling(self, suffix: str) -> Any:
        return self.inner.sibling(suffix)


class RacingStore(Wrapped):
    """Before each of our writes, another runner writes an older login: every compare-and-set loses."""

    def __init__(self, inner: Any, rival: Callable[[int], str]) -> None:
        super().__init__(inner)
        self.rival, self.rivals = rival, 0

    def write(self, value: str, expected: str | None) -> str:
        current = self.inner.read()
        self.rivals += 1
        self.inner.write(self.rival(self.rivals), current.version if current else None)
        return str(self.inner.write(value, expected))


class BrokenWrites(Wrapped):
    """Reads and the lease work; writes of the login itself fail the way ``broken`` (a real store) fails."""

    def __init__(self, inner: Any, broken: Any) -> None:
        super().__init__(inner)
        self.broken = broken

    def write(self, value: str, expected: str | None) -> str:
        return str(self.broken.write(value, expected))


def serve(monkeypatch: pytest.MonkeyPatch, target: StoreTarget, wrap: Callable[[Any], Any]) -> None:
    """Make the CLI open ``wrap(store)`` for the target's URL."""
    import codex_ci.stores as stores

    real, url = stores.open_store, target.open().url

    def opened(value: str, env: Any = None) -> Any:
        store = real(value, env)
        return wrap(store) if store.url == url else store

    monkeypatch.setattr(stores, "open_store", opened)


def test_store_lifecycle(run, tmp_path: Path, store_target: StoreTarget, token_server: TokenServer) -> None:
    """restore, refresh --store, persist (unchanged, then written), keepalive, status --store."""
    env = store_target.env
    first = stale()
    seen = tokens_of(first) + credentials(env)
    put(store_target, first)
    a, c = tmp_path / "a", tmp_path / "c"

    run(*store_cmd(store_target, a, "restore"), env=env, expect=0, canaries=seen, masked_first=tokens_of(first))
    out = run(*store_cmd(store_target, a, "refresh"), env=env, expect=0, canaries=seen,
              masked_first=tokens_of(first))
    rotated = tokens_on_disk(a)
    seen += rotated
    if out.mode == "actions":
        assert set(rotated) <= masks_before(out.output.splitlines(), lambda line: "refreshed:" in line)
    out = run(*store_cmd(store_target, a, "persist"), env=env, expect=0, canaries=seen, masked_first=rotated)
    assert "has not changed" in out.stderr
    backdate(a)
    run("refresh", "--force", "--codex-home", str(a), env=env, expect=0, canaries=seen, masked_first=rotated)
    local_only = tokens_on_disk(a)
    seen += local_only
    out = run(*store_cmd(store_target, a, "persist"), env=env, expect=0, canaries=seen, masked_first=local_only)
    assert "wrote" in out.stderr
    current = store_target.open().read()
    assert current is not None
    store_target.open().write(backdated(current.value), current.version)
    out = run(*store_cmd(store_target, c, "keepalive"), env=env, expect=0, canaries=seen, masked_first=local_only)
    kept_alive = tokens_on_disk(c)
    seen += kept_alive
    assert kept_alive != local_only and "health: healthy" in out.stderr
    if out.mode == "actions":
        assert set(kept_alive) <= masks_before(out.output.splitlines(), lambda line: "refreshed:" in line)
    out = run(*store_cmd(store_target, c, "status", "--json"), env=env, expect=0, canaries=seen)
    assert json.loads(out.stdout)["store"]["in_sync"] is True
    assert token_server.posts == 3 and token_server.reused == 0


def test_store_unreachable_or_denied(run, tmp_path: Path, store_target: StoreTarget,
                                     token_server: TokenServer) -> None:
    data = stale()
    seen = tokens_of(data) + credentials(store_target.env)
    home = tmp_path / "home"
    write_login(home, data)
    for fault in refusals(store_target):
        target, env = broken_target(store_target, fault, tmp_path / "broken")
        code = store_fault(store_target.kind, fault).exit_code
        canaries = seen + credentials(env)
        # refresh --store and keepalive start with the same read as restore
        run(*store_cmd(target, tmp_path / "new", "refresh"), env=env, expect=code, canaries=canaries)
        run(*store_cmd(target, home, "persist"), env=env, expect=code, canaries=canaries,
            masked_first=tokens_of(data))
        run(*store_cmd(target, home, "status"), env=env, expect=code, canaries=canaries)
    assert tokens_on_disk(home) == tokens_of(data) and token_server.posts == 0


def test_store_foreign_and_invalid_payloads(run, tmp_path: Path, store_target: StoreTarget,
                                            token_server: TokenServer) -> None:
    env = store_target.env
    mine = login(refresh_token="CANARY-rt-local", last_refresh=OLD)
    home = tmp_path / "home"
    write_login(home, mine)
    before = (home / "auth.json").read_bytes()
    seen = tokens_of(mine) + credentials(env) + put_foreign_with_secret(store_target)
    code = store_fault(store_target.kind, "foreign").exit_code
    for command in ("restore", "status", "keepalive"):
        run(*store_cmd(store_target, home, command), env=env, expect=code, canaries=seen)
    assert (home / "auth.json").read_bytes() == before

    other = dataclasses.replace(store_target, url=store_target.url + "-broken")
    broken = _truncated_after(stale("CANARY-rt-stored-trunc"), "CANARY-rt-stored-trunc")
    put(other, broken)
    seen += seed_canaries(broken)
    for command in ("restore", "refresh"):
        run(*store_cmd(other, home, command), env=env, expect=store_fault(other.kind, "truncated").exit_code,
            canaries=seen)
    assert (home / "auth.json").read_bytes() == before
    run(*store_cmd(other, home, "persist"), env=env, expect=0, canaries=seen, masked_first=tokens_of(mine))
    assert token_server.posts == 0


def test_store_compare_and_set_conflicts(run, tmp_path: Path, store_target: StoreTarget,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    env = store_target.env
    home = tmp_path / "home"
    base = login(refresh_token="CANARY-rt-base", last_refresh="2026-01-01T00:00:00Z")
    put(store_target, base)
    run(*store_cmd(store_target, home, "restore"), env=env, expect=0)
    (home / "codex-ci-state.json").unlink()  # a new login with no base: ordered by time, retried on conflicts
    mine = login(refresh_token="CANARY-rt-mine", last_refresh="2026-01-03T00:00:00Z")
    write_login(home, mine)

    def rival(n: int) -> str:
        return json.dumps(login(refresh_token=f"CANARY-rt-rival-{n}", last_refresh="2026-01-02T00:00:00Z"))

    seen = tokens_of(base) + tokens_of(mine) + credentials(env)
    serve(monkeypatch, store_target, lambda store: RacingStore(store, rival))
    out = run(*store_cmd(store_target, home, "persist"), env=env, expect=ExitCode.CONFLICT, canaries=seen,
              masked_first=tokens_of(mine))
    assert "kept changing" in out.stderr
    monkeypatch.undo()
    newer = login(refresh_token="CANARY-rt-newer", last_refresh="2026-02-01T00:00:00Z")
    current = store_target.open().read()
    assert current is not None
    put(store_target, newer, current.version)
    out = run(*store_cmd(store_target, home, "persist"), env=env, expect=ExitCode.CONFLICT,
              canaries=seen + tokens_of(newer), masked_first=tokens_of(mine))
    assert "superseded" in out.stderr and "persist --force" in out.stderr


def test_store_refresh_failures(run, tmp_path: Path, store_target: StoreTarget, token_server: TokenServer,
                                monkeypatch: pytest.MonkeyPatch, echo_faults: list[str]) -> None:
    env = store_target.env
    data = stale()
    put(store_target, data)
    seen = tokens_of(data) + credentials(env) + echo_faults
    token_server.set_mode("reused")
    run(*store_cmd(store_target, tmp_path / "a", "refresh"), env=env, expect=endpoint("reused").exit_code,
        canaries=seen, masked_first=tokens_of(data))
    lease = store_target.open().sibling("lease").read()
    assert lease is not None and json.loads(lease.value)["holder"] is None
    token_server.set_mode("ok")
    unwritable = "parent-is-a-file" if store_target.kind == "file" else "unreachable"
    target, broken_env = broken_target(store_target, unwritable, tmp_path / "broken")
    broken = target.open(broken_env)
    serve(monkeypatch, store_target, lambda store: BrokenWrites(store, broken))
    home = tmp_path / "b"
    code = store_fault(store_target.kind, unwritable).exit_code
    out = run(*store_cmd(store_target, home, "refresh"), env=env, expect=code, canaries=seen + credentials(broken_env),
              masked_first=tokens_of(data))
    assert "refreshed locally but could not save" in out.stderr
    rotated = tokens_on_disk(home)
    assert rotated != tokens_of(data)
    if out.mode == "actions":
        assert set(rotated) <= masks_before(out.output.splitlines(), lambda line: "error:" in line)


class EchoStore(ThreadedHTTPService):
    """An HTTP store server (or a proxy before it) that answers ``reply(method, headers, dump)`` to every request;
    ``dump`` is the whole request, credentials and payload included."""

    def __init__(self, reply: Callable[[str, Any, str], tuple[int, dict[str, Any]]], content_type: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                dump = f"{self.command} {self.path}\n{self.headers}\n{raw.decode('utf-8', 'replace')}"
                status_code, body = reply(self.command, self.headers, dump)
                data = _js(body)
                self.send_response(status_code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-Echo", dump[:300].replace("\n", " ").replace("\r", " "))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

        super().__init__(Handler)
        self.base = self.base_url


@pytest.fixture
def echoing_store(store_target: StoreTarget) -> Iterator[tuple[dict[str, str], dict[str, bool]]]:
    """The target's environment, pointed at a server that echoes each request in its error; reads answer "absent"
    until ``flags["fail_reads"]`` is set, so a write gets to send the login."""
    flags = {"fail_reads": False}
    if store_target.kind == "file":
        pytest.skip("the file store has no server")
    if store_target.kind == "gcp":
        import grpc

        from testing.fake_secretmanager import Fail

        def hook(read: bool) -> Callable[[Any], None]:
            def echo(request: Any) -> None:
                if flags["fail_reads"] or not read:
                    raise Fail(grpc.StatusCode.INVALID_ARGUMENT, f"rejected {request}")
            return echo

        for method, read in (("AccessSecretVersion", True), ("GetSecret", True), ("CreateSecret", False),
                             ("AddSecretVersion", False), ("UpdateSecret", False)):
            store_target.extra["server"].hooks[method] = hook(read)
        yield store_target.env, flags
        return

    def reply(method: str, headers: Any, dump: str) -> tuple[int, dict[str, Any]]:
        read = method == "GET" or "GetSecretValue" in str(headers.get("X-Amz-Target"))
        if read and not flags["fail_reads"]:
            return (404, {"errors": []}) if store_target.kind == "vault" else (
                400, {"__type": "ResourceNotFoundException", "message": dump})
        return 400, {"errors": [dump], "message": dump, "__type": "ValidationException"}

    kind = "application/json" if store_target.kind == "vault" else "application/x-amz-json-1.1"
    with EchoStore(reply, kind) as server:
        where = {"VAULT_ADDR": server.base} if store_target.kind == "vault" else {"AWS_ENDPOINT_URL": server.base}
        yield store_target.env | where, flags


def test_store_servers_that_echo_the_request(run, tmp_path: Path, store_target: StoreTarget, echoing_store) -> None:
    env, flags = echoing_store
    data = login(refresh_token="CANARY-rt-echoed")
    home = tmp_path / "home"
    write_login(home, data)
    seen = tokens_of(data) + credentials(env)
    code = store_fault(store_target.kind, "echo").exit_code
    out = run(*store_cmd(store_target, home, "persist"), env=env, expect=code, canaries=seen,
              masked_first=tokens_of(data))
    assert "cannot write" in out.stderr or "cannot create" in out.stderr or "add a version" in out.stderr
    flags["fail_reads"] = True
    run(*store_cmd(store_target, tmp_path / "new", "restore"), env=env, expect=code, canaries=seen)
    run(*store_cmd(store_target, home, "status"), env=env, expect=code, canaries=seen)


def test_store_core_errors_when_the_server_echoes(records, tmp_path: Path, store_target: StoreTarget,
                                                  echoing_store) -> None:
    env, flags = echoing_store
    data = login(refresh_token="CANARY-rt-echoed")
    home = tmp_path / "home"
    write_login(home, data)
    seen = tokens_of(data) + credentials(env)
    store = open_store(store_target.url, {**os.environ, **env})
    code = store_fault(store_target.kind, "echo").exit_code
    expect_error(StoreError, lambda: sync.persist(Home(home), store, lock_timeout=5), seen, code)
    flags["fail_reads"] = True
    expect_error(StoreError, lambda: sync.restore(Home(tmp_path / "new"), store, lock_timeout=5), seen, code)
    records(seen)


def test_store_core_errors(records, tmp_path: Path, store_target: StoreTarget, token_server: TokenServer) -> None:
    """restore / persist / distributed refresh / store_view in process: every error and log record is clean."""
    home = tmp_path / "home"
    data = stale()
    seen = tokens_of(data) + credentials(store_target.env)
    write_login(home, data)
    lock = {"lock_timeout": 5.0}
    policy = Policy(timedelta(hours=1), timedelta(days=8))

    def refresh(store: Any) -> object:
        return distributed.distributed_refresh(Home(home), store, policy, lease_ttl=timedelta(minutes=2), lease_wait=5,
                                        client=TokenClient(attempts=1), **lock)

    for fault in refusals(store_target):
        target, env = broken_target(store_target, fault, tmp_path / "broken")
        store = target.open(env)
        for call in (lambda s=store: sync.restore(Home(tmp_path / "new"), s, **lock),
                     lambda s=store: sync.persist(Home(home), s, **lock), lambda s=store: refresh(s),
                     lambda s=store: status.store_view(s, Home(home))):
            expect_error(StoreError, call, seen + credentials(env), store_fault(store_target.kind, fault).exit_code)

    seen += put_foreign_with_secret(store_target)
    store = store_target.open()
    for call in (lambda: sync.restore(Home(home), store, **lock), lambda: refresh(store),
                 lambda: status.store_view(store, Home(home))):
        expect_error(StoredValueError, call, seen, store_fault(store_target.kind, "foreign").exit_code)

    other = store_target.open().sibling("other")
    first_version = other.write(
        json.dumps(login(refresh_token="CANARY-rt-o", last_refresh="2026-01-01T00:00:00Z")), None)
    sync.restore(Home(home), other, **lock)
    (home / "codex-ci-state.json").unlink()  # a new login with no base: ordered by time, retried on conflicts
    mine = login(refresh_token="CANARY-rt-mine", last_refresh="2026-01-05T00:00:00Z")
    write_login(home, mine)
    seen += tokens_of(mine)

    def rival(n: int) -> str:
        value = login(refresh_token=f"CANARY-rt-rival-{n}", last_refresh="2026-01-02T00:00:00Z")
        seen.extend(tokens_of(value))
        return json.dumps(value)

    racing = RacingStore(other, rival)
    exc = expect_error(ConflictError, lambda: sync.persist(Home(home), racing, **lock), seen, ExitCode.CONFLICT)
    assert racing.rivals == sync.PERSIST_ATTEMPTS and not isinstance(exc, StoreConflict)
    with pytest.raises(StoreConflict) as caught:
        other.write('{"x": 1}', first_version)
    assert_error_clean(caught.value, seen)
    records(seen + tokens_on_disk(home))


# == no secret in argv: the composite action with a sampler ========================================================
class ArgvSampler(threading.Thread):
    """Samples the argv of every new descendant process of this one, every few ms, until stopped (at most 120 s).

    Sampling can miss a process that lives for less than a sample (a shell between fork and exec); the checks
    below therefore also require that it saw each codex-ci command the action ran."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="argv-sampler")
        self.root = os.getpid()
        self.stop = threading.Event()
        self.argv: dict[int, set[tuple[str, ...]]] = {}
        self.parent: dict[int, int] = {}
        self.samples = 0
        self.old = self._descendants()

    def _descendants(self) -> set[int]:
        """Descendants of this process; a pid's parent is read once (it only changes to a reaper when the parent
        dies, and then the process was already a descendant)."""
        alive = {int(name) for name in os.listdir("/proc") if name.isdigit()}
        for pid in alive - self.parent.keys():
            try:
                with open(f"/proc/{pid}/stat", "rb") as handle:
                    info = handle.read()
                self.parent[pid] = int(info[info.rindex(b")") + 2:].split()[1])
            except (OSError, ValueError):
                continue
        children: dict[int, list[int]] = {}
        for pid in alive:
            if pid in self.parent:
                children.setdefault(self.parent[pid], []).append(pid)
        found, todo = set(), [self.root]
        while todo:
            for child in children.get(todo.pop(), []):
                if child not in found:
                    found.add(child)
                    todo.append(child)
        return found

    def run(self) -> None:
        deadline = time.monotonic() + 120
        while not self.stop.is_set() and time.monotonic() < deadline:
            self.samples += 1
            for pid in self._descendants() - self.old:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as handle:
                        raw = handle.read()
                except OSError:
                    continue
                if raw:
                    argv = tuple(part.decode("utf-8", "replace") for part in raw.rstrip(b"\0").split(b"\0"))
                    self.argv.setdefault(pid, set()).add(argv)
            time.sleep(0.001)

    def __enter__(self) -> ArgvSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(timeout=10)

    def check(self, canaries: Iterable[str]) -> list[tuple[str, ...]]:
        everything = sorted({argv for seen in self.argv.values() for argv in seen})
        canaries = list(canaries)
        for argv in everything:
            assert_clean("a child process's argv", "\0".join(argv), canaries)
        runs_codex_ci = {pid for pid, seen in self.argv.items()
                         if any("codex_ci" in a or a.endswith("/codex-ci") for v in seen for a in v)}
        assert runs_codex_ci, "no codex-ci process was sampled"
        children = [self.argv.get(pid) for pid, ppid in self.parent.items() if ppid in runs_codex_ci]
        assert not [c for c in children if c], f"codex-ci started processes: {children}"
        return everything


@pytest.fixture
def machine(tmp_path: Path) -> Any:
    """A runner machine; the action installs codex-ci from this checkout into its private venv, as on GitHub."""
    from actionrunner import Runner

    return Runner(tmp_path / "runner")


def codex_ci_commands(seen: list[tuple[str, ...]]) -> set[str]:
    """The codex-ci commands among the sampled argvs: ``python -m codex_ci CMD`` or ``…/bin/codex-ci CMD``."""
    commands = set()
    for argv in seen:
        for i, part in enumerate(argv[:-1]):
            if part.endswith("/codex-ci") or (part == "codex_ci" and i and argv[i - 1] == "-m"):
                commands.add(argv[i + 1])
                break
    return commands


def test_action_seed_only_puts_no_secret_in_argv(machine: Any, token_server: TokenServer) -> None:
    seed = stale()
    job = machine.job(canaries=tokens_of(seed))
    with ArgvSampler() as sampler:
        result = job.run(ROOT, {"auth-json": json.dumps(seed)})
    assert result.status == 0, "\n".join(result.log)
    assert result.leaks == [] and result.outputs["refreshed"] == "true"
    rotated = tokens_on_disk(Path(result.outputs["codex-home"]))
    assert set(tokens_of(seed) + rotated) <= job.masks
    seen = sampler.check(tokens_of(seed) + rotated + [json.dumps(seed)])
    assert {"seed", "refresh"} <= codex_ci_commands(seen), (sampler.samples, seen)


def test_action_with_a_file_store_puts_no_secret_in_argv(machine: Any, token_server: TokenServer,
                                                         tmp_path: Path) -> None:
    seed = stale()
    store = f"file://{tmp_path / 'store' / 'auth.json'}"
    job = machine.job(canaries=tokens_of(seed))
    with ArgvSampler() as sampler:
        result = job.run(ROOT, {"auth-json": json.dumps(seed), "store": store})
        assert result.status == 0, "\n".join(result.log)
        persisted = job.run(ROOT / "persist")
    assert persisted.status == 0, "\n".join(persisted.log)
    assert result.leaks == [] and persisted.leaks == []
    assert persisted.outputs["persisted"] == "unchanged"
    rotated = tokens_on_disk(Path(result.outputs["codex-home"]))
    seen = sampler.check(tokens_of(seed) + rotated + [json.dumps(seed)])
    assert {"restore", "seed", "persist", "refresh"} <= codex_ci_commands(seen), (sampler.samples, seen)


# == real processes: stdin, a pipe, the interleaved stream ==========================================================
def test_real_process_masks_first_in_the_interleaved_stream(tmp_path: Path) -> None:
    """As a runner sees it: stdout and stderr on one pipe. The seed arrives on stdin and by a pipe (/dev/fd)."""
    data = login(refresh_token="CANARY-rt-process")
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env |= {"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(tmp_path / "out"),
            "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"), "CODEX_SEED": json.dumps(data)}
    commands = [
        [sys.executable, "-m", "codex_ci", "seed", "--from-file", "-", "--codex-home", str(tmp_path / "a")],
        ["bash", "-c", f'"{sys.executable}" -m codex_ci seed --codex-home "{tmp_path / "b"}" '
                       '--from-file <(printf %s "$CODEX_SEED")'],
    ]
    for command in commands:
        proc = subprocess.run(command, env=env, input=json.dumps(data), capture_output=False, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout
        lines = proc.stdout.splitlines()
        assert set(tokens_of(data)) <= masks_before(lines, lambda line: True), proc.stdout
        assert_clean("process output", proc.stdout, tokens_of(data), masks_allowed=True)
    for name in ("out", "summary"):
        assert_clean(name, (tmp_path / name).read_text(), tokens_of(data))
    assert tokens_on_disk(tmp_path / "a") == tokens_on_disk(tmp_path / "b") == tokens_of(data)
