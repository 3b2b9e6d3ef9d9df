"""Command-line options parsed once into settings (as twine's ``Settings``), validated before any network call."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from codex_ci.errors import ConfigError
from codex_ci.policy import Policy

if TYPE_CHECKING:
    from codex_ci.refresh import TokenClient

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: str, option: str) -> timedelta:
    """``90``, ``90s``, ``15m``, ``1h30m``, ``8d``: a non-negative duration, or a ConfigError."""
    text = value.strip().lower()
    parts = _DURATION.findall(text)
    if not text or "".join(n + u for n, u in parts) != text or (len(parts) > 1 and any(not u for _, u in parts)):
        raise ConfigError(f"{option} must be a duration such as 90s, 30m, 1h or 8d")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds > 10 * 365 * 86400:
        raise ConfigError(f"{option} is too large")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class RefreshSettings:
    """``refresh`` and ``keepalive``: when to refresh, how to call the token endpoint, how to share the lease."""

    policy: Policy
    timeout: float  # seconds for the token endpoint's answer
    retries: int  # retries when a request surely did not spend the token
    lock_timeout: float
    lease_ttl: timedelta
    lease_wait: float

    @classmethod
    def for_refresh(cls, *, min_ttl: str, max_age: str, force: bool, timeout: float, retries: int,
                    lock_timeout: float, lease_ttl: str, lease_wait: float) -> RefreshSettings:
        policy = Policy(parse_duration(min_ttl, "--min-ttl"), parse_duration(max_age, "--max-age"), force)
        return cls(policy, timeout, retries, lock_timeout, parse_duration(lease_ttl, "--lease-ttl"), lease_wait)

    @classmethod
    def for_keepalive(cls, *, min_ttl: str, max_age: str | None, timeout: float, retries: int, lock_timeout: float,
                      lease_ttl: str, lease_wait: float) -> RefreshSettings:
        """The rotator: always rotate, or (with --max-age) once the stored login is that old."""
        ttl = parse_duration(min_ttl, "--min-ttl")
        if max_age is None:
            policy = Policy(ttl, timedelta(days=8), force=True)
        else:
            age = parse_duration(max_age, "--max-age")
            policy = Policy(ttl, age, refresh_after=age)
        return cls(policy, timeout, retries, lock_timeout, parse_duration(lease_ttl, "--lease-ttl"), lease_wait)

    def client(self) -> TokenClient:
        from codex_ci.refresh import TokenClient

        return TokenClient(read_timeout=self.timeout, attempts=self.retries + 1)

    def check_lease(self) -> None:
        """A lease must outlast one request and the write-back margin (see distributed.LEASE_MARGIN)."""
        from codex_ci.distributed import LEASE_MARGIN
        from codex_ci.lease import check_ttl

        check_ttl(self.lease_ttl)
        ttl = self.lease_ttl.total_seconds()
        if self.client().attempt_seconds + min(LEASE_MARGIN, ttl / 4) >= ttl:
            raise ConfigError(f"--lease-ttl {ttl:g}s is too short for one request (--timeout {self.timeout:g}s plus "
                              "connecting); raise it or lower --timeout")
