"""A loopback gRPC fake of GCP Secret Manager (google.cloud.secretmanager.v1.SecretManagerService).

Speaks the real wire protocol, so the real ``google-cloud-secret-manager`` client talks to it over
``grpc.insecure_channel``. In memory and thread-safe. Follows the real service where codex-ci depends on it:

- names in answers carry the project *number* (``projects/<digits>/...``), requests may use the id or number;
- ``UpdateSecret`` needs an ``update_mask``, replaces whole fields, checks ``etag`` (FAILED_PRECONDITION on a
  mismatch, or ``etag_mismatch_code``) and gives the secret a new quoted etag on every change; aliases must name
  live versions;
- ``AddSecretVersion`` verifies ``data_crc32c`` when sent (INVALID_ARGUMENT on a mismatch), stores one always,
  and ``AccessSecretVersion`` returns it; versions resolve by number, ``latest`` or alias.

Faults: ``faults`` maps a substring of a resource name to the status every call on it fails with (by default
PERMISSION_DENIED for names containing "denied"; add e.g. ``{"x": grpc.StatusCode.UNAVAILABLE}``); ``deny_all``
denies everything. ``hooks[method](request)`` runs before a method (outside the lock, so it may block or call
the server); ``calls`` logs ``(method, resource name)``; ``reset()`` restores the defaults.

In a child process (so that the parent never starts gRPC and may fork): ``python -m testing.fake_secretmanager
--port N`` serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import re
import signal
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.cloud.secretmanager_v1 import types as t
from google.protobuf import empty_pb2, timestamp_pb2

SERVICE = "google.cloud.secretmanager.v1.SecretManagerService"
SECRET_NAME = re.compile(r"projects/([^/]+)/secrets/([^/]+)")
VERSION_NAME = re.compile(r"projects/([^/]+)/secrets/([^/]+)/versions/([^/]+)")
SECRET_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
State = t.SecretVersion.State
ENABLED, DISABLED, DESTROYED = State.ENABLED, State.DISABLED, State.DESTROYED


def crc32c(data: bytes) -> int:
    """Bitwise CRC-32C, deliberately not the store's table version."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


