"""Hostile input: whatever a runner's environment, secret, disk or store holds, codex-ci answers with a documented
exit code and one error line, never a traceback or a secret, and never changes a good auth.json when it fails.

Two halves. Hypothesis properties drive the CLI in process (the ``cli`` fixture already fails on a traceback, a
canary or a JWT in the output) with fuzzed logins, auth.json files, stored payloads, store URLs, durations and
environment values; ``scripts/soak`` (CODEX_CI_SOAK=1) runs ten times more examples. Then named regression cases,
each with its exact exit code. A case that shows a bug in codex_ci is ``xfail(strict=True)`` with the bug in its
reason, so the suite stays green, the bug stays visible, and the fix turns the case into an XPASS to un-mark.

The fuzzers keep every file they touch under a fresh temporary directory (also the working directory and HOME)
and send requests only to loopback ports this file holds.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import re
import socket
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import certifi
import httpx
import pytest
from conftest import login, write_login
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from codex_ci.authfile import AuthFile
from codex_ci.errors import ExitCode
from codex_ci.stores import parse_url
from codex_ci.stores.file import FileStore
from testing.soak import SOAK, scale
from testing.tokenserver import AUTH_CLAIM, TokenServer, decode_jwt_payload, make_jwt

# -- the contract ------------------------------------------------------------------------------------------------

DOCUMENTED = frozenset({0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 20, 21})  # README's table, less 1 (a bug), 130 and 143
HEALTH = frozenset({0, 3, 4, 8, 20, 21})  # what status and keepalive report without an error line
CODEX_MODES = {"chatgpt", "apikey", "chatgptAuthTokens", "agentIdentity", "personalAccessToken", "bedrockApiKey"}
OLD = "2020-01-01T00:00:00.000000Z"  # the good login's last_refresh: every valid stored login is newer



# -- helpers -----------------------------------------------------------------------------------------------------

def case(name: str, *values: Any, bug: str | None = None) -> Any:
    """A named regression case; ``bug`` marks it a strict xfail whose reason is the bug report."""
    marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
    return pytest.param(*values, id=name, marks=marks)


def is_usage_error(run: Any) -> bool:
    """Click's own message for an option it could not convert (exit 2, typer's format, documented as USAGE)."""
    return run.exit_code == ExitCode.USAGE and run.stderr.startswith("Usage: ")


def assert_well_behaved(run: Any, command: str, guarded: tuple[Path, bytes | None] | None = None) -> None:
    """The hostile-input contract: a documented exit code; every stderr line is codex-ci's; a failure is one
    ``codex-ci: error:`` line, the last; status health codes need none; a failure leaves ``guarded`` as it was."""
    assert run.exit_code in DOCUMENTED, f"exit {run.exit_code}: {run.stderr!r}"
    if guarded is not None and run.exit_code != 0:
        path, before = guarded
        assert read_or_none(path) == before, f"{path} changed although the command failed: {run.stderr!r}"
    if is_usage_error(run):
        return
    lines = [line for line in run.stderr.split("\n") if line.strip()]  # not splitlines: \f is no line break
    assert all(line.startswith("codex-ci: ") for line in lines), run.stderr
    errors = [line for line in lines if line.startswith("codex-ci: error: ")]
    if errors:
        assert run.exit_code != 0 and errors == [lines[-1]], run.stderr
    else:
        assert run.exit_code == 0 or (command in ("status", "keepalive") and run.exit_code in HEALTH), run.stderr


def fuzzed(run: Any, command: str, guarded: tuple[Path, bytes | None] | None = None) -> None:
    """``assert_well_behaved`` for a Hypothesis example, which also counts its exit code in the statistics."""
    event(f"{command} exit {run.exit_code}")
    assert_well_behaved(run, command, guarded)


def read_or_none(path: Path) -> bytes | None:
    """The bytes of a regular file (not through a symlink), None when there is none."""
    try:
        return path.read_bytes() if stat.S_ISREG(path.lstat().st_mode) else None
    except OSError:
        return None


def good_home(root: Path, name: str = "home", **kw: Any) -> tuple[Path, tuple[Path, bytes | None]]:
    """A CODEX_HOME holding a good login: fresh (2 h left), refreshed long ago. Returns it and its guard."""
    home = root / name
    path = write_login(home, login(**({"refresh_token": "CANARY-rt-good", "last_refresh": OLD} | kw)))
    return home, (path, path.read_bytes())


def reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def assert_codex_readable(raw: bytes) -> None:
    """What Codex 0.169.0 needs to read an auth.json (each rule seen failing with the real binary): strict JSON,
    a known auth_mode in its exact case, ``tokens`` an object or null, an id_token payload in unpadded
    base64url; and codex-ci itself must read it back unchanged."""
    data = json.loads(raw, parse_constant=reject_constant)
    assert data.get("auth_mode") is None or data["auth_mode"] in CODEX_MODES, data.get("auth_mode")
    tokens = data.get("tokens")
    assert tokens is None or isinstance(tokens, dict), "tokens is neither an object nor null"
    if isinstance(tokens, dict) and isinstance(tokens.get("id_token"), str):
        assert re.fullmatch(r"[A-Za-z0-9_-]+", tokens["id_token"].split(".")[1]), "id_token is not base64url"
    assert AuthFile.parse(raw, "auth.json").to_bytes() == raw


def with_claims(token: str, **claims: Any) -> str:
    """``token`` re-made with some claims replaced (``...`` deletes one)."""
    payload = decode_jwt_payload(token)
    for key, value in claims.items():
        key = AUTH_CLAIM if key == "auth" else key
        if value is ...:
            payload.pop(key, None)
        else:
            payload[key] = value
    return make_jwt(payload)


def variant(*, access: dict[str, Any] | None = None, ident: dict[str, Any] | None = None, base: dict | None = None,
            **changes: Any) -> dict[str, Any]:
    """A good login with changes: ``tokens__account_id=...`` style keys (``...`` deletes), and JWT claims."""
    data = json.loads(json.dumps(base or login()))
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        target = data
        for key in parents:
            target = target[key]
        if value is ...:
            target.pop(last, None)
        else:
            target[last] = value
    if access is not None:
        data["tokens"]["access_token"] = with_claims(data["tokens"]["access_token"], **access)
    if ident is not None:
        data["tokens"]["id_token"] = with_claims(data["tokens"]["id_token"], **ident)
    return data


def dumps(data: Any, **kw: Any) -> bytes:
    return json.dumps(data, **kw).encode()


def as_text(value: bytes) -> str:
    """``value`` as a store value (text): bytes that are not UTF-8 become surrogate escapes, which the file store
    writes back as those same bytes, so the store file holds exactly ``value`` (as a damaged one would)."""
    return value.decode("utf-8", "surrogateescape")


def splice(data: dict[str, Any], text: str) -> bytes:
    """A login's JSON with ``text`` (raw JSON, e.g. ``"x": NaN``) added as its last member."""
    return (json.dumps(data)[:-1] + ", " + text + "}").encode()


def set_id_payload(data: dict[str, Any], payload: str) -> dict[str, Any]:
    """``data`` with the id_token's payload segment replaced verbatim."""
    header, _, signature = data["tokens"]["id_token"].split(".")
    return variant(base=data, tokens__id_token=f"{header}.{payload}.{signature}")


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def store_document(value: Any, version: Any = 1) -> bytes:
    """A file-store document as stores/file.py writes it, with any value and version."""
    return dumps({"format": 1, "version": version, "value": value})


def splits(url: str, *, client: bool = True) -> bool:
    """True when urlsplit (codex-ci's check) and, with ``client``, httpx (which sends the request) parse ``url``;
    the URLs where they do not are named cases."""
    try:
        urlsplit(url)
        if client:
            httpx.URL(url)
    except Exception:  # noqa: BLE001 (ValueError, httpx.InvalidURL, idna.IDNAError)
        return False
    return True


def loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def sandbox() -> Iterator[Path]:
    """A fresh temporary directory that is also the working directory: one per Hypothesis example."""
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp, contextlib.chdir(tmp):
        yield Path(tmp).resolve()


