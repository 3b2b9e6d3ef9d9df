"""Secret stores: one module per store behind the Protocol in :mod:`codex_ci.stores.base`, and their registry.

``STORES`` is the one list of stores: the URL schemes, the extras (and the SDK each installs), the URL forms for
messages and ``--help``, and what each store can do are all read from it (the action's lock files too, checked by a
test). Each store module is imported only when its scheme is opened, and imports its SDK only then, so ``seed`` and
``status`` never load boto3, google.cloud, hvac or PyNaCl. Every opener is typed ``-> Store``, so mypy checks each
store class against the Protocol: a store missing a method, or with a method of another shape, fails the type check.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from codex_ci.errors import ConfigError, StoreConflict, StoredValueError
from codex_ci.stores.base import Store, Versioned

Opener = Callable[[str, Mapping[str, str]], Store]


def _vault(location: str, env: Mapping[str, str]) -> Store:
    from codex_ci.stores import vault

    return vault.open_store(location, env)


def _aws(location: str, env: Mapping[str, str]) -> Store:
    from codex_ci.stores import aws

    return aws.open_store(location, env)


def _gcp(location: str, env: Mapping[str, str]) -> Store:
    from codex_ci.stores import gcp

    return gcp.open_store(location, env)


def _github(location: str, env: Mapping[str, str]) -> Store:
    from codex_ci.stores import github_secrets

    return github_secrets.open_store(location, env)


def _file(location: str, env: Mapping[str, str]) -> Store:
    from codex_ci.stores import file

    return file.open_store(location, env)


@dataclass(frozen=True)
class StoreSpec:
    """One kind of store: its scheme, how to install and open it, and what it can do."""

    scheme: str
    form: str  # the URL form(s), for messages and --help
    opener: Opener
    extra: str | None = None  # the pip extra that installs its SDK (None: the core is enough)
    package: str | None = None  # the SDK that extra installs
    compare_and_set: bool = True  # False: write-only, last writer wins; no lease, no distributed refresh

    @property
    def requirements(self) -> str:
        """The action's hash-locked requirements file for this store (action/requirements-NAME.txt)."""
        return f"requirements-{self.extra or 'core'}.txt"


STORES: dict[str, StoreSpec] = {
    spec.scheme: spec
    for spec in (
        StoreSpec("vault", "vault://MOUNT/PATH", _vault, "vault", "hvac"),
        StoreSpec("aws", "aws://SECRET", _aws, "aws", "boto3"),
        StoreSpec("gcp", "gcp://projects/P/secrets/S", _gcp, "gcp", "google-cloud-secret-manager"),
        StoreSpec("github", "github://OWNER/REPO/NAME (or github://OWNER/REPO/environments/ENV/NAME, "
                  "github://orgs/ORG/NAME)", _github, "github", "PyNaCl", compare_and_set=False),
        StoreSpec("file", "file://PATH", _file),
    )
}


def url_forms() -> str:
    """``vault://MOUNT/PATH, aws://SECRET, … or file://PATH``, from the registry."""
    forms = [spec.form for spec in STORES.values()]
    return ", ".join(forms[:-1]) + " or " + forms[-1]


@dataclass(frozen=True)
class StoreURL:
    scheme: str
    location: str

    @property
    def spec(self) -> StoreSpec:
        return STORES[self.scheme]

    def __str__(self) -> str:
        return f"{self.scheme}://{self.location}"


def parse_url(value: str, env: Mapping[str, str] | None = None) -> StoreURL:
    """A store URL (see STORES); a bare scheme name takes its location from CODEX_CI_STORE_URL (a full URL or just
    the location)."""
    env = os.environ if env is None else env
    text = value.strip()
    if text in STORES:
        configured = env.get("CODEX_CI_STORE_URL", "").strip()
        if not configured:
            raise ConfigError(f"store {text!r} needs its location in CODEX_CI_STORE_URL")
        if "://" not in configured:
            configured = f"{text}://{configured}"
        if not configured.startswith(f"{text}://"):
            raise ConfigError(f"CODEX_CI_STORE_URL is not a {text}:// URL")
        text = configured
    scheme, sep, location = text.partition("://")
    if not sep or scheme not in STORES:
        raise ConfigError(f"a store must be {url_forms()}")
    if not location or any(ch in location for ch in "\x00\r\n") or len(location) > 2048:
        raise ConfigError(f"the {scheme}:// store URL has no usable location")
    return StoreURL(scheme, location)


def open_store(value: str, env: Mapping[str, str] | None = None) -> Store:
    """Parse a store URL and open it, importing only that store's module (and so its SDK)."""
    url = parse_url(value, env)
    return url.spec.opener(url.location, os.environ if env is None else env)


__all__ = ["STORES", "Store", "StoreConflict", "StoreSpec", "StoredValueError", "Versioned", "open_store",
           "parse_url", "url_forms"]
