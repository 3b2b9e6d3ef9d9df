"""GCP Secret Manager store specifics, against the loopback gRPC fake (testing/fake_secretmanager.py).

The shared contract (round trip, CAS, denied, unreachable, foreign payload) is in test_store_contract.py.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from codex_ci.errors import CodexCIError, ConfigError, ExitCode, StoredValueError, StoreError
from codex_ci.stores import StoreConflict, open_store
from codex_ci.stores import gcp as gcp_store
from testing.fake_secretmanager import DESTROYED, DISABLED, FakeSecretManager
from testing.targets import StoreTarget

ROOT = Path(__file__).resolve().parent.parent
VALUE = '{"tokens": {"refresh_token": "CANARY-gcp-rt"}}'


def fake_of(target: StoreTarget) -> FakeSecretManager:
    server = target.extra["server"]
    assert isinstance(server, FakeSecretManager)
    return server


def name_of(target: StoreTarget) -> str:
    return str(target.extra["name"])


def updates(fake: FakeSecretManager, name: str) -> int:
    return sum(1 for method, resource in fake.calls if method == "UpdateSecret" and resource == name)


def test_create_if_absent_makes_the_secret_and_the_alias(gcp_target: StoreTarget) -> None:
    fake, name = fake_of(gcp_target), name_of(gcp_target)
    store = gcp_target.open()
    assert store.read() is None
    version = store.write(VALUE, None)
    secret = fake.get(name)
    assert secret is not None and secret.aliases == {gcp_store.ALIAS: int(version)}
    assert secret.versions[int(version)].data == VALUE.encode()
    got = store.read()
    assert got is not None and (got.value, got.version) == (VALUE, version)
    versions = len(secret.versions)
    with pytest.raises(StoreConflict):
        store.write("other", None)
    assert len(secret.versions) == versions  # refused before adding a version


def test_stale_expected_version_is_a_conflict(gcp_target: StoreTarget) -> None:
    store = gcp_target.open()
    v1 = store.write("one", None)
    store.write("two", v1)
    for expected in (v1, "garbage", "99"):
        with pytest.raises(StoreConflict) as caught:
            store.write("three", expected)
        assert caught.value.exit_code == ExitCode.CONFLICT
    got = store.read()
    assert got is not None and got.value == "two"


@pytest.mark.parametrize("code", ["FAILED_PRECONDITION", "ABORTED"])
@pytest.mark.parametrize("existing", [False, True], ids=["create", "update"])
def test_two_writers_past_the_alias_check_one_wins(gcp_target: StoreTarget, code: str, existing: bool) -> None:
    """Both writers read the same etag and add a version; the etag lets exactly one move the alias."""
    fake, name = fake_of(gcp_target), name_of(gcp_target)
    fake.etag_mismatch_code = getattr(grpc.StatusCode, code)
    base = gcp_target.open().write("base", None) if existing else None
    barrier = threading.Barrier(2, timeout=10)

    def meet(request: Any) -> None:
        if request.parent == name:
            barrier.wait()

    fake.hooks["AddSecretVersion"] = meet
    before = updates(fake, name)

    def attempt(i: int) -> str | None:
        try:
            return gcp_target.open().write(f"value-{i}", base)
        except StoreConflict:
            return None

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(attempt, range(2)))
    won = [r for r in results if r is not None]
    assert len(won) == 1, results
    assert updates(fake, name) - before == 2  # the loser was stopped by the etag, not the alias check
    secret = fake.get(name)
    assert secret is not None and str(secret.aliases[gcp_store.ALIAS]) == won[0]
    loser = [v for v in secret.versions.values() if str(v.number) not in (won[0], base)]
    assert len(loser) == 1 and loser[0].state == DESTROYED and loser[0].data == b""  # the orphan is destroyed
    got = gcp_target.open().read()
    assert got is not None and got.version == won[0] and got.value == f"value-{results.index(won[0])}"


@pytest.mark.parametrize("disturbance", ["label-change", "add-renews-etag"])
def test_an_etag_change_elsewhere_does_not_fail_the_write(gcp_target: StoreTarget, disturbance: str) -> None:
    fake, name = fake_of(gcp_target), name_of(gcp_target)
    store = gcp_target.open()
    v1 = store.write("one", None)
    touched: list[bool] = []
    if disturbance == "label-change":
        def touch_once(request: Any) -> None:
            if not touched:
                touched.append(True)
                fake.touch(name)
        fake.hooks["UpdateSecret"] = touch_once
    else:
        fake.add_changes_etag = True
    v2 = store.write("two", v1)
    got = store.read()
    assert got is not None and (got.value, got.version) == ("two", v2)
    secret = fake.get(name)
    assert secret is not None
    if touched:
        assert "touched" in secret.labels


def test_an_etag_that_keeps_changing_ends_in_a_conflict(gcp_target: StoreTarget) -> None:
    fake, name = fake_of(gcp_target), name_of(gcp_target)
    store = gcp_target.open()
    v1 = store.write("one", None)
    fake.hooks["UpdateSecret"] = lambda request: fake.touch(name)
    with pytest.raises(StoreConflict, match="kept changing"):
        store.write("two", v1)
    secret = fake.get(name)
    assert secret is not None and secret.aliases[gcp_store.ALIAS] == int(v1)
    assert secret.versions[max(secret.versions)].state == DESTROYED


def test_other_aliases_are_kept_and_a_secret_without_ours_reads_as_none(gcp_target: StoreTarget) -> None:
    fake, name = fake_of(gcp_target), name_of(gcp_target)
    prod = fake.put(name, b"someone else's", alias="prod")
    store = gcp_target.open()
    assert store.read() is None  # the secret exists, but holds no codex-ci value
    v1 = store.write("one", None)
    v2 = store.write("two", v1)
    secret = fake.get(name)
    assert secret is not None and secret.aliases == {"prod": prod, gcp_store.ALIAS: int(v2)}


def test_reads_follow_the_alias_not_latest(gcp_target: StoreTarget) -> None:
    fake, name = fake_of(gcp_target), name_of(gcp_target)
    store = gcp_target.open()
    v1 = store.write("ours", None)
    later = fake.put(name, b"a later version nobody aliased", alias=None)
    assert later > int(v1)
    got = store.read()
    assert got is not None and (got.value, got.version) == ("ours", v1)
    accessed = [resource for method, resource in fake.calls if method == "AccessSecretVersion" and name in resource]
    assert accessed and all(resource == f"{name}/versions/{gcp_store.ALIAS}" for resource in accessed)


def test_a_read_is_one_round_trip_by_alias(gcp_target: StoreTarget) -> None:
    """AccessSecretVersion on the alias alone; the version comes from the number in the answer's name."""
    fake, name = fake_of(gcp_target), name_of(gcp_target)
    store = gcp_target.open()
    assert store.read() is None  # no secret: NOT_FOUND
    fake.put(name, b"not ours", alias="prod")
    assert store.read() is None  # a secret without the alias: NOT_FOUND too
    version = store.write(VALUE, None)
    before = len(fake.calls)
    got = store.read()
    assert got is not None and (got.value, got.version) == (VALUE, version)
    assert fake.calls[before:] == [("AccessSecretVersion", f"{name}/versions/{gcp_store.ALIAS}")]