def isolated_env(root: Path, **extra: str | None) -> dict[str, str | None]:
    """HOME inside ``root``, no proxy, and stores that fail fast and locally: Vault at a closed port, AWS without a
    region, GCP without credentials."""
    env: dict[str, str | None] = {
        "HOME": str(root), "CODEX_CI_STORE_URL": None,
        "VAULT_ADDR": None, "VAULT_TOKEN": None, "VAULT_ROLE_ID": None, "VAULT_SECRET_ID": None,
        "CODEX_CI_VAULT_AUTH": None, "CODEX_CI_VAULT_ROLE": None, "VAULT_NAMESPACE": None,
        "AWS_REGION": None, "AWS_DEFAULT_REGION": None, "AWS_PROFILE": None, "AWS_ACCESS_KEY_ID": None,
        "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None, "AWS_ENDPOINT_URL": None,
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": None, "CODEX_CI_AWS_REGION": None,
        "AWS_CONFIG_FILE": str(root / "no-aws-config"), "AWS_SHARED_CREDENTIALS_FILE": str(root / "no-aws-creds"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "GOOGLE_APPLICATION_CREDENTIALS": str(root / "no-adc.json"), "CODEX_CI_GCP_PROJECT": None,
        "GOOGLE_CLOUD_PROJECT": None, "CODEX_CI_GCP_ENDPOINT": None, "NO_GCE_CHECK": "True",
        "SSL_CERT_FILE": None, "CODEX_CA_CERTIFICATE": None,
    }
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[name] = env[name.lower()] = None
    return env | extra


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections and that nobody else can take while the test runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@contextlib.contextmanager
def held_lock(path: Path, seconds: float) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` and let it go after ``seconds`` (from another thread)."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    timer = threading.Timer(seconds, os.close, (fd,))
    timer.start()
    try:
        yield
    finally:
        timer.join()


# -- strategies --------------------------------------------------------------------------------------------------

# Integers stay bounded (a 5,000-digit one is a named case below); text has no lone surrogates (named cases too).
JSON_SCALARS = (st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats() | st.text(max_size=30))
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=10,
)
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))])
MOMENTS = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31))
TIMESTAMPS = st.one_of(
    st.builds(lambda m, z: m.replace(tzinfo=z).isoformat(), MOMENTS, ZONES),
    MOMENTS.map(lambda m: m.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"),
    MOMENTS.map(datetime.isoformat),  # no time zone
    st.text(max_size=30),
)
EXPIRIES = st.one_of(st.none(), st.sampled_from([-86400, -1, 60, 7200, 30 * 86400]))
CLAIM_KEYS = ["exp", "email", "iat", AUTH_CLAIM]
AUTH_KEYS = ["chatgpt_account_id", "chatgpt_plan_type", "chatgpt_user_id"]
LOGIN_PATHS = [("auth_mode",), ("OPENAI_API_KEY",), ("tokens",), ("last_refresh",), ("tokens", "id_token"),
               ("tokens", "access_token"), ("tokens", "refresh_token"), ("tokens", "account_id"), ("extra",)]
# Values for any field. Token-shaped values go only where tokens live: a JWT in a field status prints (the plan,
# the mode) would trip the fixture's leak check although codex-ci never treated it as a secret.
SPECIAL = st.one_of(
    TIMESTAMPS, JSON_VALUES, st.sampled_from(["chatgpt", "apikey", "agentIdentity", "", "sk-test", "a.b.c", "a..c"]),
)
TOKEN_VALUES = st.one_of(
    SPECIAL, st.builds(make_jwt, st.dictionaries(st.sampled_from(CLAIM_KEYS), JSON_VALUES, max_size=3)),
)


@st.composite
def logins(draw: st.DrawFn, max_edits: int = 3) -> dict[str, Any]:
    """A valid login, then up to ``max_edits`` edits: a key deleted or replaced, or a JWT claim replaced."""
    data = login(expires_in=draw(EXPIRIES), last_refresh=draw(st.one_of(st.just(OLD), TIMESTAMPS)))
    for _ in range(draw(st.integers(0, max_edits))):
        where = draw(st.sampled_from(["login", "id_token", "access_token"]))
        if where == "login":
            path = draw(st.sampled_from(LOGIN_PATHS))
            target = data if len(path) == 1 else data.get(path[0])
            if isinstance(target, dict):
                if draw(st.booleans()):
                    target.pop(path[-1], None)
                else:
                    target[path[-1]] = draw(TOKEN_VALUES if path[-1].endswith("_token") else SPECIAL)
        elif isinstance(data.get("tokens"), dict) and isinstance(data["tokens"].get(where), str):
            with contextlib.suppress(Exception):  # an earlier edit may have made it a non-JWT
                claim = draw(st.sampled_from(CLAIM_KEYS + AUTH_KEYS))
                value = draw(st.one_of(st.just(...), SPECIAL))
                if claim in AUTH_KEYS:
                    inner = dict(decode_jwt_payload(data["tokens"][where]).get(AUTH_CLAIM) or {})
                    inner[claim] = value
                    claim, value = AUTH_CLAIM, {k: v for k, v in inner.items() if v is not ...}
                data["tokens"][where] = with_claims(data["tokens"][where], **{"x": 0} | {claim: value})
    return data


def framings(raw: bytes) -> st.SearchStrategy[bytes]:
    """``raw`` as a runner might receive it: as is, padded, CRLF, BOM, trailing junk, base64 in three styles."""
    return st.sampled_from([
        raw, b"  \n" + raw + b"\n\t", raw.replace(b"\n", b"\r\n"), b"\xef\xbb\xbf" + raw, raw + b" trailing",
        base64.b64encode(raw), b64(raw).encode(), base64.encodebytes(raw),
    ])


SEED_INPUTS = st.one_of(
    st.text(max_size=200).map(str.encode),
    st.binary(max_size=200),
    JSON_VALUES.map(dumps),
    logins().map(lambda d: dumps(d, indent=2)).flatmap(framings),
    logins().map(dumps),
    logins(max_edits=1).map(dumps),  # mostly valid: the paths that write
)
DURATION_WORDS = st.one_of(
    st.text(max_size=12),
    st.lists(st.tuples(
        st.one_of(st.integers(0, 10**12).map(str), st.sampled_from(["-1", "1e9", ".5", "1.", "0.25", "00", "1_0"])),
        st.sampled_from(["", "s", "m", "h", "d", "w", "S", "H", "y", "ms", " "]),
    ), min_size=1, max_size=3).map(lambda parts: "".join(n + u for n, u in parts)),
)
# Path text: no NUL (argv and the environment cannot carry it), no ".." (it would leave the sandbox); newlines,
# a leading "~" and over-long components are named cases below.
PATH_TEXT = st.one_of(
    st.text(st.characters(blacklist_characters="\x00\n\r", blacklist_categories=("Cs",)), max_size=40),
    st.binary(max_size=30).map(os.fsdecode),
).filter(lambda p: "\x00" not in p and "\n" not in p and "\r" not in p and ".." not in p.split("/")
         and not p.startswith("~") and all(len(os.fsencode(c)) <= 255 for c in p.split("/")))


@st.composite
def store_urls(draw: st.DrawFn) -> str:
    """Store URL templates (``{TMP}`` is the sandbox): near-valid ones of every scheme, and arbitrary text."""
    text = st.text(max_size=30)
    return draw(st.one_of(
        text,
        st.builds("{}{}{}".format, st.sampled_from(["vault", "aws", "gcp", "s3", "VAULT", "File", ""]),
                  st.sampled_from(["://", ":/", ":", "//", ""]), text),
        st.builds("vault://{}/{}".format, text, text),
        st.builds("gcp://projects/{}/secrets/{}".format, text, text),
        st.builds("aws://{}".format, st.one_of(text, st.builds(
            "arn:aws:secretsmanager:{}:123456789012:secret:{}".format, text, text))),
        st.builds("file://{{TMP}}/s/{}".format, PATH_TEXT.map(lambda p: p.replace("{", "").replace("}", ""))),
        st.builds(lambda scheme, n: f"{scheme}://" + "a" * n, st.sampled_from(["vault", "file", "aws"]),
                  st.integers(2000, 12000)),
        st.sampled_from(["vault", "aws", "gcp", "file", " file ", "vault://a/b\x00", "file://{TMP}/s/\x00"]),
    ))


USERINFO = st.characters(codec="ascii", blacklist_characters="\x00/?#[]@ ", blacklist_categories=("Cc",))


@st.composite
def token_urls(draw: st.DrawFn) -> str:
    """Token-URL templates that can only reach loopback ({PORT}: the token server; {CLOSED}: a refusing port).
    Half keep the working ``http://127.0.0.1:{PORT}/oauth/token`` but for at most one part; half vary them all."""
    parts = {"scheme": "http", "sep": "://", "userinfo": "", "host": "127.0.0.1", "port": ":{PORT}",
             "path": "/oauth/token"}
    choices = {
        "scheme": st.sampled_from(["https", "HTTP", "Https", "ftp", "", "file"]),
        "sep": st.sampled_from([":/", ":///", "//"]),
        "userinfo": st.text(USERINFO, max_size=10).map(lambda u: u + "@"),
        "host": st.sampled_from(["localhost", "[::1]", "127.0.0.2", "host.invalid", ""]),
        "port": st.sampled_from(["", ":{CLOSED}", ":0", ":65536", ":99999"]),
        "path": st.text(max_size=20),
    }
    varied = draw(st.sampled_from([*choices, None])) if draw(st.booleans()) else "all"
    for name, strategy in choices.items():
        if varied in (name, "all") and (varied != "all" or draw(st.booleans())):
            parts[name] = draw(strategy)
    return "".join(parts.values())


# -- the properties ----------------------------------------------------------------------------------------------

# Where a fuzzed path reaches the status table on stdout: CliRunner encodes stdout strictly, while a runner's Python
# (C.UTF-8) writes a non-UTF-8 path's surrogate escapes back as the original bytes; --json escapes them either way.
STATUS_JSON = {"status": ["--json"]}

FUZZ = settings(
    max_examples=scale(40, 400), deadline=None, derandomize=not SOAK, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@FUZZ
@given(raw=SEED_INPUTS, through_env=st.booleans())
def test_fuzz_seed(cli: Any, raw: bytes, through_env: bool) -> None:
    """Any CODEX_AUTH_JSON (or --from-file): documented exit; the good file kept unless a valid login replaced it,
    and what was written is a login codex-ci reads back byte for byte."""
    with sandbox() as root:
        home, guard = good_home(root)
        if through_env and b"\x00" not in raw:
            run = cli("seed", "--force", "--codex-home", str(home),
                      env=isolated_env(root, CODEX_AUTH_JSON=os.fsdecode(raw)))
        else:
            (root / "seed").write_bytes(raw)
            run = cli("seed", "--force", "--codex-home", str(home), "--from-file", "seed", env=isolated_env(root))
        fuzzed(run, "seed", guard)
        if run.exit_code == 0:
            written = (home / "auth.json").read_bytes()
            assert AuthFile.parse(written, "auth.json").to_bytes() == written
            json.loads(written, parse_constant=reject_constant)


@FUZZ
@given(content=st.one_of(logins().map(lambda d: dumps(d, indent=2)), SEED_INPUTS), invocation=st.sampled_from([
    ("status",), ("status", "--json"), ("refresh", "--retries", "0"), ("persist", "--to", "file://{TMP}/store"),
]))
def test_fuzz_auth_json(cli: Any, token_server: TokenServer, content: bytes, invocation: tuple[str, ...]) -> None:
    """Any auth.json under status (table and JSON), refresh (against the loopback token endpoint) and persist (to
    a file store)."""
    command = invocation[0]
    with sandbox() as root:
        home = root / "home"
        path = write_login(home, content)
        args = [arg.replace("{TMP}", str(root)) for arg in invocation]
        run = cli(*args, "--codex-home", str(home), env=isolated_env(root))
        fuzzed(run, command, (path, content))
        if command == "refresh" and run.exit_code == 0 and path.read_bytes() != content:
            AuthFile.parse(path.read_bytes(), "auth.json")


@FUZZ
@given(payload=st.one_of(
    SEED_INPUTS.map(lambda v: ("value", v)),
    st.binary(max_size=300).map(lambda b: ("file", b)),
    st.builds(lambda v, n: ("file", store_document(v, n)), JSON_VALUES, JSON_VALUES),
    logins().map(lambda d: ("value", dumps(d, indent=2))),
    logins(max_edits=1).map(lambda d: ("value", dumps(d, indent=2))),
))
def test_fuzz_stored_payload(cli: Any, payload: tuple[str, bytes]) -> None:
    """Any stored value (written by the file store) or damaged store file, restored over a good older login."""
    kind, data = payload
    with sandbox() as root:
        home, guard = good_home(root)
        store = root / "store.json"
        if kind == "value":
            FileStore(store).write(as_text(data), None)
        else:
            store.write_bytes(data)
        run = cli("restore", "--from", f"file://{store}", "--codex-home", str(home), env=isolated_env(root))
        fuzzed(run, "restore", guard)
        if run.exit_code == 0:
            AuthFile.parse((home / "auth.json").read_bytes(), "auth.json")


def confined(url: str, env: dict[str, str | None], root: Path) -> bool:
    """True unless ``url`` names a file store outside ``root`` (the fuzzer must not create files elsewhere)."""
    try:
        parsed = parse_url(url, {k: v for k, v in env.items() if v is not None})
    except Exception:  # noqa: BLE001 (rejected before any file is touched)
        return True
    if parsed.scheme != "file":
        return True
    if parsed.location.startswith("~"):
        return False  # ~user: outside the sandbox (a named case covers it)
    resolved = Path(os.path.normpath(Path(parsed.location).absolute()))
    return resolved.is_relative_to(root / "s") and all(len(os.fsencode(c)) <= 255 for c in resolved.parts)


@FUZZ
@given(template=store_urls(), configured=st.one_of(st.none(), store_urls()),
       command=st.sampled_from(["restore", "persist", "status"]))
def test_fuzz_store_urls(cli: Any, closed_port: int, template: str, configured: str | None, command: str) -> None:
    """Any --from / --to / --store value (and CODEX_CI_STORE_URL behind a bare scheme name)."""
    with sandbox() as root:
        home, guard = good_home(root)
        url = template.replace("{TMP}", str(root))
        env = isolated_env(root, VAULT_ADDR=f"http://127.0.0.1:{closed_port}", VAULT_TOKEN="CANARY-vault-token",
                           CODEX_CI_STORE_URL=configured.replace("{TMP}", str(root)) if configured else None)
        assume("\x00" not in (env["CODEX_CI_STORE_URL"] or "") and confined(url, env, root)
               and confined(env["CODEX_CI_STORE_URL"] or "", env, root))
        option = {"restore": "--from", "persist": "--to", "status": "--store"}[command]
        run = cli(command, option, url, "--codex-home", str(home), *STATUS_JSON.get(command, []), env=env)
        fuzzed(run, command, guard)


@FUZZ
@given(word=DURATION_WORDS, where=st.sampled_from([
    ("status", "--min-ttl"), ("refresh", "--max-age"), ("refresh", "--lease-ttl"), ("keepalive", "--max-age"),
    ("status", "CODEX_CI_MIN_TTL"),
]))
def test_fuzz_durations(cli: Any, token_server: TokenServer, word: str, where: tuple[str, str]) -> None:
    """Any --min-ttl / --max-age / --lease-ttl: exit 2 naming the option, or the command runs."""
    command, option = where
    assume("\x00" not in word)
    with sandbox() as root:
        home, guard = good_home(root, expires_in=None)  # no exp: --max-age decides
        env = isolated_env(root)
        args = [command, "--codex-home", str(home)]
        if option.startswith("--"):
            args.append(f"{option}={word}")
        else:
            env[option] = word
        if command != "status":
            args += ["--retries", "0"]
        if command == "keepalive" or option == "--lease-ttl":
            args += ["--store", f"file://{root}/s/store", "--lease-wait", "0"]
        run = cli(*args, env=env)
        fuzzed(run, command, guard)
        if run.exit_code == ExitCode.USAGE and not is_usage_error(run):
            assert ("--min-ttl" if option == "CODEX_CI_MIN_TTL" else option) in run.stderr, run.stderr


@FUZZ
@given(url=st.one_of(st.text(max_size=60), token_urls()))
def test_fuzz_token_url_validation(cli: Any, url: str) -> None:
    """Any CODEX_REFRESH_TOKEN_URL_OVERRIDE on a fresh login (so nothing is sent): exit 0 or 2, and an accepted URL
    is https, or http to a loopback host as httpx (which sends the request) reads it."""
    url = url.replace("{PORT}", "8443").replace("{CLOSED}", "1")
    assume("\x00" not in url and splits(url, client=False))
    with sandbox() as root:
        home, guard = good_home(root)
        run = cli("refresh", "--codex-home", str(home), env=isolated_env(root, CODEX_REFRESH_TOKEN_URL_OVERRIDE=url))
        fuzzed(run, "refresh", guard)
        assert run.exit_code in (0, ExitCode.USAGE)
        if run.exit_code == 0 and url:
            try:
                parsed = httpx.URL(url)
            except Exception:  # noqa: BLE001 (accepted but not parsable: only when no refresh was due)
                return
            assert parsed.scheme == "https" or (parsed.scheme == "http" and loopback(parsed.host)), url


SAFE_HOSTS = ("127.0.0.1", "localhost", "::1", "127.0.0.2", "host.invalid", "")


def ca_bundles(root: Path) -> dict[str, str]:
    """CA bundle paths by name, made in ``root``: a directory, a missing file, an empty one, a broken PEM, a real
    bundle."""
    (root / "dir").mkdir()
    (root / "empty").write_bytes(b"")
    (root / "garbage").write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n")
    return {"{DIR}": str(root / "dir"), "{MISSING}": str(root / "missing"), "{EMPTY}": str(root / "empty"),
            "{GARBAGE}": str(root / "garbage"), "{CERTIFI}": certifi.where()}


@FUZZ
@given(url=token_urls(), ca=st.one_of(st.sampled_from(["", "{CERTIFI}"]), st.sampled_from(
    ["{DIR}", "{MISSING}", "{EMPTY}", "{GARBAGE}"]), PATH_TEXT),
       ca_variable=st.sampled_from(["CODEX_CA_CERTIFICATE", "SSL_CERT_FILE"]))
def test_fuzz_refresh_environment(cli: Any, token_server: TokenServer, closed_port: int, url: str, ca: str,
                                  ca_variable: str) -> None:
    """An expired login refreshed with any loopback-only token URL and any CA bundle path: documented exit, and
    auth.json changes only on success."""
    url = url.replace("{PORT}", str(httpx.URL(token_server.url).port)).replace("{CLOSED}", str(closed_port))
    assume(splits(url))  # unparsable URLs are named cases below
    assume(httpx.URL(url).host in SAFE_HOSTS)  # requests go to loopback only (host.invalid never resolves)
    with sandbox() as root:
        ca_path = ca_bundles(root).get(ca, ca)
        home, guard = good_home(root, expires_in=-60, refresh_token=token_server.current_refresh_token)
        env = isolated_env(root, CODEX_REFRESH_TOKEN_URL_OVERRIDE=url, **{ca_variable: ca_path or None})
        run = cli("refresh", "--codex-home", str(home), "--retries", "0", "--timeout", "2", env=env)
        fuzzed(run, "refresh", guard)


@FUZZ
@given(place=PATH_TEXT, absolute=st.booleans(), prepare=st.sampled_from(["none", "dir", "login", "file"]),
       command=st.sampled_from(["seed", "status", "refresh"]), through_env=st.booleans())
def test_fuzz_codex_home(cli: Any, place: str, absolute: bool, prepare: str, command: str,
                         through_env: bool) -> None:
    """Any CODEX_HOME (or --codex-home) inside the sandbox, absent, a directory, a file, or holding a login."""
    with sandbox() as root:
        value = f"{root}/h/{place}" if absolute else f"h/{place}"
        target = Path(value) if absolute else root / value
        guard = None
        with contextlib.suppress(OSError):
            if prepare == "dir":
                target.mkdir(parents=True, exist_ok=True)
            elif prepare == "file" and target != root / "h":
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("not a directory")
            elif prepare == "login":
                content = write_login(target, login()).read_bytes()
                guard = (target / "auth.json", content)
        env = isolated_env(root, CODEX_AUTH_JSON=json.dumps(login(refresh_token="CANARY-rt-seed")))
        args = [command, *STATUS_JSON.get(command, [])]
        if through_env:
            env["CODEX_HOME"] = value
        else:
            args += ["--codex-home", value]
        run = cli(*args, env=env)
        fuzzed(run, command, guard)


# -- named cases: seed --------------------------------------------------------------------------------------------

GOOD = login()
STANDARD_B64 = base64.b64encode(b'{"email": "a@b.c", "n": "???>>>"}').decode().rstrip("=")  # has "/" and "+"
SEED_CASES = [
    case("duplicate-keys-last-wins", ('{"tokens": "bad", ' + json.dumps(GOOD)[1:]).encode(), 0),
    case("duplicate-keys-last-bad", (json.dumps(GOOD)[:-1] + ', "tokens": "bad"}').encode(), 3),
    case("bom-prefixed-json", b"\xef\xbb\xbf" + dumps(GOOD), 3),
    case("bom-prefixed-base64", base64.b64encode(b"\xef\xbb\xbf" + dumps(GOOD)), 3),
    case("utf16-le-with-bom", json.dumps(GOOD).encode("utf-16"), 3),
    case("utf16-be-no-bom", json.dumps(GOOD).encode("utf-16-be"), 3),
    case("crlf-pretty-printed", json.dumps(GOOD, indent=2).replace("\n", "\r\n").encode(), 0),
    case("trailing-garbage", dumps(GOOD) + b" garbage", 3),
    case("two-objects", dumps(GOOD) + dumps(GOOD), 3),
    case("comment", b"// exported\n" + dumps(GOOD), 3),
    case("single-quoted", json.dumps(GOOD).replace('"', "'").encode(), 3),
    case("huge-integer", splice(GOOD, '"n": ' + "1" * 5000), 3),
    case("float-1e400", splice(GOOD, '"n": 1e400'), 3),
    case("nan-literal", splice(GOOD, '"n": NaN'), 3),
    case("infinity-literal", splice(GOOD, '"n": -Infinity'), 3),
    case("big-but-sane-number", splice(GOOD, '"n": 123456789012345678901234567890e-5'), 0),
    case("id-token-nested-deeply", dumps(variant(tokens__id_token=[[[["x"]]]])), 3),
    case("id-token-nested-100k", dumps(variant(tokens__id_token="DEEP")).replace(
        b'"DEEP"', b"[" * 100000 + b"]" * 100000), 3),
    case("id-token-2-segments", dumps(variant(tokens__id_token="eyJhbGciOiJub25lIn0.e30")), 3),
    case("id-token-4-segments", dumps(variant(tokens__id_token=GOOD["tokens"]["id_token"] + ".x")), 3),
    case("id-token-empty-signature", dumps(variant(tokens__id_token=GOOD["tokens"]["id_token"].rsplit(".", 1)[0]
                                                   + ".")), 3),
    case("id-token-padded-payload", dumps(set_id_payload(GOOD, b64(b'{"email":"a@b.c"} ') + "==")), 3),
    case("id-token-standard-base64", dumps(set_id_payload(GOOD, STANDARD_B64)), 3),
    case("jwt-payload-json-string", dumps(set_id_payload(GOOD, b64(b'"CANARY"'))), 3),
    case("jwt-payload-json-null", dumps(variant(tokens__access_token="eyJhbGciOiJub25lIn0.bnVsbA.sig")), 3),
    case("jwt-payload-not-utf8", dumps(set_id_payload(GOOD, b64(b'{"email":"\xff"}'))), 3),
    case("access-exp-string", dumps(variant(access={"exp": "tomorrow"})), 0),
    case("access-exp-float", dumps(variant(access={"exp": 4102444800.5})), 0),
    case("access-exp-negative", dumps(variant(access={"exp": -1})), 0),
    case("access-exp-year-99999", dumps(variant(access={"exp": 3093527980800})), 0),
    case("access-exp-bool", dumps(variant(access={"exp": True})), 0),
    case("last-refresh-future", dumps(variant(last_refresh="9999-01-01T00:00:00Z")), 0),
    case("last-refresh-not-utc", dumps(variant(last_refresh="2026-01-01T02:00:00+02:00")), 0),
    case("last-refresh-no-timezone", dumps(variant(last_refresh="2026-01-01T00:00:00")), 3),
    case("last-refresh-year-0", dumps(variant(last_refresh="0000-01-01T00:00:00Z")), 3),
    case("last-refresh-year-1-east", dumps(variant(last_refresh="0001-01-01T00:00:00+01:00")), 3),
    case("last-refresh-year-9999-west", dumps(variant(last_refresh="9999-12-31T23:59:59-01:00")), 3),
    case("last-refresh-number", dumps(variant(last_refresh=1767225600)), 3),
    case("auth-mode-unknown", dumps({"auth_mode": "agentIdentity", "agent_identity": {"x": 1}}), 0),
    case("auth-mode-uppercase", dumps(variant(auth_mode="CHATGPT")), 3),
    case("auth-mode-mixed-case-apikey", dumps({"auth_mode": "ApiKey", "OPENAI_API_KEY": "sk-CANARY"}), 3),
    case("auth-mode-empty", dumps(variant(auth_mode="")), 3),
    case("auth-mode-null", dumps(variant(auth_mode=None)), 0),
    case("tokens-null", dumps(variant(tokens=None)), 3),
    case("apikey-with-tokens-number", dumps({"OPENAI_API_KEY": "sk-CANARY", "tokens": 5}), 3),
    case("openai-api-key-number", dumps(variant(OPENAI_API_KEY=12345)), 3),
    case("unicode-email", dumps(variant(ident={"email": "zoë.ñandú@exämple.日本"})), 0),
    case("account-id-empty", dumps(variant(tokens__account_id="")), 0),
    case("account-claim-lone-surrogate", dumps(variant(tokens__account_id=..., ident={"auth": {
        "chatgpt_account_id": "\ud800"}})), 3),
    case("escaped-nul-in-unknown-key", splice(GOOD, '"note": "a\\u0000b"'), 0),
    case("non-utf8-in-string", dumps(variant(note="NOTE")).replace(b"NOTE", b"\xff"), 3),
    case("just-over-1-mib", splice(GOOD, '"pad": "' + "A" * (1024 * 1024) + '"'), 3),
    case("base64-of-array", base64.b64encode(b"[1, 2]"), 3),
    case("base64-wrapped-crlf", base64.encodebytes(dumps(GOOD)).replace(b"\n", b"\r\n"), 0),
    case("unknown-keys-kept", dumps(variant(tokens__future={"a": [1, None]}, future=[{"b": 2.5}])), 0),
]


@pytest.mark.parametrize(("raw", "expected"), SEED_CASES)
def test_seed_hostile(cli: Any, tmp_path: Path, raw: bytes, expected: int) -> None:
    """seed --force over a good login: the exact exit code; the good file kept on failure; on success a file that
    Codex and codex-ci both read."""
    home, guard = good_home(tmp_path)
    (tmp_path / "seed").write_bytes(raw)
    run = cli("seed", "--force", "--codex-home", str(home), "--from-file", str(tmp_path / "seed"))
    assert_well_behaved(run, "seed", guard)
    assert run.exit_code == expected, run.stderr
    if run.exit_code == 0:
        assert_codex_readable((home / "auth.json").read_bytes())


# -- named cases: an auth.json and its CODEX_HOME under status --------------------------------------------------------

Arrange = Callable[[Path], None]


def auth(**changes: Any) -> Arrange:
    """Write a good login with ``variant`` changes as auth.json (made when the test runs: expiries are relative)."""
    def arrange(home: Path) -> None:
        write_login(home, variant(**changes))
    return arrange


def raw_auth(content: dict[str, Any] | bytes) -> Arrange:
    """Write ``content`` as auth.json, as it is."""
    def arrange(home: Path) -> None:
        write_login(home, content)
    return arrange


def expiring_soon(home: Path) -> None:
    """A login whose access token has ten minutes left (less than the default --min-ttl)."""
    write_login(home, login(expires_in=600))


def named(name: str, what: str | bytes, *, with_login: bool = True) -> Arrange:
    """A good login (unless not ``with_login``) plus ``name`` in CODEX_HOME: bytes or text are its content;
    "dir", "fifo" and "symlink" (to a file holding another login) make those instead."""
    def arrange(home: Path) -> None:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        if with_login:
            write_login(home, login())
        path = home / name
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        if what == "dir":
            path.mkdir()
        elif what == "fifo":
            os.mkfifo(path)
        elif what == "symlink":
            (home.parent / "elsewhere").write_bytes(dumps(login(refresh_token="CANARY-rt-elsewhere")))
            path.symlink_to(home.parent / "elsewhere")
        else:
            path.write_bytes(what if isinstance(what, bytes) else what.encode())
    return arrange


def nothing(home: Path) -> None:
    """Leave CODEX_HOME absent."""


def home_is_file(home: Path) -> None:
    home.parent.mkdir(parents=True, exist_ok=True)
    home.write_text("not a directory")


STATUS_CASES = [
    case("exp-string", auth(access={"exp": "soon"}), 0),
    case("exp-negative", auth(access={"exp": -1}), 21),
    case("exp-float-past", auth(access={"exp": 1.5}), 21),
    case("exp-within-min-ttl", expiring_soon, 20),
    case("exp-year-99999", auth(access={"exp": 3093527980800}), 0),
    case("exp-bool", auth(access={"exp": True}), 0),
    case("exp-nan-in-jwt", auth(tokens__access_token="eyJhbGciOiJub25lIn0." + b64(b'{"exp": NaN}') + ".sig"), 3),
    case("apikey-login", raw_auth({"OPENAI_API_KEY": "sk-CANARY-key"}), 0),
    case("empty-file", raw_auth(b""), 3),
    case("five-mib-file", raw_auth(b"{" + b" " * (5 * 1024 * 1024) + b"}"), 8),
    case("auth-json-fifo", named("auth.json", "fifo"), 8),
    case("auth-json-symlink", named("auth.json", "symlink"), 8),
    case("auth-json-directory", named("auth.json", "dir"), 8),
    case("lock-is-directory", named("auth.json.lock", "dir"), 0),
    case("lock-is-symlink", named("auth.json.lock", "symlink"), 0),
    case("config-toml-binary", named("config.toml", b"\xff\xfe\x00"), 0),
    case("config-toml-deep", named("config.toml", "a = " + "[" * 100000), 0),
    case("home-missing", nothing, 8),
    case("home-is-a-file", home_is_file, 8),
    case("last-refresh-year-1-east", auth(last_refresh="0001-01-01T00:00:00+01:00"), 3),
    case("claims-lone-surrogate", auth(ident={"email": "\ud800@example.com", "auth": {
        "chatgpt_plan_type": "pl\ud800us", "chatgpt_account_id": "acct-1"}}), 3),
]


@pytest.mark.parametrize(("arrange", "expected"), STATUS_CASES)
def test_status_hostile(cli: Any, tmp_path: Path, arrange: Arrange, expected: int) -> None:
    """status (table and --json) judges any CODEX_HOME with the exact health code and changes nothing."""
    home = tmp_path / "home"
    arrange(home)
    before = read_or_none(home / "auth.json")
    for extra in ([], ["--json"]):
        run = cli("status", "--codex-home", str(home), *extra)
        assert_well_behaved(run, "status", (home / "auth.json", before))
        assert run.exit_code == expected, run.stdout + run.stderr
        assert read_or_none(home / "auth.json") == before


def test_status_table_of_a_non_utf8_home(cli: Any, tmp_path: Path) -> None:
    """A CODEX_HOME whose name is not UTF-8 (it reaches Python as surrogate escapes): status reports it missing,
    an unusable CODEX_HOME (8)."""
    home = os.fsdecode(os.fsencode(tmp_path) + b"/home-\xff")
    run = cli("status", "--codex-home", home)
    assert_well_behaved(run, "status")
    assert run.exit_code == ExitCode.FILESYSTEM


# -- named cases: refresh and its environment ----------------------------------------------------------------------

REFRESH_CASES = [
    case("url-https-without-host", {"CODEX_REFRESH_TOKEN_URL_OVERRIDE": "https://"}, [], 2),
    case("url-http-remote", {"CODEX_REFRESH_TOKEN_URL_OVERRIDE": "http://example.com/oauth/token"}, [], 2),
    case("url-ftp", {"CODEX_REFRESH_TOKEN_URL_OVERRIDE": "ftp://127.0.0.1/x"}, [], 2),
    case("url-port-99999", {"CODEX_REFRESH_TOKEN_URL_OVERRIDE": "http://127.0.0.1:99999/x"}, [], 6),
    case("url-ipv6-closed-port", {"CODEX_REFRESH_TOKEN_URL_OVERRIDE": "http://[::1]:{closed}/x"}, [], 6),
    case("url-with-credentials", {"CODEX_REFRESH_TOKEN_URL_OVERRIDE": "https://user:CANARY-pw@host.invalid/x"},
         [], 2),
    case("url-unclosed-bracket", {"CODEX_REFRESH_TOKEN_URL_OVERRIDE": "http://[::1"}, [], 2),
    case("url-port-not-a-number", {"CODEX_REFRESH_TOKEN_URL_OVERRIDE": "http://127.0.0.1:abc/x"}, [], 2),
    case("url-bad-idna-host", {"CODEX_REFRESH_TOKEN_URL_OVERRIDE": "https://xn--/x"}, [], 2),
    case("ca-bundle-directory", {"CODEX_CA_CERTIFICATE": "{tmp}"}, [], 2),
    case("ca-bundle-missing", {"CODEX_CA_CERTIFICATE": "{tmp}/missing.pem"}, [], 2),
    case("ca-bundle-garbage", {"CODEX_CA_CERTIFICATE": "{tmp}/home/auth.json"}, [], 2),
    case("ssl-cert-file-directory", {"SSL_CERT_FILE": "{tmp}"}, [], 2),
    case("all-proxy-socks4", {"ALL_PROXY": "socks4://127.0.0.1:{closed}"}, [], 2),
    case("http-proxy-unparsable", {"HTTP_PROXY": "http://[::1"}, [], 2),
    case("timeout-infinite", {}, ["--timeout", "inf"], 2),
    case("timeout-nan", {}, ["--timeout", "nan"], 2),
    case("lock-timeout-negative", {}, ["--lock-timeout", "-1"], 2),
    case("lock-timeout-nan", {}, ["--lock-timeout", "nan"], 2),
    case("retries-too-many", {}, ["--retries", "11"], 2),
    case("max-age-garbage", {}, ["--max-age", "1 week"], 2),
    case("client-id-with-quotes-and-newline", {"CODEX_APP_SERVER_LOGIN_CLIENT_ID": 'x"\n}'}, [], 5),
    case("github-output-is-a-directory", {"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": "{tmp}"}, [], 0),
    case("github-summary-missing-parent", {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": "{tmp}/no/such/file"},
         [], 0),
]


def fill(value: str, **context: object) -> str:
    """``value`` with ``{tmp}``/``{closed}`` placeholders filled."""
    for key, replacement in context.items():
        value = value.replace("{" + key + "}", str(replacement))
    return value


@pytest.mark.parametrize(("env", "args", "expected"), REFRESH_CASES)
def test_refresh_hostile(cli: Any, tmp_path: Path, token_server: TokenServer, closed_port: int,
                         env: dict[str, str], args: list[str], expected: int) -> None:
    """refresh of an expired login with a hostile option or environment value: the exact exit code, no secret
    (the URL's password included) in the output, and auth.json unchanged on failure."""
    home, guard = good_home(tmp_path, expires_in=-60, refresh_token=token_server.current_refresh_token)
    filled = {key: fill(value, tmp=tmp_path, closed=closed_port) for key, value in env.items()}
    run = cli("refresh", "--codex-home", str(home), "--retries", "0", "--timeout", "5", *args,
              env=isolated_env(tmp_path, **filled))
    assert_well_behaved(run, "refresh", guard)
    assert run.exit_code == expected, run.stderr


def test_refresh_with_last_refresh_in_the_future_still_refreshes(cli: Any, tmp_path: Path,
                                                                  token_server: TokenServer) -> None:
    """Clock skew on the trusted machine (here: year 9999) must not freeze an expired login."""
    home, _ = good_home(tmp_path, expires_in=-60, refresh_token=token_server.current_refresh_token,
                        last_refresh="9999-01-01T00:00:00Z")
    run = cli("refresh", "--force", "--codex-home", str(home), env=isolated_env(tmp_path))
    assert_well_behaved(run, "refresh")
    assert run.exit_code == 0 and token_server.successes == 1, run.stderr


# -- named cases: durations ----------------------------------------------------------------------------------------

DURATION_CASES = [
    case("exponent", "status", "--min-ttl", "1e9", 2),
    case("zero", "status", "--min-ttl", "0", 0),
    case("negative", "status", "--min-ttl", "-1s", 2),
    case("repeated-unit", "status", "--min-ttl", "1h1h", 0),
    case("leading-space", "status", "--min-ttl", " 1h", 0),
    case("fraction", "status", "--min-ttl", "1.5h", 0),
    case("upper-case-unit", "status", "--min-ttl", "1H", 0),
    case("devanagari-digit", "status", "--min-ttl", "१h", 2),
    case("arabic-indic-digits", "status", "--min-ttl", "١٢s", 2),
    case("empty", "status", "--min-ttl", "", 2),
    case("years", "status", "--min-ttl", "1y", 2),
    case("four-hundred-nines", "status", "--min-ttl", "9" * 400, 2),
    case("over-ten-years", "status", "--min-ttl", "3651d", 2),
    case("space-between-parts", "status", "--min-ttl", "1h 30m", 2),
    case("infinity-word", "status", "--min-ttl", "inf", 2),
    case("env-min-ttl-garbage", "status", "CODEX_CI_MIN_TTL", "soon", 2),
    case("max-age-negative", "refresh", "--max-age", "-1d", 2),
    case("lease-ttl-exponent", "refresh", "--lease-ttl", "1e3", 2),
    case("keepalive-max-age-garbage", "keepalive", "--max-age", "daily", 2),
]


@pytest.mark.parametrize(("command", "option", "value", "expected"), DURATION_CASES)
def test_duration_hostile(cli: Any, tmp_path: Path, token_server: TokenServer, command: str, option: str,
                          value: str, expected: int) -> None:
    """A duration option (or CODEX_CI_MIN_TTL) on a login with 30 days left: the exact exit code."""
    home, guard = good_home(tmp_path, expires_in=30 * 86400)
    env = isolated_env(tmp_path)
    args = [command, "--codex-home", str(home)]
    if option.startswith("--"):
        args.append(f"{option}={value}")
    else:
        env[option] = value
    if command != "status":
        args += ["--store", f"file://{tmp_path}/store", "--lease-wait", "0"]
    run = cli(*args, env=env)
    assert_well_behaved(run, command, guard)
    assert run.exit_code == expected, run.stderr


# -- named cases: store URLs ------------------------------------------------------------------------------------------

URL_CASES = [
    case("vault-empty", "vault://", {}, 2),
    case("vault-empty-mount", "vault:///x", {}, 2),
    case("vault-dot-dot", "vault://secret/../x", {}, 2),
    case("vault-no-addr", "vault://secret/x", {}, 2),
    case("vault-closed-port", "vault://secret/x", {"VAULT_ADDR": "http://127.0.0.1:{closed}", "VAULT_TOKEN": "t"}, 9),
    case("vault-addr-with-credentials", "vault://secret/x",
         {"VAULT_ADDR": "http://u:CANARY-pw@127.0.0.1:{closed}", "VAULT_TOKEN": "t"}, 2),
    case("vault-addr-ftp", "vault://secret/x", {"VAULT_ADDR": "ftp://127.0.0.1", "VAULT_TOKEN": "t"}, 2),
    case("vault-auth-unknown", "vault://secret/x", {"VAULT_ADDR": "http://127.0.0.1:1", "CODEX_CI_VAULT_AUTH": "krb"},
         2),
    case("aws-empty", "aws://", {}, 2),
    case("aws-no-region", "aws://codex-auth", {}, 2),
    case("gcp-empty-project", "gcp://projects//secrets/x", {}, 2),
    case("gcp-bare-secret-no-project", "gcp://codex-auth", {}, 2),
    case("gcp-secret-id-too-long", "gcp://projects/p/secrets/" + "s" * 256, {}, 2),
    case("gcp-endpoint-not-loopback", "gcp://projects/p/secrets/s", {"CODEX_CI_GCP_ENDPOINT": "example.com:443"}, 2),
    case("file-empty", "file://", {}, 2),
    case("file-relative", "file://relative/store.json", {}, 4),
    case("file-nul", "file://{tmp}/a\x00b", {}, 2),
    case("file-newline", "file://{tmp}/a\nb", {}, 2),
    case("file-root", "file:///", {}, 2),
    case("file-long-parent", "file://{tmp}/" + "x" * 300 + "/store.json", {}, 9),
    case("file-unknown-user", "file://~no-such-user-here/store.json", {}, 2),
    case("s3-scheme", "s3://bucket/key", {}, 2),
    case("upper-case-scheme", "VAULT://secret/x", {}, 2),
    case("bare-vault-without-env", "vault", {}, 2),
    case("bare-vault-env-other-scheme", "vault", {"CODEX_CI_STORE_URL": "aws://x"}, 2),
    case("bare-file-env-location", "file", {"CODEX_CI_STORE_URL": "{tmp}/store.json"}, 4),
    case("ten-thousand-chars", "vault://" + "a/" * 5000, {}, 2),
    case("empty-from", "", {}, 2),
    case("only-env-unknown-scheme", None, {"CODEX_CI_STORE_URL": "s3://x"}, 2),
]


@pytest.mark.parametrize(("url", "env", "expected"), URL_CASES)
def test_store_url_hostile(cli: Any, tmp_path: Path, closed_port: int, url: str | None, env: dict[str, str],
                           expected: int) -> None:
    """restore --from a hostile store URL (or CODEX_CI_STORE_URL): the exact exit code, nothing written."""
    home, guard = good_home(tmp_path)
    filled = {key: fill(value, tmp=tmp_path, closed=closed_port) for key, value in env.items()}
    args = [] if url is None else ["--from", fill(url, tmp=tmp_path)]
    with contextlib.chdir(tmp_path):
        run = cli("restore", *args, "--codex-home", str(home), env=isolated_env(tmp_path, **filled))
    assert_well_behaved(run, "restore", guard)
    assert run.exit_code == expected, run.stderr
    assert (home / "auth.json").read_bytes() == guard[1]


# -- named cases: stored payloads, restored over a good older login ------------------------------------------------

StoreArrange = Callable[[Path], None]


def stored_value(value: bytes) -> StoreArrange:
    """The file store holds ``value`` (written the way codex-ci writes it; see ``as_text`` for bytes not UTF-8)."""
    return lambda path: None if FileStore(path).write(as_text(value), None) else None


def store_file(raw: bytes | str) -> StoreArrange:
    """The store's file itself is ``raw`` (bytes), or "dir"/"symlink"/"lock-dir"/"absent-dir" for a layout."""
    def arrange(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        valid = store_document(json.dumps(login(refresh_token="CANARY-rt-stored")))
        if raw == "dir":
            path.mkdir()
        elif raw == "symlink":
            (path.parent / "real.json").write_bytes(valid)
            path.symlink_to(path.parent / "real.json")
        elif raw == "lock-dir":
            path.write_bytes(valid)
            path.with_name(path.name + ".lock").mkdir()
        elif raw == "absent-dir":
            path.parent.rmdir()
        else:
            path.write_bytes(raw if isinstance(raw, bytes) else raw.encode())
    return arrange


STORED = json.dumps(login(refresh_token="CANARY-rt-stored"))
STORE_CASES = [
    case("bare-auth-json-old-schema", store_file(STORED), 3),
    case("vault-shaped-value", stored_value(dumps({"auth_json": STORED})), 3),
    case("base64-value", stored_value(base64.b64encode(STORED.encode())), 3),
    case("value-five-mib", stored_value(b"A" * (5 * 1024 * 1024)), 9),
    case("value-two-mib", stored_value(b"{" + b" " * (2 * 1024 * 1024) + b"}"), 3),
    case("value-with-nul", stored_value(STORED[:30].encode() + b"\x00" + STORED[30:].encode()), 3),
    case("value-empty", stored_value(b""), 3),
    case("value-json-array", stored_value(b"[]"), 3),
    case("value-not-utf8", stored_value(b"\xff" + STORED.encode()), 3),
    case("value-lone-surrogate", store_file(store_document("\ud800")), 3),
    case("document-empty", store_file(b""), 3),
    case("document-not-utf8", store_file(b"\xff\xfe{"), 3),
    case("document-nested-deeply", store_file(b"[" * 100000 + b"]" * 100000), 3),
    case("document-version-string", store_file(store_document(STORED, "7")), 3),
    case("document-version-huge", store_file(b'{"version": ' + b"9" * 5000 + b', "value": ""}'), 3),
    case("store-file-symlink", store_file("symlink"), 9),
    case("store-file-directory", store_file("dir"), 9),
    case("store-lock-directory", store_file("lock-dir"), 9),
    case("store-directory-absent", store_file("absent-dir"), 4),
]


@pytest.mark.parametrize(("arrange", "expected"), STORE_CASES)
def test_restore_hostile(cli: Any, tmp_path: Path, arrange: StoreArrange, expected: int) -> None:
    """restore from a file store holding something hostile: the exact exit code; the good login kept."""
    home, guard = good_home(tmp_path)
    store = tmp_path / "store" / "codex.json"
    store.parent.mkdir()
    arrange(store)
    run = cli("restore", "--from", f"file://{store}", "--codex-home", str(home), env=isolated_env(tmp_path))
    assert_well_behaved(run, "restore", guard)
    assert run.exit_code == expected, run.stderr


# -- named cases: CODEX_HOME, its state file, locks and sources -------------------------------------------------------

def state(content: str | bytes) -> Arrange:
    """A good login and a hostile codex-ci-state.json."""
    return named("codex-ci-state.json", content)


HOME_CASES = [
    case("seed-lock-is-directory", "seed", named("auth.json.lock", "dir", with_login=False), [], 8),
    case("seed-lock-is-symlink", "seed", named("auth.json.lock", "symlink", with_login=False), [], 8),
    case("seed-stale-temp-directory", "seed", named(".auth.json.0.tmp", "dir"), ["--force"], 0),
    case("seed-home-is-dev-null", "seed", None, ["--codex-home", "/dev/null"], 8),
    case("seed-home-under-a-file", "seed", None, ["--codex-home", "/dev/null/codex"], 8),
    case("seed-home-long-component", "seed", None, ["--codex-home", "{tmp}/" + "h" * 300], 8),
    case("seed-home-relative", "seed", None, ["--codex-home", "relative-home"], 0),
    case("seed-home-empty-means-default", "seed", None, ["--codex-home", ""], 0),
    case("seed-home-env-empty-means-default", "seed", None, ["env:CODEX_HOME", ""], 0),
    case("seed-home-unknown-user", "seed", None, ["--codex-home", "~no-such-user-here/codex"], 2),
    case("seed-from-file-directory", "seed", None, ["--from-file", "{tmp}"], 8),
    case("seed-from-file-missing", "seed", None, ["--from-file", "{tmp}/missing"], 8),
    case("seed-from-file-dev-zero", "seed", None, ["--from-file", "/dev/zero"], 3),
    case("seed-github-output-missing-dir", "seed", None,
         ["env:GITHUB_ACTIONS", "true", "env:GITHUB_OUTPUT", "{tmp}/no/such/file"], 0),
    case("refresh-home-with-newline", "refresh", None, ["--codex-home", "{tmp}/a\nb"], 8),
    case("refresh-lock-is-directory", "refresh", named("auth.json.lock", "dir"), [], 8),
    case("refresh-auth-json-fifo", "refresh", named("auth.json", "fifo"), [], 8),
    case("refresh-auth-json-symlink", "refresh", named("auth.json", "symlink"), [], 8),
    case("refresh-apikey-login", "refresh", raw_auth({"OPENAI_API_KEY": "sk-CANARY"}), [], 0),
    case("refresh-unknown-mode", "refresh", raw_auth({"auth_mode": "agentIdentity"}), [], 0),
    case("persist-missing-auth", "persist", named("config.toml", "", with_login=False), [], 4),
    case("persist-invalid-auth", "persist", raw_auth(b"[]"), [], 3),
    case("persist-state-garbage", "persist", state("not json"), [], 10),
    case("persist-state-array", "persist", state("[]"), [], 10),
    case("persist-state-wrong-types", "persist", state('{"store": 1, "version": [], "stored_digest": null}'), [], 10),
    case("persist-state-nested-deeply", "persist", state("[" * 100000), [], 10),
    case("persist-state-symlink", "persist", state("symlink"), [], 8),
    case("persist-state-fifo", "persist", state("fifo"), [], 8),
    case("persist-lock-is-directory", "persist", named("auth.json.lock", "dir"), [], 8),
    case("restore-lock-is-directory", "restore", named("auth.json.lock", "dir"), [], 8),
    case("restore-state-directory", "restore", state("dir"), [], 8),
    case("restore-state-symlink", "restore", state("symlink"), [], 8),
    case("seed-stdin-not-utf8", "seed", None, ["--from-file", "-", "stdin:\xff\xfe garbage"], 3),
]


def split_args(args: list[str], **context: object) -> tuple[list[str], dict[str, str], bytes | None]:
    """Case arguments: ``env:NAME value`` pairs go to the environment, ``stdin:TEXT`` to standard input."""
    argv: list[str] = []
    env: dict[str, str] = {}
    stdin = None
    items = iter(args)
    for item in items:
        if item.startswith("env:"):
            env[item[4:]] = fill(next(items), **context)
        elif item.startswith("stdin:"):
            stdin = item[6:].encode("latin-1")
        else:
            argv.append(fill(item, **context))
    return argv, env, stdin


@pytest.mark.parametrize(("command", "arrange", "args", "expected"), HOME_CASES)
def test_home_hostile(cli: Any, tmp_path: Path, token_server: TokenServer, command: str, arrange: Arrange | None,
                      args: list[str], expected: int) -> None:
    """A hostile CODEX_HOME, lock, state file or seed source: the exact exit code; auth.json kept on failure.
    restore and persist use a file store that holds a newer login; seed's login comes from CODEX_AUTH_JSON."""
    home = tmp_path / "home"
    if arrange is not None:
        arrange(home)
    before = read_or_none(home / "auth.json")
    argv, env, stdin = split_args(args, tmp=tmp_path)
    if not any(arg == "--codex-home" for arg in argv) and "CODEX_HOME" not in env:
        argv += ["--codex-home", str(home)]
    store = tmp_path / "store.json"
    FileStore(store).write(json.dumps(login(refresh_token="CANARY-rt-stored"), indent=2), None)
    argv += {"restore": ["--from", f"file://{store}"], "persist": ["--to", f"file://{store}"]}.get(command, [])
    env = isolated_env(tmp_path, CODEX_AUTH_JSON=json.dumps(login(refresh_token="CANARY-rt-seed")), **env)
    with contextlib.chdir(tmp_path):
        run = cli(command, *argv, env=env, input=stdin)
    assert_well_behaved(run, command, (home / "auth.json", before))
    assert run.exit_code == expected, run.stderr


# -- named cases: the distributed refresh's lease and the store's version ---------------------------------------------

def lease(raw: bytes | None = None, record: object = None) -> StoreArrange:
    """An expired login in the store, and next to it a lease file ``raw`` or a lease record ``record``."""
    def arrange(path: Path) -> None:
        FileStore(path).write(json.dumps(login(expires_in=-60, refresh_token="CANARY-rt-0"), indent=2), None)
        lease_path = path.with_name(path.name + ".lease")
        if raw is not None:
            lease_path.write_bytes(raw)
        if record is not None:
            text = record if isinstance(record, str) else json.dumps(record)
            FileStore(lease_path).write(text, None)
    return arrange


LEASE_CASES = [
    case("lease-free", lease(), 0),
    case("lease-record-garbage-text", lease(record="not json"), 0),
    case("lease-record-array", lease(record=[1, 2]), 0),
    # a record naming a holder is held, whatever its timestamps say (they are another machine's clock), until it
    # has stood unchanged for a TTL by this runner's own clock
    case("lease-record-expiry-garbage", lease(record={"holder": "x", "expires_at": "soon"}), 7),
    case("lease-record-holder-number", lease(record={"holder": 7, "expires_at": "9999-01-01T00:00:00Z"}), 0),
    case("lease-held-by-another-runner", lease(record={"holder": "other", "expires_at": "9999-01-01T00:00:00Z"}), 7),
    case("lease-record-nested-deeply", lease(record="[" * 100000), 0),
    case("lease-expiry-overflows", lease(record={"holder": "x", "expires_at": "0001-01-01T00:00:00+01:00"}), 7),
    case("lease-ttl-over-the-cap", lease(record={"holder": "x", "ttl_seconds": 10**12}), 0),
    case("lease-ttl-negative", lease(record={"holder": "x", "ttl_seconds": -5}), 0),
    case("lease-ttl-not-a-number", lease(record={"holder": "x", "ttl_seconds": "forever"}), 7),
    case("lease-file-damaged", lease(raw=b"not a store document"), 9),
]


@pytest.mark.parametrize(("arrange", "expected"), LEASE_CASES)
def test_distributed_refresh_hostile(cli: Any, tmp_path: Path, token_server: TokenServer, arrange: StoreArrange,
                                     expected: int) -> None:
    """refresh --store with a hostile lease record next to an expired stored login: the exact exit code."""
    store = tmp_path / "store.json"
    arrange(store)
    home = tmp_path / "home"
    run = cli("refresh", "--store", f"file://{store}", "--codex-home", str(home), "--lease-wait", "0.2",
              "--retries", "0", env=isolated_env(tmp_path))
    assert_well_behaved(run, "refresh")
    assert run.exit_code == expected, run.stderr


def test_restore_then_persist_with_a_boolean_version(cli: Any, tmp_path: Path) -> None:
    """A store document whose version is JSON ``true``: neither restore nor a later persist may crash on it."""
    store = tmp_path / "store.json"
    store.write_bytes(store_document(json.dumps(login(refresh_token="CANARY-rt-stored")), True))
    home = tmp_path / "home"
    url = f"file://{store}"
    assert_well_behaved(cli("restore", "--from", url, "--codex-home", str(home), env=isolated_env(tmp_path)),
                        "restore")
    write_login(home, login(refresh_token="CANARY-rt-newer"))
    assert_well_behaved(cli("persist", "--to", url, "--codex-home", str(home), env=isolated_env(tmp_path)),
                        "persist")


def test_lock_wait_is_bounded(cli: Any, tmp_path: Path) -> None:
    """A held auth.json.lock and --lock-timeout 0.2: exit 7 quickly, auth.json untouched."""
    home, guard = good_home(tmp_path)
    with held_lock(home / "auth.json.lock", 0.5):
        run = cli("seed", "--force", "--codex-home", str(home), "--lock-timeout", "0.2",
                  env=isolated_env(tmp_path, CODEX_AUTH_JSON=json.dumps(login(refresh_token="CANARY-rt-seed"))))
    assert_well_behaved(run, "seed", guard)
    assert run.exit_code == ExitCode.LOCK_TIMEOUT
