"""codex_ci.settings: durations, and the refresh and keepalive options parsed once into RefreshSettings."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from codex_ci.errors import ConfigError, ExitCode
from codex_ci.policy import Policy
from codex_ci.settings import RefreshSettings, parse_duration

S, M, H, D = timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)


@pytest.mark.parametrize(("text", "expected"), [
    ("0", timedelta(0)),
    ("90", 90 * S),
    ("90s", 90 * S),
    ("0.5s", timedelta(milliseconds=500)),
    ("15m", 15 * M),
    ("1h", H),
    ("1.5h", 90 * M),
    ("1h30m", 90 * M),
    ("1d2h3m4s", D + 2 * H + 3 * M + 4 * S),
    ("8d", 8 * D),
    ("2w", 14 * D),
    (" 10M ", 10 * M),
    ("3650d", 3650 * D),
])
def test_parse_duration_accepts(text: str, expected: timedelta) -> None:
    assert parse_duration(text, "--min-ttl") == expected


@pytest.mark.parametrize("text", [
    "", " ", "s", "h1", "abc", "-5", "-5m", "+5m", "1.", ".5", "1e3", "5x", "10y", "1 h", "1h 30m", "1h30", "30 m",
    "1,5h", "\u0661\u0662m", "inf", "nan",
])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_duration(text, "--min-ttl")
    assert caught.value.message == "--min-ttl must be a duration such as 90s, 30m, 1h or 8d"
    assert caught.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize("text", ["3651d", "522w", "99999999999999999999w", "9" * 400])
def test_parse_duration_refuses_more_than_ten_years(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_duration(text, "--max-age")
    assert caught.value.message == "--max-age is too large"


# -- RefreshSettings ---------------------------------------------------------------------------------------------

REFRESH: dict[str, Any] = {"min_ttl": "1h", "max_age": "8d", "force": False, "timeout": 30.0, "retries": 2,
                           "lock_timeout": 45.0, "lease_ttl": "10m", "lease_wait": 120.0}
KEEPALIVE: dict[str, Any] = {k: v for k, v in REFRESH.items() if k != "force"}


def test_for_refresh() -> None:
    settings = RefreshSettings.for_refresh(**REFRESH)
    assert settings == RefreshSettings(Policy(H, 8 * D, False), 30.0, 2, 45.0, 10 * M, 120.0)
    assert RefreshSettings.for_refresh(**REFRESH | {"force": True}).policy == Policy(H, 8 * D, True)


def test_for_keepalive_always_rotates_without_max_age() -> None:
    settings = RefreshSettings.for_keepalive(**KEEPALIVE | {"max_age": None})
    assert settings.policy == Policy(H, 8 * D, force=True, refresh_after=None)
    assert (settings.timeout, settings.retries, settings.lock_timeout, settings.lease_ttl, settings.lease_wait) == (
        30.0, 2, 45.0, 10 * M, 120.0)


def test_for_keepalive_with_max_age_rotates_once_that_old() -> None:
    settings = RefreshSettings.for_keepalive(**KEEPALIVE | {"max_age": "3d"})
    assert settings.policy == Policy(H, 3 * D, force=False, refresh_after=3 * D)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("min_ttl", "soon", "--min-ttl must be a duration such as 90s, 30m, 1h or 8d"),
    ("max_age", "old", "--max-age must be a duration such as 90s, 30m, 1h or 8d"),
    ("lease_ttl", "long", "--lease-ttl must be a duration such as 90s, 30m, 1h or 8d"),
    ("max_age", "11000d", "--max-age is too large"),
])
def test_bad_options_are_named(option: str, value: str, message: str) -> None:
    for build, options in ((RefreshSettings.for_refresh, REFRESH), (RefreshSettings.for_keepalive, KEEPALIVE)):
        with pytest.raises(ConfigError) as caught:
            build(**options | {option: value})
        assert caught.value.message == message


def test_client_uses_the_timeout_and_retries() -> None:
    client = RefreshSettings.for_refresh(**REFRESH | {"timeout": 20.0, "retries": 4}).client()
    assert client.attempts == 5
    assert client.attempt_seconds == 30.0  # connecting (at most 10 s) plus the whole answer
    assert RefreshSettings.for_refresh(**REFRESH | {"timeout": 3.0, "retries": 0}).client().attempts == 1


# -- check_lease -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("lease_ttl", "timeout"), [
    ("10m", 30.0),
    ("46s", 30.0),  # one request (10 s connecting + 30 s answer) plus the 5 s margin: 45 s < 46 s
    ("3s", 1.0),  # 1 + 1 + a quarter of the lease (0.75 s) < 3 s
    ("15m", 800.0),
])
def test_check_lease_accepts(lease_ttl: str, timeout: float) -> None:
    RefreshSettings.for_refresh(**REFRESH | {"lease_ttl": lease_ttl, "timeout": timeout}).check_lease()


@pytest.mark.parametrize(("lease_ttl", "timeout", "message"), [
    ("45s", 30.0, "--lease-ttl 45s is too short for one request (--timeout 30s plus connecting); raise it or lower "
                  "--timeout"),
    ("2s", 1.0, "--lease-ttl 2s is too short for one request (--timeout 1s plus connecting); raise it or lower "
                "--timeout"),
    ("15m", 890.0, "--lease-ttl 900s is too short for one request (--timeout 890s plus connecting); raise it or "
                   "lower --timeout"),
    ("0s", 30.0, "--lease-ttl must be more than 0 and at most 15m"),
    ("16m", 30.0, "--lease-ttl must be more than 0 and at most 15m"),
])
def test_check_lease_refuses(lease_ttl: str, timeout: float, message: str) -> None:
    settings = RefreshSettings.for_refresh(**REFRESH | {"lease_ttl": lease_ttl, "timeout": timeout})
    with pytest.raises(ConfigError) as caught:
        settings.check_lease()
    assert caught.value.message == message
    assert caught.value.exit_code == ExitCode.USAGE
