"""The AWS Secrets Manager store: its own behaviour beyond the shared contract (a moto server, and botocore's
Stubber where moto cannot produce AWS's exact answer)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import boto3
import pytest
from botocore.stub import Stubber

from codex_ci.errors import ConfigError, ExitCode, StoredValueError, StoreError
from codex_ci.stores import StoreConflict
from codex_ci.stores.aws import AwsStore, open_store
from testing.servers import free_port
from testing.targets import StoreTarget
from testing.targets.aws import MotoServer

V1, V2 = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
V3 = "33333333-3333-4333-8333-333333333333"
SECRET = '{"tokens": {"refresh_token": "CANARY-rt-aws"}}'


def stages(client: Any, secret: str) -> dict[str, list[str]]:
    return dict(client.describe_secret(SecretId=secret)["VersionIdsToStages"])


def client_of(target: StoreTarget) -> Any:
    return target.extra["client"]


def name_of(target: StoreTarget) -> str:
    return str(target.extra["name"])


def open_env(target: StoreTarget, url: str | None = None, **extra: str) -> AwsStore:
    store = open_store((url or target.url).removeprefix("aws://"), {**target.env, **extra})
    return store


# --- against moto ---------------------------------------------------------------------------------------------


def test_create_if_absent(aws_target: StoreTarget) -> None:
    store = open_env(aws_target)
    version = store.write(SECRET, None)
    with pytest.raises(StoreConflict) as caught:
        store.write("other", None)
    assert caught.value.exit_code == ExitCode.CONFLICT
    got = store.read()
    assert got is not None and got.value == SECRET and got.version == version


def test_cas_success_and_conflict(aws_target: StoreTarget) -> None:
    store, client = open_env(aws_target), client_of(aws_target)
    v1 = store.write("one", None)
    v2 = store.write("two", v1)
    assert v2 != v1
    with pytest.raises(StoreConflict):
        store.write("three", v1)
    got = store.read()
    assert got is not None and (got.value, got.version) == ("two", v2)
    # the losing version was stripped of AWSPENDING, so AWS may delete it and rotation is not blocked
    labelled = {v: s for v, s in stages(client, name_of(aws_target)).items() if s}
    assert labelled[v2] and "AWSCURRENT" in labelled[v2] and labelled[v1] == ["AWSPREVIOUS"]
    assert set(labelled) == {v1, v2}


def test_two_writers_race_on_one_version_exactly_one_wins(aws_target: StoreTarget) -> None:
    base = open_env(aws_target).write("base", None)
    barrier, results = threading.Barrier(2), dict[int, str | None]()

    def attempt(i: int) -> None:
        store = open_env(aws_target)
        barrier.wait()
        try:
            results[i] = store.write(f"writer-{i}", base)
        except StoreConflict:
            results[i] = None

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, version in results.items() if version]
    assert len(winners) == 1, results
    got = open_env(aws_target).read()
    assert got is not None and got.value == f"writer-{winners[0]}" and got.version == results[winners[0]]
    pending = [v for v, s in stages(client_of(aws_target), name_of(aws_target)).items()
               if "AWSPENDING" in s and v != got.version]
    assert pending == []


def test_read_follows_a_stage_move_by_another_writer(aws_target: StoreTarget) -> None:
    store, client, name = open_env(aws_target), client_of(aws_target), name_of(aws_target)
    v1 = store.write("old", None)
    v2 = client.put_secret_value(SecretId=name, SecretString="new", VersionStages=["AWSPENDING"])["VersionId"]
    client.update_secret_version_stage(SecretId=name, VersionStage="AWSCURRENT", MoveToVersionId=v2,
                                       RemoveFromVersionId=v1)
    got = store.read()
    assert got is not None and (got.value, got.version) == ("new", v2)
    with pytest.raises(StoreConflict):
        store.write("stale", v1)


def test_arn_round_trip(aws_target: StoreTarget) -> None:
    by_name = open_env(aws_target)
    v1 = by_name.write("one", None)
    arn = client_of(aws_target).describe_secret(SecretId=name_of(aws_target))["ARN"]
    by_arn = open_env(aws_target, f"aws://{arn}")
    assert by_arn.url == f"aws://{arn}"
    got = by_arn.read()
    assert got is not None and (got.value, got.version) == ("one", v1)
    v2 = by_arn.write("two", v1)
    with pytest.raises(StoreConflict):
        by_arn.write("again", None)
    got = by_name.read()
    assert got is not None and (got.value, got.version) == ("two", v2)


def test_missing_arn_cannot_be_created(aws_target: StoreTarget) -> None:
    arn = f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{name_of(aws_target)}-AbCdEf"
    store = open_env(aws_target, f"aws://{arn}")
    assert store.read() is None
    with pytest.raises(StoreError) as caught:
        store.write("one", None)
    assert not isinstance(caught.value, StoreConflict) and "created by ARN" in str(caught.value)


@pytest.mark.parametrize("by_arn", [False, True])
def test_precreated_empty_secret_takes_its_first_value(aws_target: StoreTarget, by_arn: bool) -> None:
    client, name = client_of(aws_target), name_of(aws_target)
    arn = client.create_secret(Name=name)["ARN"]  # e.g. made by Terraform, without a value
    store = open_env(aws_target, f"aws://{arn}" if by_arn else None)
    assert store.read() is None
    version = store.write("first", None)
    got = store.read()
    assert got is not None and (got.value, got.version) == ("first", version)
    with pytest.raises(StoreConflict):
        store.write("second", None)
    assert [v for v, s in stages(client, name).items() if s] == [version]


def test_sibling_naming() -> None:
    client = object()
    assert AwsStore("codex/login", client, "us-east-1").sibling("lease").url == "aws://codex/login-lease"
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:codex/login-Ab12Cd"
    # by partial ARN: the lease of a secret shared from another account lives in that account, next to it
    assert AwsStore(arn, client, "eu-west-1").sibling("lease").url == \
        "aws://arn:aws:secretsmanager:eu-west-1:123456789012:secret:codex/login-lease"


def test_region_from_arn_and_sibling_stays_there(aws_target: StoreTarget) -> None:
    server = cast(MotoServer, aws_target.extra["server"])
    eu = server.client("eu-west-1")
    name = name_of(aws_target)
    arn = eu.create_secret(Name=name, SecretString="in-ireland")["ARN"]
    store = open_env(aws_target, f"aws://{arn}")  # the env says AWS_REGION=us-east-1
    assert store._client.meta.region_name == "eu-west-1"
    got = store.read()
    assert got is not None and got.value == "in-ireland"
    store.sibling("lease").write("lease", None)
    assert eu.describe_secret(SecretId=f"{name}-lease")["Name"] == f"{name}-lease"
    assert open_env(aws_target, f"aws://{name}-lease").read() is None  # not in us-east-1
    assert open_env(aws_target, f"aws://{arn}", CODEX_CI_AWS_REGION="ap-south-1")._client.meta.region_name == \
        "ap-south-1"


def test_the_lease_of_a_secret_in_another_account_is_not_made_in_ours(aws_target: StoreTarget) -> None:
    """A secret shared from another account, named by its ARN: its lease must live next to it, in that account
    (runners of both accounts share it). codex-ci can only create a secret in the caller's account, so it removes
    what it made there and says which secret to create."""
    name = name_of(aws_target)
    arn = f"arn:aws:secretsmanager:us-east-1:999999999999:secret:{name}-Ab12Cd"
    lease = open_env(aws_target, f"aws://{arn}").sibling("lease")
    assert lease.url == f"aws://arn:aws:secretsmanager:us-east-1:999999999999:secret:{name}-lease"
    with pytest.raises(StoreError) as caught:
        lease.write('{"holder": "runner-a"}', None)
    assert caught.value.exit_code == ExitCode.STORE and not isinstance(caught.value, StoreConflict)
    assert "999999999999" in caught.value.message and f"{name}-lease" in (caught.value.hint or "")
    with pytest.raises(client_of(aws_target).exceptions.ResourceNotFoundException):
        client_of(aws_target).describe_secret(SecretId=f"{name}-lease")  # nothing left in the caller's account


def test_the_key_tells_regions_and_accounts_apart() -> None:
    client = object()
    assert AwsStore("codex/login", client, "us-east-1").key == "aws://us-east-1//codex/login"
    assert AwsStore("codex/login", client, "eu-west-1").key == "aws://eu-west-1//codex/login"
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:codex/login-Ab12Cd"
    assert AwsStore(arn, client, "eu-west-1").key == "aws://eu-west-1/123456789012/codex/login"


def test_scheduled_for_deletion(aws_target: StoreTarget) -> None:
    store = open_env(aws_target)
    store.write("one", None)
    client_of(aws_target).delete_secret(SecretId=name_of(aws_target), RecoveryWindowInDays=7)
    for action in (store.read, lambda: store.write("two", None)):
        with pytest.raises(StoreError) as caught:
            action()
        assert "scheduled for deletion" in str(caught.value) and caught.value.hint


def test_foreign_binary_secret(aws_target: StoreTarget) -> None:
    aws_target.put_foreign()
    with pytest.raises(StoredValueError) as caught:
        open_env(aws_target).read()
    assert aws_target.url in str(caught.value)


def test_permission_denied_is_real(aws_target: StoreTarget) -> None:
    assert aws_target.denied_env is not None
    open_env(aws_target).write(SECRET, None)
    store = open_store(aws_target.url[6:], aws_target.denied_env)
    with pytest.raises(StoreError) as caught:
        store.read()
    assert "permission denied" in str(caught.value) and "secretsmanager:GetSecretValue" in (caught.value.hint or "")
    assert "CANARY" not in str(caught.value) + repr(caught.value)


def test_unreachable_fails_fast(aws_target: StoreTarget) -> None:
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        open_store(aws_target.url[6:], aws_target.unreachable_env).write(SECRET, None)
    assert time.monotonic() - started < 10
    assert "cannot reach AWS Secrets Manager" in str(caught.value) and "\n" not in str(caught.value)


def test_no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = open_store("codex/login", {"AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"})
    with pytest.raises(StoreError) as caught:
        store.read()
    assert "no AWS credentials found" in str(caught.value) and caught.value.hint


def test_no_region(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ConfigError) as caught:  # a setup error (exit 2), found before any call
        open_store("codex/login", {})
    assert "region" in str(caught.value) and caught.value.exit_code == 2


def test_missing_boto3_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['boto3'] = None\n"
        "from codex_ci.stores import open_store\n"
        "from codex_ci.errors import ConfigError\n"
        "try:\n    open_store('aws://codex/login', {'AWS_REGION': 'us-east-1'})\n"
        "except ConfigError as exc:\n    print(exc.exit_code, exc, '|', exc.hint)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("2 ") and "boto3" in out.stdout and "pip install 'codex-ci[aws]'" in out.stdout


# --- AWS's own answers, through botocore's Stubber ------------------------------------------------------------


@pytest.fixture
def stubbed() -> Iterator[tuple[AwsStore, Stubber]]:
    client = boto3.client("secretsmanager", region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="x")
    with Stubber(client) as stub:
        yield AwsStore("codex/login", client, "us-east-1"), stub
        stub.assert_no_pending_responses()


@pytest.mark.parametrize(("code", "status", "words"), [
    ("AccessDeniedException", 400, "permission denied"),
    ("UnrecognizedClientException", 400, "permission denied"),
    ("ThrottlingException", 400, "throttled"),
    ("InternalServiceError", 500, "InternalServiceError"),
])
def test_errors_are_translated_without_sdk_text(stubbed: tuple[AwsStore, Stubber], code: str, status: int,
                                                words: str) -> None:
    store, stub = stubbed
    stub.add_client_error("get_secret_value", code, "CANARY-in-the-sdk-message", http_status_code=status)
    with pytest.raises(StoreError) as caught:
        store.read()
    text = str(caught.value) + repr(caught.value) + str(caught.value.hint)
    assert words in str(caught.value) and "aws://codex/login" in str(caught.value)
    assert "CANARY" not in text and caught.value.exit_code == ExitCode.STORE
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    if words == "permission denied":
        hint = caught.value.hint or ""
        assert all(a in hint for a in ("GetSecretValue", "PutSecretValue", "UpdateSecretVersionStage",
                                       "CreateSecret", "-lease"))


def test_no_secret_in_messages_or_reprs(stubbed: tuple[AwsStore, Stubber]) -> None:
    store, stub = stubbed
    stub.add_response("get_secret_value", {"SecretString": SECRET, "VersionId": V1})
    stub.add_client_error("put_secret_value", "ValidationException", SECRET)
    got = store.read()
    assert got is not None
    with pytest.raises(StoreError) as caught:
        store.write(SECRET, got.version)
    for text in (repr(got), str(got), repr(store), str(caught.value), repr(caught.value), caught.value.hint or ""):
        assert "CANARY" not in text


def test_stage_move_retried_after_success_is_a_success(stubbed: tuple[AwsStore, Stubber]) -> None:
    store, stub = stubbed
    stub.add_response("put_secret_value", {"VersionId": V2, "VersionStages": ["AWSPENDING"]})
    stub.add_client_error("update_secret_version_stage", "InvalidParameterException", "stage not on version")
    stub.add_response("get_secret_value", {"SecretString": "x", "VersionId": V2})
    assert store.write("x", V1) == V2


def test_stage_move_conflict_drops_the_orphan(stubbed: tuple[AwsStore, Stubber]) -> None:
    store, stub = stubbed
    stub.add_response("put_secret_value", {"VersionId": V2, "VersionStages": ["AWSPENDING"]})
    stub.add_client_error("update_secret_version_stage", "InvalidParameterException", "stage not on version")
    stub.add_response("get_secret_value", {"SecretString": "x", "VersionId": V3})
    stub.add_response("update_secret_version_stage", {}, {"SecretId": "codex/login", "VersionStage": "AWSPENDING",
                                                          "RemoveFromVersionId": V2})
    with pytest.raises(StoreConflict):
        store.write("x", V1)


def test_secret_vanishing_during_cas_is_a_conflict(stubbed: tuple[AwsStore, Stubber]) -> None:
    store, stub = stubbed
    stub.add_client_error("put_secret_value", "ResourceNotFoundException", "gone")
    with pytest.raises(StoreConflict):
        store.write("x", V1)


def test_deleted_name_on_create_is_reported(stubbed: tuple[AwsStore, Stubber]) -> None:
    store, stub = stubbed  # real AWS: CreateSecret on a name scheduled for deletion is InvalidRequestException
    stub.add_client_error("create_secret", "InvalidRequestException", "scheduled for deletion")
    with pytest.raises(StoreError) as caught:
        store.write("x", None)
    assert "scheduled for deletion" in str(caught.value)


def test_non_utf8_binary_secret_is_refused(stubbed: tuple[AwsStore, Stubber]) -> None:
    store, stub = stubbed  # a value codex-ci never writes (it writes SecretString text): not read as a login
    stub.add_response("get_secret_value", {"SecretBinary": b"\xff\xfe", "VersionId": V1})
    with pytest.raises(StoredValueError) as caught:
        store.read()
    assert caught.value.exit_code == ExitCode.INVALID and "aws://codex/login" in str(caught.value)


def test_token_is_fresh_per_write(stubbed: tuple[AwsStore, Stubber]) -> None:
    store, stub = stubbed
    tokens = []
    for version in (V2, V3):
        stub.add_response("put_secret_value", {"VersionId": version, "VersionStages": ["AWSPENDING"]})
        stub.add_response("update_secret_version_stage", {})
    store._client.meta.events.register("provide-client-params.secrets-manager.PutSecretValue",
                                       lambda params, **_: tokens.append(params["ClientRequestToken"]))
    store.write("a", V1)
    store.write("b", V2)
    assert len(set(tokens)) == 2 and all(uuid.UUID(t) for t in tokens)