class Fail(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class Version:
    number: int
    data: bytes
    crc: int
    state: Any = ENABLED
    created: float = field(default_factory=time.time)


@dataclass
class Secret:
    project: str
    secret_id: str
    etag: str
    created: float = field(default_factory=time.time)
    versions: dict[int, Version] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


class FakeSecretManager:
    def __init__(self, *, deny_all: bool = False, port: int = 0) -> None:
        self.deny_all = deny_all
        self.secrets: dict[tuple[str, str], Secret] = {}
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.RLock()
        self._etags = 0
        self._server: Any = None
        self.port = port
        self.reset()

    def reset(self) -> None:
        """Default behaviour again (the stored secrets stay)."""
        self.faults: dict[str, grpc.StatusCode] = {"denied": grpc.StatusCode.PERMISSION_DENIED}
        self.etag_mismatch_code = grpc.StatusCode.FAILED_PRECONDITION
        self.add_changes_etag = False  # whether AddSecretVersion also renews the secret's etag
        self.hooks: dict[str, Callable[[Any], None]] = {}

    # ---- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> FakeSecretManager:
        methods: dict[str, tuple[Any, Callable[..., bytes], Callable[[Any], Any]]] = {
            "CreateSecret": (t.CreateSecretRequest, t.Secret.serialize, self._create_secret),
            "GetSecret": (t.GetSecretRequest, t.Secret.serialize, self._get_secret),
            "UpdateSecret": (t.UpdateSecretRequest, t.Secret.serialize, self._update_secret),
            "DeleteSecret": (t.DeleteSecretRequest, empty_pb2.Empty.SerializeToString, self._delete_secret),
            "AddSecretVersion": (t.AddSecretVersionRequest, t.SecretVersion.serialize, self._add_version),
            "GetSecretVersion": (t.GetSecretVersionRequest, t.SecretVersion.serialize, self._get_version),
            "AccessSecretVersion": (t.AccessSecretVersionRequest, t.AccessSecretVersionResponse.serialize,
                                    self._access_version),
            "DisableSecretVersion": (t.DisableSecretVersionRequest, t.SecretVersion.serialize,
                                     lambda req: self._set_state(req, DISABLED)),
            "EnableSecretVersion": (t.EnableSecretVersionRequest, t.SecretVersion.serialize,
                                    lambda req: self._set_state(req, ENABLED)),
            "DestroySecretVersion": (t.DestroySecretVersionRequest, t.SecretVersion.serialize,
                                     lambda req: self._set_state(req, DESTROYED)),
        }
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                self._wrap(name, impl), request_deserializer=request.deserialize, response_serializer=serialize)
            for name, (request, serialize, impl) in methods.items()
        }
        self._server = grpc.server(ThreadPoolExecutor(max_workers=16))
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self.port = self._server.add_insecure_port(f"127.0.0.1:{self.port}")
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0).wait(5)

    def __enter__(self) -> FakeSecretManager:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    # ---- plumbing --------------------------------------------------------------------------------------------

    def _wrap(self, method: str, impl: Callable[[Any], Any]) -> Callable[[Any, grpc.ServicerContext], Any]:
        def handler(request: Any, context: grpc.ServicerContext) -> Any:
            if method == "CreateSecret":
                name = f"{request.parent}/secrets/{request.secret_id}"
            else:
                name = request.secret.name if method == "UpdateSecret" else \
                    request.parent if method == "AddSecretVersion" else request.name
            self.calls.append((method, name))
            try:
                if self.deny_all:
                    raise Fail(grpc.StatusCode.PERMISSION_DENIED, f"Permission denied on resource {name}")
                for word, code in list(self.faults.items()):
                    if word in name:
                        raise Fail(code, f"{code.name} on resource {name} (injected)")
                hook = self.hooks.get(method)
                if hook is not None:
                    hook(request)
                with self._lock:
                    return impl(request)
            except Fail as fail:
                context.abort(fail.code, fail.message)

        return handler

    @staticmethod
    def number(project: str) -> str:
        """The project number the fake answers with for a project id."""
        return project if project.isdigit() else str(100_000_000_000 + zlib.crc32(project.encode()) % 10**9)

    def _find(self, name: str, *, must: bool = True) -> Secret | None:
        match = SECRET_NAME.fullmatch(name)
        if not match:
            raise Fail(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid resource field value in the request: {name}")
        for secret in self.secrets.values():
            if secret.secret_id == match[2] and match[1] in (secret.project, self.number(secret.project)):
                return secret
        if must:
            raise Fail(grpc.StatusCode.NOT_FOUND, f"Secret [{name}] not found or has no versions.")
        return None

    def _version(self, name: str) -> tuple[Secret, Version]:
        match = VERSION_NAME.fullmatch(name)
        if not match:
            raise Fail(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid resource field value in the request: {name}")
        secret = self._find(f"projects/{match[1]}/secrets/{match[2]}")
        assert secret is not None
        ref = match[3]
        if ref == "latest":
            number = max(secret.versions, default=None)
        elif ref.isdigit():
            number = int(ref)
        else:
            number = secret.aliases.get(ref)
        if number is None or number not in secret.versions:
            raise Fail(grpc.StatusCode.NOT_FOUND, f"Secret Version [{name}] not found.")
        return secret, secret.versions[number]

    def _renew(self, secret: Secret) -> None:
        self._etags += 1
        secret.etag = f'"{time.time_ns():x}{self._etags:04x}"'

    def _secret_pb(self, secret: Secret) -> t.Secret:
        return t.Secret(
            name=f"projects/{self.number(secret.project)}/secrets/{secret.secret_id}",
            replication={"automatic": {}}, create_time=_timestamp(secret.created), etag=secret.etag,
            version_aliases=secret.aliases, labels=secret.labels)

    def _version_pb(self, secret: Secret, version: Version) -> t.SecretVersion:
        return t.SecretVersion(
            name=f"projects/{self.number(secret.project)}/secrets/{secret.secret_id}/versions/{version.number}",
            create_time=_timestamp(version.created), state=version.state, client_specified_payload_checksum=True)

    # ---- methods -----------------------------------------------------------------------------------------------

    def _create_secret(self, req: t.CreateSecretRequest) -> t.Secret:
        match = re.fullmatch(r"projects/([^/]+)", req.parent)
        if not match or not SECRET_ID.fullmatch(req.secret_id):
            raise Fail(grpc.StatusCode.INVALID_ARGUMENT, "Invalid parent or secret_id")
        if "replication" not in req.secret:
            raise Fail(grpc.StatusCode.INVALID_ARGUMENT, "Secret.replication is required")
        name = f"{req.parent}/secrets/{req.secret_id}"
        if self._find(name, must=False) is not None:
            raise Fail(grpc.StatusCode.ALREADY_EXISTS, f"Secret [{name}] already exists.")
        project = match[1]
        for known in {p for p, _ in self.secrets}:
            if self.number(known) == project:
                project = known
        secret = Secret(project, req.secret_id, etag="", labels=dict(req.secret.labels))
        self._renew(secret)
        self.secrets[(project, req.secret_id)] = secret
        return self._secret_pb(secret)

    def _get_secret(self, req: t.GetSecretRequest) -> t.Secret:
        secret = self._find(req.name)
        assert secret is not None
        return self._secret_pb(secret)

    def _update_secret(self, req: t.UpdateSecretRequest) -> t.Secret:
        secret = self._find(req.secret.name)
        assert secret is not None
        paths = list(req.update_mask.paths)
        if not paths or any(p not in ("version_aliases", "labels") for p in paths):
            raise Fail(grpc.StatusCode.INVALID_ARGUMENT, f"Unsupported update_mask {paths}")
        if req.secret.etag and req.secret.etag != secret.etag:
            raise Fail(self.etag_mismatch_code, "The etag provided in the request does not match the current etag.")
        if "version_aliases" in paths:
            aliases = dict(req.secret.version_aliases)
            for alias, number in aliases.items():
                version = secret.versions.get(number)
                if alias == "latest" or version is None or version.state == DESTROYED:
                    raise Fail(grpc.StatusCode.INVALID_ARGUMENT, f"Alias {alias} names no usable version")
            secret.aliases = aliases
        if "labels" in paths:
            secret.labels = dict(req.secret.labels)
        self._renew(secret)
        return self._secret_pb(secret)

    def _delete_secret(self, req: t.DeleteSecretRequest) -> empty_pb2.Empty:
        secret = self._find(req.name)
        assert secret is not None
        if req.etag and req.etag != secret.etag:
            raise Fail(self.etag_mismatch_code, "etag mismatch")
        del self.secrets[(secret.project, secret.secret_id)]
        return empty_pb2.Empty()

    def _add_version(self, req: t.AddSecretVersionRequest) -> t.SecretVersion:
        secret = self._find(req.parent)
        assert secret is not None
        data = bytes(req.payload.data)
        if len(data) > 65536:
            raise Fail(grpc.StatusCode.INVALID_ARGUMENT, "Secret payload too large")
        if "data_crc32c" in req.payload and req.payload.data_crc32c != crc32c(data):
            raise Fail(grpc.StatusCode.INVALID_ARGUMENT, "Checksum mismatch on secret version payload.")
        version = Version(max(secret.versions, default=0) + 1, data, crc32c(data))
        secret.versions[version.number] = version
        if self.add_changes_etag:
            self._renew(secret)
        return self._version_pb(secret, version)

    def _get_version(self, req: t.GetSecretVersionRequest) -> t.SecretVersion:
        return self._version_pb(*self._version(req.name))

    def _access_version(self, req: t.AccessSecretVersionRequest) -> t.AccessSecretVersionResponse:
        secret, version = self._version(req.name)
        if version.state != ENABLED:
            raise Fail(grpc.StatusCode.FAILED_PRECONDITION, f"Secret Version [{req.name}] is in {version.state.name} "
                       "state.")
        return t.AccessSecretVersionResponse(
            name=self._version_pb(secret, version).name, payload={"data": version.data, "data_crc32c": version.crc})

    def _set_state(self, req: Any, state: Any) -> t.SecretVersion:
        secret, version = self._version(req.name)
        if version.state == DESTROYED:
            raise Fail(grpc.StatusCode.FAILED_PRECONDITION, "The version is destroyed.")
        version.state = state
        if state == DESTROYED:
            version.data = b""
        return self._version_pb(secret, version)

    # ---- direct access for tests (no gRPC) -----------------------------------------------------------------------

    def put(self, name: str, data: bytes, alias: str | None = "codex-ci") -> int:
        """Add a version holding ``data`` (creating the secret) and, unless ``alias`` is None, point it there."""
        match = SECRET_NAME.fullmatch(name)
        assert match, name
        with self._lock:
            secret = self._find(name, must=False)
            if secret is None:
                secret = self.secrets.setdefault((match[1], match[2]), Secret(match[1], match[2], etag=""))
            number = max(secret.versions, default=0) + 1
            secret.versions[number] = Version(number, data, crc32c(data))
            if alias is not None:
                secret.aliases[alias] = number
            self._renew(secret)
            return number

    def touch(self, name: str) -> None:
        """Change the secret's metadata (a label), as another tool might: a new etag, the aliases unchanged."""
        with self._lock:
            secret = self._find(name)
            assert secret is not None
            secret.labels["touched"] = str(len(secret.labels))
            self._renew(secret)

    def get(self, name: str) -> Secret | None:
        with self._lock:
            return self._find(name, must=False)


def main(argv: list[str] | None = None) -> int:
    """Serve on ``--port`` until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description="A loopback gRPC fake of GCP Secret Manager.")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with FakeSecretManager(port=args.port):
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
