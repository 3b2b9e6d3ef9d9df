"""AWS Secrets Manager: the value is the secret's SecretString, the version its AWSCURRENT VersionId.

Compare-and-set: PutSecretValue with only the AWSPENDING stage, then UpdateSecretVersionStage moves AWSCURRENT
from the version read to the new one, which fails if AWSCURRENT moved meanwhile. A secret created without a value
(e.g. by Terraform) gets its first value by PutSecretValue, which AWS makes AWSCURRENT only if it is the first.
boto3 is imported only here and only when an aws:// store is opened; no SDK text reaches a message.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Mapping
from typing import Any

from codex_ci.errors import ConfigError, StoreConflict, StoredValueError, StoreError
from codex_ci.stores.base import Store, Versioned, missing_extra

CURRENT, PENDING = "AWSCURRENT", "AWSPENDING"
NOT_FOUND, EXISTS, BAD_PARAMETER, BAD_STATE = (
    "ResourceNotFoundException", "ResourceExistsException", "InvalidParameterException", "InvalidRequestException")
DENIED = {"AccessDeniedException", "AccessDenied", "UnrecognizedClientException", "InvalidClientTokenId",
          "InvalidSignatureException", "SignatureDoesNotMatch", "ExpiredTokenException", "ExpiredToken",
          "DecryptionFailure", "EncryptionFailure", "KMSAccessDeniedException"}
THROTTLED = {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"}
ARN = re.compile(r"(?P<prefix>arn:[\w-]+:secretsmanager:(?P<region>[\w-]+):(?P<account>\d+):secret:)(?P<name>[^:]+)")
SUFFIX = re.compile(r"-[A-Za-z0-9]{6}$")  # the random part AWS appends to a secret's name in its full ARN
IAM_HINT = (
    "Allow secretsmanager:GetSecretValue, PutSecretValue, UpdateSecretVersionStage and CreateSecret on the secret "
    "and its -lease sibling (plus kms:Decrypt and kms:GenerateDataKey if it uses a customer managed KMS key)."
)


class AwsRequestError(StoreError):
    """A request AWS refused; ``code`` is its error code (an identifier, never SDK text)."""

    def __init__(self, message: str, code: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


class AwsStore:
    compare_and_set = True
    missing_hint = None

    def __init__(self, location: str, client: Any, region: str, *, creatable: bool | None = None) -> None:
        self._location = location
        self._client = client
        self._region = region
        match = ARN.fullmatch(location)
        self._arn = match
        self._is_arn = match is not None
        self._name = SUFFIX.sub("", match["name"]) if match else location
        # a secret named by its ARN is not created by codex-ci, except a sibling (the lease) in that same account
        self._creatable = match is None if creatable is None else creatable

    @property
    def url(self) -> str:
        return f"aws://{self._location}"

    @property
    def key(self) -> str:
        """Region, account (when an ARN names it) and name without ARN's random suffix."""
        account = self._arn["account"] if self._arn else ""
        return f"aws://{self._region}/{account}/{self._name}"

    def __repr__(self) -> str:
        return f"AwsStore({self.url!r})"

    def read(self) -> Versioned | None:
        try:
            answer = self._call("read", "get_secret_value", SecretId=self._location, VersionStage=CURRENT)
        except AwsRequestError as exc:
            if exc.code == NOT_FOUND:
                return None
            raise
        text = answer.get("SecretString")
        if not isinstance(text, str):
            raise StoredValueError(f"{self.url} holds a binary secret, not the text of an auth.json")
        return Versioned(text, str(answer["VersionId"]))

    def write(self, value: str, expected: str | None) -> str:
        text = value
        if expected is None:
            return self._create(text)
        try:
            new, _ = self._put(text)
        except AwsRequestError as exc:
            if exc.code == NOT_FOUND:
                raise StoreConflict(f"{self.url} no longer exists (expected version {expected})") from None
            raise
        try:
            self._call("move AWSCURRENT on", "update_secret_version_stage", SecretId=self._location,
                       VersionStage=CURRENT, MoveToVersionId=new, RemoveFromVersionId=expected)
        except AwsRequestError as exc:
            try:
                if self._current_version() == new:  # a retried move whose first attempt had succeeded
                    return new
            except StoreError:
                pass
            self._drop_pending(new)
            if exc.code in (BAD_PARAMETER, NOT_FOUND):
                raise StoreConflict(f"{self.url} changed (expected version {expected})") from None
            raise
        return new

    def check_writable(self) -> None:
        """Compare-and-set: a write that fails loses nothing the lease does not protect."""

    def sibling(self, suffix: str) -> Store:
        """``NAME-SUFFIX`` next to this secret: by partial ARN in the ARN's account and region when this one was
        named by ARN (a lease of a secret shared across accounts lives with it), else by name."""
        name = f"{self._name}-{suffix}"
        return AwsStore(f"{self._arn['prefix']}{name}" if self._arn else name, self._client, self._region,
                        creatable=True)

    def _create(self, text: str) -> str:
        if self._creatable:
            try:
                answer = self._call("create", "create_secret", Name=self._name, SecretString=text,
                                    ClientRequestToken=str(uuid.uuid4()))
            except AwsRequestError as exc:
                if exc.code != EXISTS:
                    raise
            else:
                self._check_account(str(answer.get("ARN", "")))
                return str(answer["VersionId"])
        if self._current_version() is not None:
            raise StoreConflict(f"{self.url} already exists")
        # The secret exists without a value (or is an ARN): its first version becomes AWSCURRENT by itself.
        try:
            new, stages = self._put(text)
        except AwsRequestError as exc:
            if exc.code != NOT_FOUND:
                raise
            if self._is_arn:
                raise StoreError(f"{self.url} does not exist and a secret cannot be created by ARN",
                                 hint="Create the secret first, or name it instead of giving its ARN.") from None
            raise StoreConflict(f"{self.url} vanished while being created") from None
        if CURRENT not in stages:
            self._drop_pending(new)
            raise StoreConflict(f"{self.url} already exists")
        return new

    def _check_account(self, created: str) -> None:
        """A secret named by ARN is created by name, so in the caller's account: undo that when the ARN names another
        account (runners of both accounts must share one lease, in the secret's own account)."""
        made = ARN.fullmatch(created)
        if self._arn is None or made is None or made["account"] == self._arn["account"]:
            return
        with contextlib.suppress(StoreError):
            self._call("clean up", "delete_secret", SecretId=created, ForceDeleteWithoutRecovery=True)
        raise StoreError(f"{self.url} does not exist, and codex-ci cannot create it in account "
                         f"{self._arn['account']} from another account",
                         hint=f"Create the secret {self._name} in account {self._arn['account']} (region "
                         f"{self._arn['region']}) and allow the runners' roles to use it.")

    def _put(self, text: str) -> tuple[str, list[str]]:
        answer = self._call("write", "put_secret_value", SecretId=self._location, SecretString=text,
                            ClientRequestToken=str(uuid.uuid4()), VersionStages=[PENDING])
        return str(answer["VersionId"]), [str(stage) for stage in answer.get("VersionStages", [])]

    def _current_version(self) -> str | None:
        try:
            return str(self._call("read", "get_secret_value", SecretId=self._location, VersionStage=CURRENT)
                       ["VersionId"])
        except AwsRequestError as exc:
            if exc.code == NOT_FOUND:
                return None
            raise

    def _drop_pending(self, version: str) -> None:
        """Best effort: a version without stages is deprecated, and AWS deletes it."""
        with contextlib.suppress(StoreError):
            self._call("clean up", "update_secret_version_stage", SecretId=self._location, VersionStage=PENDING,
                       RemoveFromVersionId=version)

    def _call(self, what: str, operation: str, **params: Any) -> dict[str, Any]:
        from botocore import exceptions as bx  # type: ignore[import-untyped,unused-ignore]

        try:
            answer: dict[str, Any] = getattr(self._client, operation)(**params)
            return answer
        except bx.ClientError as exc:
            raise _refused(self.url, what, exc.response) from None
        except (bx.NoCredentialsError, bx.PartialCredentialsError, bx.CredentialRetrievalError):
            raise StoreError(f"cannot {what} {self.url}: no AWS credentials found", hint=CREDENTIALS_HINT) from None
        except (bx.ConnectionError, bx.HTTPClientError) as exc:
            raise StoreError(f"cannot {what} {self.url}: cannot reach AWS Secrets Manager ({type(exc).__name__})",
                             hint="Check the network, the region and AWS_ENDPOINT_URL.") from None
        except bx.BotoCoreError as exc:
            raise StoreError(f"cannot {what} {self.url}: {type(exc).__name__}") from None