def test_an_answer_without_a_version_number_is_a_store_error(
    gcp_target: StoreTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.cloud.secretmanager_v1 import types

    class Client:
        def access_secret_version(self, request: dict[str, Any], **kw: Any) -> Any:
            return types.AccessSecretVersionResponse(name=request["name"], payload={"data": VALUE.encode()})

    monkeypatch.setattr(gcp_store._Sdk, "client", lambda self: Client())
    with pytest.raises(StoreError, match="without a version number") as caught:
        gcp_target.open().read()
    assert caught.value.exit_code == ExitCode.STORE and "CANARY" not in str(caught.value)


def test_a_corrupted_payload_fails_its_checksum(gcp_target: StoreTarget) -> None:
    fake, name = fake_of(gcp_target), name_of(gcp_target)
    store = gcp_target.open()
    version = store.write(VALUE, None)
    secret = fake.get(name)
    assert secret is not None
    secret.versions[int(version)].crc ^= 1
    with pytest.raises(StoreError, match="CRC32C") as caught:
        store.read()
    assert caught.value.exit_code == ExitCode.STORE and "CANARY" not in str(caught.value)


def test_writes_send_a_checksum_the_service_verifies(gcp_target: StoreTarget, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, name = fake_of(gcp_target), name_of(gcp_target)
    monkeypatch.setattr(gcp_store, "crc32c", lambda data: 12345)
    with pytest.raises(StoreError, match="INVALID_ARGUMENT"):
        gcp_target.open().write(VALUE, None)
    secret = fake.get(name)
    assert secret is not None and not secret.versions and not secret.aliases


def test_crc32c_matches_the_standard_check_value() -> None:
    assert gcp_store.crc32c(b"123456789") == 0xE3069283
    assert gcp_store.crc32c(b"") == 0


def test_a_disabled_alias_version_is_a_store_error(gcp_target: StoreTarget) -> None:
    fake, name = fake_of(gcp_target), name_of(gcp_target)
    store = gcp_target.open()
    version = store.write(VALUE, None)
    secret = fake.get(name)
    assert secret is not None
    secret.versions[int(version)].state = DISABLED
    with pytest.raises(StoreError, match="FAILED_PRECONDITION"):
        store.read()


def test_sibling() -> None:
    store = open_store("gcp://projects/p-1/secrets/codex", {"CODEX_CI_GCP_ENDPOINT": "127.0.0.1:1"})
    assert store.sibling("lease").url == "gcp://projects/p-1/secrets/codex-lease"
    long = open_store("gcp://projects/p-1/secrets/" + "s" * 255, {"CODEX_CI_GCP_ENDPOINT": "127.0.0.1:1"})
    with pytest.raises(ConfigError):
        long.sibling("lease")


@pytest.mark.parametrize("location", [
    "projects/p/secrets", "projects/p/secrets/", "projects//secrets/s", "projects/p/secrets/s/versions/1",
    "projects/p/locations/us-east1/secrets/s", "p/s", "projects/p/secrets/a.b", "projects/P/secrets/s",
])
def test_bad_locations_are_config_errors(location: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_store(f"gcp://{location}", {})
    assert caught.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize("endpoint", [
    "10.0.0.1:443", "secretmanager.googleapis.com:443", "127.0.0.2:80", "127.0.0.1", "localhost:0",
    "127.0.0.1:99999", "127.0.0.1:http", "evil.example:127.0.0.1:80", "::1:80", "http://127.0.0.1:80",
])
def test_a_non_loopback_endpoint_is_refused(endpoint: str) -> None:
    with pytest.raises(ConfigError, match="loopback"):
        open_store("gcp://projects/p/secrets/s", {"CODEX_CI_GCP_ENDPOINT": endpoint})


@pytest.mark.parametrize("endpoint", ["127.0.0.1:8085", "localhost:8085", "[::1]:8085"])
def test_loopback_endpoints_are_accepted(endpoint: str) -> None:
    open_store("gcp://projects/p/secrets/s", {"CODEX_CI_GCP_ENDPOINT": endpoint})


def test_missing_sdk_names_the_extra_and_nothing_is_imported_early() -> None:
    code = (
        "import sys\n"
        "import codex_ci.stores.gcp\n"
        "print(sorted(m for m in sys.modules if m.startswith(('google', 'grpc'))))\n"
        "sys.modules['google.cloud.secretmanager'] = None\n"
        "from codex_ci.errors import ConfigError\n"
        "from codex_ci.stores import open_store\n"
        "try:\n"
        "    open_store('gcp://projects/p/secrets/s', {})\n"
        "except ConfigError as e:\n"
        "    print(e.exit_code, e, '|', e.hint)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    early, error = proc.stdout.splitlines()
    assert early == "[]"
    assert error.startswith("2 the gcp store needs google-cloud-secret-manager")
    assert "pip install 'codex-ci[gcp]'" in error


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port that accepts TCP connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


def test_unreachable_endpoints_fail_in_bounded_time(
    gcp_target: StoreTarget, blackhole: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    for env in (gcp_target.unreachable_env, {"CODEX_CI_GCP_ENDPOINT": f"127.0.0.1:{blackhole}"}):
        if env is not gcp_target.unreachable_env:
            monkeypatch.setattr(gcp_store, "TIMEOUT", 1.0)  # a silent server: each call waits its full timeout
        store = gcp_target.open(env)
        for action in (store.read, lambda: store.write(VALUE, None)):
            started = time.monotonic()
            with pytest.raises(StoreError, match="cannot reach GCP Secret Manager") as caught:
                action()
            assert time.monotonic() - started < 5
            assert caught.value.exit_code == ExitCode.STORE and "\n" not in str(caught.value)


def test_gcp_timeout_is_short() -> None:
    assert gcp_store.TIMEOUT <= 10


def test_no_sdk_retry_on_unavailable(gcp_target: StoreTarget) -> None:
    """AccessSecretVersion's default SDK policy retries UNAVAILABLE for up to a minute: the store turns it off."""
    fake, name = fake_of(gcp_target), name_of(gcp_target)
    store = gcp_target.open()
    store.write(VALUE, None)
    fake.faults[f"{name}/versions/"] = grpc.StatusCode.UNAVAILABLE
    started = time.monotonic()
    with pytest.raises(StoreError, match="cannot reach GCP Secret Manager"):
        store.read()
    assert time.monotonic() - started < 2
    assert sum(1 for method, resource in fake.calls if method == "AccessSecretVersion" and name in resource) == 1


@pytest.mark.parametrize(("code", "message"), [
    ("UNAVAILABLE", "cannot reach GCP Secret Manager"),
    ("DEADLINE_EXCEEDED", "cannot reach GCP Secret Manager"),
    ("PERMISSION_DENIED", "permission denied"),
    ("UNAUTHENTICATED", "no GCP credentials"),
    ("RESOURCE_EXHAUSTED", "GCP Secret Manager answered RESOURCE_EXHAUSTED"),
    ("INTERNAL", "GCP Secret Manager answered INTERNAL"),
])
def test_service_errors_become_one_line_store_errors(gcp_target: StoreTarget, code: str, message: str) -> None:
    fake, name = fake_of(gcp_target), name_of(gcp_target)
    fake.faults[name] = getattr(grpc.StatusCode, code)
    store = gcp_target.open()
    for action in (store.read, lambda: store.write(VALUE, None)):
        with pytest.raises(StoreError) as caught:
            action()
        text = str(caught.value)
        assert caught.value.exit_code == ExitCode.STORE and message in text and gcp_target.url in text
        assert "injected" not in text and "\n" not in text  # the service's own text is not forwarded


def test_permission_denied_names_the_roles(gcp_target: StoreTarget) -> None:
    url = gcp_target.url.replace("/secrets/codex-", "/secrets/denied-")
    store = open_store(url, gcp_target.env)
    with pytest.raises(StoreError, match="permission denied") as caught:
        store.write(VALUE, None)
    hint = caught.value.hint or ""
    for needed in ("roles/secretmanager.secretAccessor", "roles/secretmanager.secretVersionAdder",
                   "secretmanager.secrets.update", "secretmanager.secrets.create", "-lease"):
        assert needed in hint


def test_no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CODEX_CI_GCP_ENDPOINT", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    store = open_store("gcp://projects/p/secrets/s", {})
    with pytest.raises(StoreError, match="no GCP credentials") as caught:
        store.read()
    assert caught.value.hint and "application default credentials" in caught.value.hint


def test_failing_credentials_are_not_reported_as_unreachable(
    gcp_target: StoreTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gRPC turns an exception while refreshing credentials (say a workload identity exchange) into UNAVAILABLE."""
    from google.auth import credentials
    from google.auth.exceptions import RefreshError
    from google.auth.transport import grpc as auth_grpc
    from google.auth.transport import requests as auth_requests
    from google.cloud.secretmanager import SecretManagerServiceClient
    from google.cloud.secretmanager_v1.services.secret_manager_service import transports

    class Broken(credentials.Credentials):  # type: ignore[misc]
        def refresh(self, request: Any) -> None:
            raise RefreshError("the exchange answered CANARY-body")

    plugin = auth_grpc.AuthMetadataPlugin(Broken(), auth_requests.Request())
    channel = grpc.secure_channel(fake_of(gcp_target).endpoint, grpc.composite_channel_credentials(
        grpc.local_channel_credentials(), grpc.metadata_call_credentials(plugin)))
    client = SecretManagerServiceClient(transport=transports.SecretManagerServiceGrpcTransport(channel=channel))
    monkeypatch.setattr(gcp_store._Sdk, "client", lambda self: client)
    with pytest.raises(StoreError, match="GCP credentials could not be used or refreshed") as caught:
        gcp_target.open().read()
    assert "CANARY" not in str(caught.value) and "reach" not in str(caught.value)


def test_no_value_in_errors_or_reprs(gcp_target: StoreTarget) -> None:
    fake, name = fake_of(gcp_target), name_of(gcp_target)
    store = gcp_target.open()
    version = store.write(VALUE, None)
    got = store.read()
    assert got is not None
    texts = [repr(store), repr(got), str(got)]
    errors: list[CodexCIError] = []

    def collect(action: Callable[[], object]) -> None:
        try:
            action()
        except CodexCIError as exc:
            errors.append(exc)
        else:
            pytest.fail("expected an error")

    collect(lambda: store.write(VALUE, None))  # conflict
    secret = fake.get(name)
    assert secret is not None
    secret.versions[int(version)].crc ^= 1
    collect(store.read)  # checksum
    secret.versions[int(version)].crc ^= 1
    assert gcp_target.denied_env is not None
    collect(lambda: gcp_target.open(gcp_target.denied_env).write(VALUE, version))
    collect(lambda: gcp_target.open(gcp_target.unreachable_env).write(VALUE, version))
    fake.faults[name] = grpc.StatusCode.INVALID_ARGUMENT
    collect(lambda: store.write(VALUE, version))
    del fake.faults[name]
    gcp_target.put_foreign()
    collect(store.read)
    assert isinstance(errors[-1], StoredValueError)
    for exc in errors:
        texts += [str(exc), repr(exc), exc.hint or ""]
        assert exc.__cause__ is None and exc.__suppress_context__ in (True, False)
    for text in texts:
        assert "CANARY" not in text and "refresh_token" not in text, text


def test_short_location_takes_the_project_from_the_environment(gcp_target) -> None:
    from codex_ci.stores import open_store

    env = {**gcp_target.env, "CODEX_CI_GCP_PROJECT": "codex-test"}
    assert open_store("gcp://short-secret", env).url == "gcp://projects/codex-test/secrets/short-secret"
    with pytest.raises(ConfigError):
        open_store("gcp://short-secret", gcp_target.env)
