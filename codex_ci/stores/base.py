"""The store Protocol: what every store module implements, checked by mypy through the registry.

A store holds one text value (the auth.json text) with an opaque version, and writes it by compare-and-set where it
can: every store but ``github`` (Actions secrets: write-only, last writer wins) says so with ``compare_and_set``, and
codex-ci refuses what needs it on the others. A store raises only StoreError and its subclasses (StoreConflict when a
compare-and-set loses, StoredValueError when what it holds is not a login's text); opening one may raise ConfigError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from codex_ci.errors import ConfigError


@dataclass(frozen=True)
class Versioned:
    """A stored value and the opaque version a compare-and-set write must name."""

    value: str
    version: str

    def __repr__(self) -> str:
        return f"Versioned(version={self.version!r}, value=[secure])"


class Store(Protocol):
    """One secret location."""

    @property
    def url(self) -> str:
        """The store URL as the user gave it, for messages and logs (never a credential)."""

    @property
    def key(self) -> str:
        """The store's identity: equal for two URLs of one secret where that can be told offline (a path made
        absolute, an AWS name with its region, a Vault path with its server). The state file records bases by it."""

    @property
    def compare_and_set(self) -> bool:
        """False when ``write`` cannot honour ``expected`` (last writer wins): no lease, no distributed refresh."""

    @property
    def missing_hint(self) -> str | None:
        """What to tell a user whose store holds no login, when it is more than "put one there first"."""

    def read(self) -> Versioned | None:
        """The current value and version, or None when the secret does not exist."""

    def write(self, value: str, expected: str | None) -> str:
        """Write ``value`` if the current version is ``expected`` (None: only if the secret does not exist).

        Returns the new version. Raises StoreConflict when the condition fails, StoreError otherwise. A store without
        ``compare_and_set`` ignores ``expected`` and writes.
        """

    def check_writable(self) -> None:
        """Before a rotation that nothing could undo: fail now if a write is bound to fail (a no-op where the store
        has compare-and-set, whose writes are checked by the lease taken first)."""

    def sibling(self, suffix: str) -> Store:
        """The store for a record next to this one (the refresh lease lives at ``suffix="lease"``)."""


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
    from codex_ci.stores import STORES

    spec = STORES[scheme]
    return ConfigError(
        f"the {scheme} store needs {spec.package}, which is not installed",
        hint=f"pip install 'codex-ci[{spec.extra}]'",
    )