CREDENTIALS_HINT = ("Use aws-actions/configure-aws-credentials, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                    "(or AWS_PROFILE).")


def _refused(url: str, what: str, response: Mapping[str, Any]) -> AwsRequestError:
    raw = str(response.get("Error", {}).get("Code", ""))
    code = raw if re.fullmatch(r"[\w.]{1,64}", raw) else "unknown"
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in DENIED or status == 403:
        return AwsRequestError(f"cannot {what} {url}: permission denied ({code})", code, hint=IAM_HINT)
    if code in THROTTLED or status == 429:
        return AwsRequestError(f"cannot {what} {url}: throttled by AWS ({code})", code,
                               hint="Nothing was changed. Try again later.")
    if code == BAD_STATE:
        return AwsRequestError(f"cannot {what} {url}: the secret is scheduled for deletion or not usable ({code})",
                               code, hint="Restore it (aws secretsmanager restore-secret) or use another name.")
    return AwsRequestError(f"cannot {what} {url}: AWS Secrets Manager answered {code} (HTTP {status})", code)


def open_store(location: str, env: Mapping[str, str]) -> AwsStore:
    try:
        import boto3  # type: ignore[import-untyped,unused-ignore]
        from botocore import exceptions as bx  # type: ignore[import-untyped,unused-ignore]
        from botocore.config import Config  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise missing_extra("aws") from None
    match = ARN.fullmatch(location)
    try:
        if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
            session = boto3.Session(aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                                    aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                                    aws_session_token=env.get("AWS_SESSION_TOKEN") or None)
        else:  # the default chain: profile, web identity, container or instance role
            session = boto3.Session(profile_name=env.get("AWS_PROFILE") or None)
        # An ARN names its region, and a client in another region cannot reach it.
        region = (env.get("CODEX_CI_AWS_REGION") or (match["region"] if match else None) or env.get("AWS_REGION")
                  or env.get("AWS_DEFAULT_REGION") or session.region_name)
        if not region:
            raise ConfigError(f"no AWS region for aws://{location}",
                             hint="Set AWS_REGION (or CODEX_CI_AWS_REGION), or give the secret's ARN.")
        config = Config(connect_timeout=5, read_timeout=10, retries={"mode": "standard", "max_attempts": 3},
                        user_agent_extra="codex-ci")
        client = session.client("secretsmanager", region_name=region, config=config,
                                endpoint_url=env.get("AWS_ENDPOINT_URL_SECRETS_MANAGER") or env.get("AWS_ENDPOINT_URL")
                                or None)
    except (bx.BotoCoreError, ValueError) as exc:
        raise StoreError(f"cannot open aws://{location}: {type(exc).__name__}",
                         hint="Check AWS_PROFILE, the region and AWS_ENDPOINT_URL.") from None
    return AwsStore(location, client, str(region))
