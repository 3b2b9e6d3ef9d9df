"""The store Protocol, store URLs and the lazy registry.

A store holds one value (the auth.json text) with a version, and writes it by compare-and-set where it can: every
store but ``github`` (Actions secrets: write-only, last writer wins) says so with ``compare_and_set``, and codex-ci
refuses what needs it on the others. Each store module is imported only when its scheme is used, and imports its
SDK only then, so ``seed`` and ``status`` never load boto3, google.cloud, hvac or PyNaCl.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from codex_ci.errors import ConfigError, ConflictError

SCHEMES = ("vault", "aws", "gcp", "github", "file")
EXTRAS = {"vault": ("hvac", "vault"), "aws": ("boto3", "aws"), "gcp": ("google-cloud-secret-manager", "gcp"),
          "github": ("PyNaCl", "github")}
MODULES = {"github": "github_secrets"}  # a scheme whose module is not named like it
URL_FORMS = ("vault://MOUNT/PATH, aws://SECRET, gcp://projects/P/secrets/S, github://OWNER/REPO/NAME "
             "(or github://OWNER/REPO/environments/ENV/NAME, github://orgs/ORG/NAME) or file://PATH")


@dataclass(frozen=True)
class Versioned:
    """A stored value and the opaque version a compare-and-set write must name."""

    value: bytes
    version: str

    def __repr__(self) -> str:
        return f"Versioned(version={self.version!r}, value=[secure])"


class StoreConflict(ConflictError):
    """A compare-and-set write lost: the store holds another version than the one named (or the secret exists)."""


class Store(Protocol):
    """One secret location."""

    @property
    def url(self) -> str:
        """A description for logs (the store URL; never a credential)."""

    @property
    def compare_and_set(self) -> bool:
        """False when ``write`` cannot honour ``expected`` (last writer wins): no lease, no distributed refresh."""

    def read(self) -> Versioned | None:
        """The current value and version, or None when the secret does not exist."""

    def write(self, value: bytes, expected: str | None) -> str:
        """Write ``value`` if the current version is ``expected`` (None: only if the secret does not exist).

        Returns the new version. Raises StoreConflict when the condition fails, StoreError otherwise. A store without
        ``compare_and_set`` ignores ``expected`` and writes.
        """

    def sibling(self, suffix: str) -> Store:
        """The store for a record next to this one (the refresh lease lives at ``suffix="lease"``)."""


@dataclass(frozen=True)
class StoreURL:
    scheme: str
    location: str

    def __str__(self) -> str:
        return f"{self.scheme}://{self.location}"


def parse_url(value: str, env: Mapping[str, str] | None = None) -> StoreURL:
    """``vault://mount/path``, ``aws://name-or-arn``, ``gcp://projects/P/secrets/S``, ``github://OWNER/REPO/NAME``,
    ``file://path``;
    a bare scheme name takes its location from CODEX_CI_STORE_URL (a full URL or just the location)."""
    env = os.environ if env is None else env
    text = value.strip()
    if text in SCHEMES:
        configured = env.get("CODEX_CI_STORE_URL", "").strip()
        if not configured:
            raise ConfigError(f"store {text!r} needs its location in CODEX_CI_STORE_URL")
        if "://" not in configured:
            configured = f"{text}://{configured}"
        if not configured.startswith(f"{text}://"):
            raise ConfigError(f"CODEX_CI_STORE_URL is not a {text}:// URL")
        text = configured
    scheme, sep, location = text.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ConfigError(f"a store must be {URL_FORMS}")
    if not location or any(ch in location for ch in "\x00\r\n") or len(location) > 2048:
        raise ConfigError(f"the {scheme}:// store URL has no usable location")
    return StoreURL(scheme, location)


def open_store(value: str, env: Mapping[str, str] | None = None) -> Store:
    """Parse a store URL and open it, importing only that store's module (and so its SDK)."""
    url = parse_url(value, env)
    module = importlib.import_module(f"codex_ci.stores.{MODULES.get(url.scheme, url.scheme)}")
    store: Store = module.open_store(url.location, os.environ if env is None else env)
    return store


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses: the only hosts plain http:// may reach (test servers)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def missing_extra(scheme: str) -> ConfigError:
    """The error for a store whose SDK is not installed, naming the extra to install (a setup error: exit 2)."""
    package, extra = EXTRAS[scheme]
    return ConfigError(
        f"the {scheme} store needs {package}, which is not installed",
        hint=f"pip install 'codex-ci[{extra}]'",
    )
