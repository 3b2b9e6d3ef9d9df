"""stores: the real network round trips each command makes, per store.

Every store runs on a real server on loopback, started as the tests start it: OpenBao's dev server (with the
tests' policy and token, testing/targets/vault.py), moto's server in its own process (testing/targets/aws.py;
without the tests' IAM enforcement, which changes no request), and the gRPC fake of Secret Manager that the real
Google client talks to (testing/fake_secretmanager.py). The commands run in this process through ``codex_ci.sync``, and
round trips are counted where they leave it, not from what codex-ci believes it sends:

- vault: ``requests.adapters.HTTPAdapter.send`` (every HTTP request hvac makes, whatever its session);
- aws: a ``before-send`` handler on every boto3 client created (one call per HTTP attempt, retries included);
- gcp: a gRPC client interceptor on the channel the store opens (one call per RPC); checked against the calls
  the fake server logged;
- file: calls of ``FileStore.read`` / ``FileStore.write`` (no network: each is one locked file access).

Token endpoint POSTs are counted by the tests' strict token server. ``Backend`` and ``backend`` are shared with
the fleet benchmarks.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks.common import LOOPBACK, environ
from benchmarks.report import Outcome, Row
from codex_ci.policy import Policy
from codex_ci.stores import Store, open_store
from testing.servers import accepting, start_server
from testing.targets.aws import moto
from testing.targets.vault import openbao
from testing.tokenserver import TokenServer, make_login

KINDS = ("file", "vault", "aws", "gcp")
POLICY = Policy(timedelta(hours=1), timedelta(days=8))
LEASE_TTL = timedelta(minutes=2)
LEASE_WAIT = 30.0
LOCK_TIMEOUT = 30.0
SERVER_START = 60.0  # seconds a store server may take to come up
HOW = (
    "each store on a real loopback server as the tests start it (OpenBao dev server; moto's server in its own "
    "process, IAM not enforced, its request recorder on; the tests' gRPC Secret Manager fake with the real Google "
    "client; a local file). "
    "The commands run in-process through `codex_ci.sync` (`restore`, `persist`, `distributed_refresh` with the "
    "CLI's defaults: --min-ttl 1h, --lease-ttl 2m) on a fresh CODEX_HOME, against the tests' strict token server. "
    "Round trips are counted at the transport: vault at `requests.adapters.HTTPAdapter.send`, aws by a boto3 "
    "`before-send` handler, gcp by a gRPC client interceptor, "
    "file as calls of `FileStore.read`/`write`. *reads* fetch a value or metadata, *writes* store a value, "
    "*moves* move an alias or a stage (AWS `UpdateSecretVersionStage`, GCP `UpdateSecret`), *other* is anything "
    "else (GCP `CreateSecret`, a login). `lease` counts the calls on the lease record among them. Setup writes "
    "(the stored login) are not counted. The counts are checked against the servers' own logs (last row)."
)


# ---- store servers ------------------------------------------------------------------------------------------------


@dataclass
class Backend:
    """One running store server: ``env`` is what a runner sets to reach it; ``new_url()`` names a fresh secret."""

    kind: str
    env: dict[str, str]
    new_url: Callable[[], str]
    extra: dict[str, Any] = field(default_factory=dict)

    def open(self, url: str) -> Store:
        return open_store(url, {**os.environ, **self.env})


@contextlib.contextmanager
def _file_backend() -> Iterator[Backend]:
    with tempfile.TemporaryDirectory(prefix="codex-ci-bench-store-") as tmp:
        yield Backend("file", {}, lambda: f"file://{tmp}/codex-{uuid.uuid4().hex[:12]}.json")


@contextlib.contextmanager
def _vault_backend(server_log: bool) -> Iterator[Backend]:
    """An OpenBao dev server configured as the tests configure it (policy ``codex-ci`` on secret/codex/*); with
    ``server_log``, its audit log records every request."""
    with tempfile.TemporaryDirectory(prefix="codex-ci-bench-bao-") as workdir:
        audit = Path(workdir) / "audit.log" if server_log else None
        with openbao(Path(workdir), audit_log=audit, timeout=SERVER_START) as bao:
            yield Backend("vault", {"VAULT_ADDR": bao.addr, "VAULT_TOKEN": bao.token},
                          lambda: f"vault://secret/codex/{uuid.uuid4().hex}", {"openbao": bao, "audit": audit})


@contextlib.contextmanager
def _aws_backend(server_log: bool) -> Iterator[Backend]:
    """moto's server as the tests start it; with ``server_log``, its request recorder writes to a file."""
    with tempfile.TemporaryDirectory(prefix="codex-ci-bench-moto-") as workdir:
        recording = Path(workdir) / "recording.jsonl"
        env = {"MOTO_ENABLE_RECORDING": "True", "MOTO_RECORDER_FILEPATH": str(recording)} if server_log else {}
        with moto(env) as server:
            yield Backend("aws", server.env(), lambda: f"aws://codex-ci/{uuid.uuid4().hex}", {"recording": recording})


@contextlib.contextmanager
def _gcp_backend(in_process: bool) -> Iterator[Backend]:
    """The gRPC fake, here (its call log is then readable) or in a child process (so that this process never
    starts gRPC and can fork workers that use it)."""
    project = "codex-bench"

    def new_url() -> str:
        return f"gcp://projects/{project}/secrets/codex-{uuid.uuid4().hex}"

    if in_process:
        from testing.fake_secretmanager import FakeSecretManager

        with FakeSecretManager() as fake:
            yield Backend("gcp", {"CODEX_CI_GCP_ENDPOINT": fake.endpoint}, new_url, {"fake": fake})
        return
    root = Path(__file__).resolve().parent.parent
    with start_server(lambda port: [sys.executable, "-m", "testing.fake_secretmanager", "--port", str(port)],
                      accepting, name="the Secret Manager fake", cwd=root, timeout=SERVER_START) as server:
        yield Backend("gcp", {"CODEX_CI_GCP_ENDPOINT": f"127.0.0.1:{server.port}"}, new_url)


@contextlib.contextmanager
def backend(kind: str, *, gcp_in_process: bool = True, server_log: bool = True) -> Iterator[Backend]:
    """Start the server of one store kind; stopped on exit. ``server_log``: vault and aws log every request
    they serve (see ``_server_log``)."""
    if kind == "file":
        with _file_backend() as found:
            yield found
    elif kind == "vault":
        with _vault_backend(server_log) as found:
            yield found
    elif kind == "aws":
        with _aws_backend(server_log) as found:
            yield found
    elif kind == "gcp":
        with _gcp_backend(gcp_in_process) as found:
            yield found
    else:
        raise ValueError(kind)


# ---- counting ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    kind: str  # read, write, move or other
    lease: bool  # on the lease record
    what: str  # e.g. "GET data", "PutSecretValue"


@dataclass
class Tally:
    reads: int = 0
    writes: int = 0
    moves: int = 0
    other: int = 0
    lease_reads: int = 0
    lease_writes: int = 0
    lease_moves: int = 0
    lease_other: int = 0
    posts: int = 0
    calls: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, calls: list[Call], posts: int = 0) -> Tally:
        tally = cls(posts=posts, calls=[c.what + (" (lease)" if c.lease else "") for c in calls])
        for call in calls:
            name = "other" if call.kind == "other" else f"{call.kind}s"
            setattr(tally, name, getattr(tally, name) + 1)
            if call.lease:
                setattr(tally, f"lease_{name}", getattr(tally, f"lease_{name}") + 1)
        return tally

    @property
    def total(self) -> int:
        return self.reads + self.writes + self.moves + self.other

    def text(self) -> str:
        def part(n: int, lease: int, label: str) -> str:
            return f"{label} {n}" + (f" ({lease} lease)" if lease else "")

        parts = [part(self.reads, self.lease_reads, "reads"), part(self.writes, self.lease_writes, "writes"),
                 part(self.moves, self.lease_moves, "moves"), part(self.other, self.lease_other, "other")]
        return ", ".join(parts) + f"; POSTs {self.posts}"


class Recorder:
    """Collects the calls made while ``active``; hooks stay installed for the life of the process."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.every: list[Call] = []  # every call since the hooks were installed, counted or not
        self.active = False
        self._installed: set[str] = set()

    def record(self, kind: str, lease: bool, what: str) -> None:
        call = Call(kind, lease, what)
        self.every.append(call)
        if self.active:
            self.calls.append(call)

    @contextlib.contextmanager
    def counting(self) -> Iterator[list[Call]]:
        self.calls, self.active = [], True
        try:
            yield self.calls
        finally:
            self.active = False

    def install(self, kind: str) -> None:
        if kind in self._installed:
            return
        {"file": self._file, "vault": self._vault, "aws": self._aws, "gcp": self._gcp}[kind]()
        self._installed.add(kind)

    def _file(self) -> None:
        from codex_ci.stores.file import FileStore

        read, write = FileStore.read, FileStore.write
        recorder = self

        def counted_read(store: FileStore) -> Any:
            recorder.record("read", store.path.name.endswith(".lease"), "read")
            return read(store)

        def counted_write(store: FileStore, value: str, expected: str | None) -> str:
            recorder.record("write", store.path.name.endswith(".lease"), "write")
            return write(store, value, expected)

        setattr(FileStore, "read", counted_read)  # noqa: B010 (a class attribute, replaced for good)
        setattr(FileStore, "write", counted_write)  # noqa: B010

    def _vault(self) -> None:
        import requests.adapters

        send = requests.adapters.HTTPAdapter.send
        recorder = self

        def counted_send(adapter: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            path = urlsplit(str(request.url)).path
            parts = path.split("/")  # "", "v1", MOUNT, "data", PATH...
            if len(parts) > 4 and parts[3] == "data":
                kind = "read" if request.method == "GET" else "write" if request.method in ("POST", "PUT") \
                    else "other"
                recorder.record(kind, path.endswith("-lease"), f"{request.method} data")
            else:
                recorder.record("other", False, f"{request.method} {'/'.join(parts[:4])}")
            return send(adapter, request, *args, **kwargs)

        setattr(requests.adapters.HTTPAdapter, "send", counted_send)  # noqa: B010

    def _aws(self) -> None:
        session_class: Any = importlib.import_module("boto3.session").Session
        make_client = session_class.client
        recorder = self
        kinds = {"GetSecretValue": "read", "DescribeSecret": "read", "ListSecretVersionIds": "read",
                 "PutSecretValue": "write", "CreateSecret": "write", "UpdateSecretVersionStage": "move"}

        def before_send(request: Any, **kwargs: Any) -> None:
            target = request.headers.get("X-Amz-Target", b"")
            operation = (target.decode() if isinstance(target, bytes) else str(target)).rpartition(".")[2]
            try:
                body = json.loads(request.body or b"{}")
            except ValueError:
                body = {}
            secret = str(body.get("SecretId") or body.get("Name") or "")
            recorder.record(kinds.get(operation, "other"), secret.endswith("-lease"), operation)

        def client(session: Any, *args: Any, **kwargs: Any) -> Any:
            created = make_client(session, *args, **kwargs)
            created.meta.events.register("before-send", before_send)
            return created

        session_class.client = client

    def _gcp(self) -> None:
        grpc: Any = importlib.import_module("grpc")
        recorder = self
        kinds = {"AccessSecretVersion": "read", "GetSecret": "read", "GetSecretVersion": "read",
                 "AddSecretVersion": "write", "UpdateSecret": "move"}

        class Counting(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
            def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
                method = str(details.method).rpartition("/")[2]
                if method == "UpdateSecret":
                    name = request.secret.name
                elif method == "AddSecretVersion":
                    name = request.parent
                elif method == "CreateSecret":
                    name = request.secret_id
                else:
                    name = request.name
                secret = str(name).split("/versions/")[0]
                recorder.record(kinds.get(method, "other"), secret.endswith("-lease"), method)
                return continuation(details, request)

        insecure_channel = grpc.insecure_channel

        def channel(*args: Any, **kwargs: Any) -> Any:
            return grpc.intercept_channel(insecure_channel(*args, **kwargs), Counting())

        grpc.insecure_channel = channel


# ---- the commands -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    key: str
    label: str
    target: str
    met: Callable[[Tally], bool]


COMMANDS = [
    Command("restore", "restore", "1 read, nothing else", lambda t: (t.reads, t.total, t.posts) == (1, 1, 0)),
    Command("persist_unchanged", "persist, unchanged", "0 writes",
            lambda t: t.writes + t.moves + t.other == 0),
    Command("persist_changed", "persist, changed", "1 CAS write + <= 1 move",
            lambda t: t.writes == 1 and t.moves <= 1 and t.other == 0),
    Command("refresh_fresh", "refresh --store, fresh login", "1 read, no lease",
            lambda t: (t.reads, t.total, t.posts) == (1, 1, 0)),
    Command("refresh_stale_first", "refresh --store, stale, first rotation (no lease record yet)",
            "lease acquire + release + 1 CAS write; 1 POST", lambda t: _stale_ok(t)),
    Command("refresh_stale", "refresh --store, stale, lease record exists",
            "lease acquire + release + 1 CAS write; 1 POST", lambda t: _stale_ok(t)),
]


def _stale_ok(t: Tally) -> bool:
    """Two lease writes (acquire, release), one write of the login, at most one move per write, one POST."""
    return (t.lease_writes, t.writes - t.lease_writes, t.posts) == (2, 1, 1) and t.moves <= t.writes


def _login(*, expires_in: int, refresh_token: str) -> str:
    data = make_login(access_exp=int(time.time()) + expires_in, refresh_token=refresh_token)
    return json.dumps(data, indent=2)


def _measure_store(be: Backend, recorder: Recorder, work: Path) -> dict[str, tuple[Tally, list[Call]]]:
    from codex_ci.distributed import distributed_refresh
    from codex_ci.home import Home
    from codex_ci.sync import persist, restore

    results: dict[str, tuple[Tally, list[Call]]] = {}

    def counted(key: str, server: TokenServer | None, action: Callable[[], Any], expected: str) -> None:
        posts = server.posts if server else 0
        with recorder.counting() as calls:
            outcome = action()
        results[key] = (Tally.of(list(calls), (server.posts - posts) if server else 0), list(calls))
        got = str(outcome.action)
        if got != expected:  # the command must have done what it is counted for
            raise RuntimeError(f"{be.kind}: {key} ended {got!r}, not {expected!r}")

    def refresh(home: Path, store: Store) -> Any:
        return distributed_refresh(Home(home), store, POLICY, lock_timeout=LOCK_TIMEOUT, lease_ttl=LEASE_TTL,
                                   lease_wait=LEASE_WAIT)

    # restore, then persist unchanged, then persist a newer login
    store = be.open(be.new_url())
    store.write(_login(expires_in=86400, refresh_token="bench-rt-fresh"), None)
    home = work / f"{be.kind}-a"
    counted("restore", None, lambda: restore(Home(home), store, lock_timeout=LOCK_TIMEOUT), "restored")
    counted("persist_unchanged", None, lambda: persist(Home(home), store, lock_timeout=LOCK_TIMEOUT), "unchanged")
    time.sleep(0.002)  # a later last_refresh than the stored login's
    (home / "auth.json").write_bytes(_login(expires_in=86400, refresh_token="bench-rt-newer").encode())
    counted("persist_changed", None, lambda: persist(Home(home), store, lock_timeout=LOCK_TIMEOUT), "written")
    counted("refresh_fresh", None, lambda: refresh(work / f"{be.kind}-b", store), "not-refreshed")

    # a stale login: the first rotation creates the lease record, the next one finds it
    store = be.open(be.new_url())
    store.write(_login(expires_in=-600, refresh_token="bench-rt-0"), None)
    with TokenServer(initial_refresh_token="bench-rt-0", access_ttl=86400) as server, environ(
        CODEX_REFRESH_TOKEN_URL_OVERRIDE=server.url, NO_PROXY=LOOPBACK, no_proxy=LOOPBACK
    ):
        counted("refresh_stale_first", server, lambda: refresh(work / f"{be.kind}-c", store), "refreshed")
        current = store.read()
        assert current is not None
        store.write(_login(expires_in=-600, refresh_token=server.current_refresh_token), current.version)
        counted("refresh_stale", server, lambda: refresh(work / f"{be.kind}-d", store), "refreshed")
        rotated = store.read()
        assert rotated is not None and server.reused == 0
        stored_token = json.loads(rotated.value)["tokens"]["refresh_token"]
        if stored_token != server.current_refresh_token:
            raise RuntimeError(f"{be.kind}: the store does not hold the live refresh token after the refresh")
    return results


def _server_log(be: Backend) -> list[str] | None:
    """The calls the server itself logged so far, named as the client-side hooks name them (None: no log)."""
    if be.kind == "gcp":
        return [method for method, _ in be.extra["fake"].calls]
    if be.kind == "aws":
        recording = Path(be.extra["recording"])
        entries = [json.loads(line) for line in recording.read_text().splitlines()] if recording.exists() else []
        return [str(e["headers"].get("X-Amz-Target", f"{e['method']} {e['url']}")).rpartition(".")[2]
                for e in entries]
    if be.kind == "vault":
        names = []
        for line in Path(be.extra["audit"]).read_text().splitlines():
            entry = json.loads(line)
            if entry.get("type") != "request":
                continue
            request = entry.get("request", {})
            path, operation = str(request.get("path", "")), request.get("operation")
            if path.partition("/")[2].startswith("data/"):
                names.append("GET data" if operation == "read" else "POST data" if operation in ("create", "update")
                             else f"{operation} data")
            else:
                names.append(f"{operation} {path}")
        return names
    return None


def run() -> Outcome:
    recorder = Recorder()
    measured: dict[str, dict[str, tuple[Tally, list[Call]]]] = {}
    cross_check: dict[str, tuple[bool, int]] = {}  # store -> (server log == client count, calls)
    with tempfile.TemporaryDirectory(prefix="codex-ci-bench-stores-") as tmp:
        for kind in KINDS:
            print(f"stores: {kind}", file=sys.stderr, flush=True)
            with backend(kind) as be:
                recorder.install(kind)
                ours, theirs = len(recorder.every), len(_server_log(be) or [])
                measured[kind] = _measure_store(be, recorder, Path(tmp))
                logged = _server_log(be)
                if logged is not None:  # every call of the run, setup included, as the client and the server saw it
                    seen = [c.what for c in recorder.every[ours:]]
                    cross_check[kind] = (logged[theirs:] == seen, len(seen))
    return _outcome(measured, cross_check)


def _outcome(measured: dict[str, dict[str, tuple[Tally, list[Call]]]],
             cross_check: dict[str, tuple[bool, int]]) -> Outcome:
    rows: list[Row] = []
    for kind in KINDS:
        for command in COMMANDS:
            tally = measured[kind][command.key][0]
            rows.append(Row(f"{kind}: {command.label}", tally.text(), command.target, command.met(tally)))
    notes = []
    for kind in KINDS:
        sequence = "; ".join(
            f"{c.label}: " + (", ".join(measured[kind][c.key][0].calls) or "none")
            for c in COMMANDS if c.key in ("persist_changed", "refresh_stale"))
        notes.append(f"{kind} call sequences — {sequence}.")
    checked = ", ".join(f"{kind} {'yes' if ok else 'NO'} ({n} calls)" for kind, (ok, n) in cross_check.items())
    rows.append(Row("server logs list the calls counted at the client", checked, "all agree",
                    all(ok for ok, _ in cross_check.values())))
    notes.append(
        "The servers' own logs (the Secret Manager fake's call log, moto's request recorder, an OpenBao file "
        "audit device declared in a `-config` file added to the dev server) list, in order, exactly the calls the "
        "client-side hooks counted over the whole run, setup included."
    )
    notes.append("gcp: a read is one AccessSecretVersion on the `codex-ci` alias; a write re-reads the secret "
                 "(GetSecret) for the etag its alias move must carry.")
    notes.append("Round trips are requests/RPCs; connection set-up (TCP, HTTP/2) is not counted: hvac and boto3 "
                 "keep their connection in a pool, gRPC keeps one channel.")
    data = {
        "commands": {c.key: {"label": c.label, "target": c.target} for c in COMMANDS},
        "stores": {kind: {key: {**asdict(tally), "met": next(c for c in COMMANDS if c.key == key).met(tally)}
                          for key, (tally, _) in by_command.items()} for kind, by_command in measured.items()},
        "server_log": {kind: {"agrees": ok, "calls": n} for kind, (ok, n) in cross_check.items()},
    }
    passed = all(ok for ok, _ in cross_check.values())
    return Outcome("stores", HOW, rows, data, notes, passed=passed)
