"""codex_ci.policy: when a login is refreshed, as plain functions of a login, a fixed ``now`` and the policy. Every
table row names the access token's exp and iat and the login's last_refresh relative to NOW (None: absent)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from codex_ci.authfile import ACCESS_ONLY_TOKEN, AuthFile
from codex_ci.claims import format_time
from codex_ci.errors import AccessOnlyError, ExitCode
from codex_ci.policy import (
    MAX_NOT_BEFORE,
    MIN_INTERVAL,
    Policy,
    access_only_check,
    decide,
    earliest_refresh_at,
    in_future,
    need,
    threshold,
    too_soon,
)
from testing.tokenserver import make_jwt, make_login

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
S, M, H, D = timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
POLICY = Policy(min_ttl=H, max_age=8 * D)
FORCED = Policy(min_ttl=H, max_age=8 * D, force=True)
KEEPALIVE = Policy(min_ttl=H, max_age=D, refresh_after=D)

EXPIRED = "the access token has expired"
WITHIN = "the access token expires within the minimum TTL"
NO_EXPIRY_UNKNOWN = "the access token has no readable expiry and last_refresh is unknown"
NO_EXPIRY_OLD = "the access token has no readable expiry and last_refresh is older than the maximum age"


def login_at(expires: timedelta | None, issued: timedelta | None = -D, refreshed: timedelta | None = -D, *,
             access_only: bool = False, mode: str = "chatgpt") -> AuthFile:
    data = make_login(access_exp=None, refresh_token=ACCESS_ONLY_TOKEN if access_only else "CANARY-rt-0",
                      last_refresh=None if refreshed is None else format_time(NOW + refreshed))
    claims = {}
    if expires is not None:
        claims["exp"] = int((NOW + expires).timestamp())
    if issued is not None:
        claims["iat"] = int((NOW + issued).timestamp())
    data["tokens"]["access_token"] = make_jwt(claims)
    data["auth_mode"] = mode
    return AuthFile.parse(json.dumps(data), "auth.json")


def test_constants() -> None:
    assert (MIN_INTERVAL, MAX_NOT_BEFORE) == (M, D)


# -- decide ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("expires", "issued", "refreshed", "policy", "reason"), [
    # forced: always, whatever the token says
    (10 * D, -D, -D, FORCED, "forced"),
    (10 * D, -D, -10 * S, FORCED, "forced"),
    # a readable expiry decides
    (10 * D, -D, -D, POLICY, None),
    (-S, -D, -D, POLICY, EXPIRED),
    (timedelta(0), -D, -D, POLICY, EXPIRED),
    (30 * M, -9 * D, -D, POLICY, WITHIN),
    (H, -9 * D, -D, POLICY, WITHIN),
    (H + S, -9 * D, -D, POLICY, None),
    # a token living shorter than min_ttl is refreshed in its second half only
    (50 * M, -10 * M, -10 * M, POLICY, None),
    (30 * M, -30 * M, -30 * M, POLICY, WITHIN),
    (20 * M, -40 * M, -40 * M, POLICY, WITHIN),
    (50 * M, None, -10 * M, POLICY, None),  # no iat: its lifetime counts from last_refresh
    (20 * M, None, -40 * M, POLICY, WITHIN),
    # no readable expiry: Codex's rule on last_refresh
    (None, -D, None, POLICY, NO_EXPIRY_UNKNOWN),
    (None, -D, -8 * D, POLICY, NO_EXPIRY_OLD),
    (None, -D, -8 * D + S, POLICY, None),
    (None, -D, 4 * M, POLICY, None),  # ahead, but within FUTURE_SLACK: believed
    (None, -D, 6 * M, POLICY, NO_EXPIRY_UNKNOWN),  # too far ahead to believe
    # keepalive --max-age: by last_refresh first, then by the expiry
    (10 * D, -D, -D, KEEPALIVE, "last_refresh is older than --max-age"),
    (10 * D, -D, None, KEEPALIVE, "last_refresh is unknown"),
    (10 * D, -D, 6 * M, KEEPALIVE, "last_refresh is unknown"),
    (10 * D, -D, -D + S, KEEPALIVE, None),
    (-S, -D, -H, KEEPALIVE, EXPIRED),
])
def test_decide(expires: timedelta | None, issued: timedelta | None, refreshed: timedelta | None, policy: Policy,
                reason: str | None) -> None:
    assert decide(login_at(expires, issued, refreshed), NOW, policy) == reason


# -- threshold ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("expires", "issued", "refreshed", "min_ttl", "expected"), [
    (None, -D, -D, H, H),
    (10 * D, -D, -D, H, H),
    (50 * M, -10 * M, -D, H, 30 * M),  # half of a one-hour token
    (50 * M, -10 * M, -D, 10 * M, 10 * M),
    (50 * M, None, -10 * M, H, 30 * M),
    (50 * M, None, None, H, H),
    (50 * M, None, 6 * M, H, H),  # a last_refresh too far ahead is not a start
    (30 * M, H, -D, H, H),  # issued after it expires: nonsense, so the plain minimum
    (30 * M, 30 * M, -D, H, H),
])
def test_threshold(expires: timedelta | None, issued: timedelta | None, refreshed: timedelta | None,
                   min_ttl: timedelta, expected: timedelta) -> None:
    assert threshold(login_at(expires, issued, refreshed), min_ttl, NOW) == expected


# -- too_soon ----------------------------------------------------------------------------------------------------

def rotated(ago: int) -> str:
    return f"it was refreshed {ago}s ago, and a login is never rotated twice within a minute"


@pytest.mark.parametrize(("expires", "refreshed", "not_before", "hold"), [
    (D, -D, None, None),
    (D, -30 * S, None, rotated(30)),
    (D, -59 * S, None, rotated(59)),
    (D, -M, None, None),
    (D, timedelta(0), None, rotated(0)),
    (D, 2 * M, None, rotated(0)),  # ahead of this clock but believed: as good as just now
    (D, 10 * M, None, None),  # not believed
    (D, None, None, None),
    (-S, -S, None, None),  # an expired access token is always refreshed
    (timedelta(0), -S, None, None),
    (D, -D, 10 * M, "the token endpoint asked for no refresh before 2026-01-01T12:10:00.000000Z"),
    (D, -D, D, "the token endpoint asked for no refresh before 2026-01-02T12:00:00.000000Z"),
    (D, -D, D + S, None),  # further out than MAX_NOT_BEFORE: not honoured
    (D, -D, timedelta(0), None),
    (D, -D, -S, None),
    (D, -10 * S, 10 * M, "the token endpoint asked for no refresh before 2026-01-01T12:10:00.000000Z"),
    (-S, -D, 10 * M, None),
])
def test_too_soon(expires: timedelta, refreshed: timedelta | None, not_before: timedelta | None,
                  hold: str | None) -> None:
    auth = login_at(expires, -D, refreshed)
    assert too_soon(auth, NOW, None if not_before is None else NOW + not_before) == hold


# -- need --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("auth", "policy", "not_before", "expected"), [
    (login_at(10 * D), POLICY, None, (False, "the access token is fresh enough")),
    (login_at(30 * M, -9 * D), POLICY, None, (True, WITHIN)),
    (login_at(-S, -9 * D, -10 * S), POLICY, None, (True, EXPIRED)),
    (login_at(10 * D, -D, -10 * S), FORCED, None, (False, rotated(10))),
    (login_at(10 * D, -D, -D), FORCED, None, (True, "forced")),
    (login_at(10 * D, -D, -D), FORCED, NOW + 5 * M,
     (False, "the token endpoint asked for no refresh before 2026-01-01T12:05:00.000000Z")),
    (login_at(30 * M, -9 * D, -30 * S), POLICY, None, (False, rotated(30))),
    (login_at(10 * D, access_only=True), POLICY, None,
     (False, "an access-only copy, fresh enough (its login is rotated elsewhere)")),
    (login_at(10 * D, access_only=True), FORCED, None,
     (False, "an access-only copy, fresh enough (its login is rotated elsewhere)")),
    (login_at(30 * M, mode="chatgptAuthTokens"), POLICY, None, (False, "chatgptAuthTokens login: nothing to refresh")),
    (AuthFile.parse('{"OPENAI_API_KEY": "sk-CANARY-key"}', "auth.json"), FORCED, None,
     (False, "apikey login: nothing to refresh")),
])
def test_need(auth: AuthFile, policy: Policy, not_before: datetime | None, expected: tuple[bool, str]) -> None:
    assert need(auth, NOW, policy, not_before) == expected


@pytest.mark.parametrize(("expires", "when"), [(-S, "has expired"), (timedelta(0), "has expired"),
                                               (30 * M, "expires within --min-ttl"),
                                               (None, "has no readable expiry and is older than --max-age")])
def test_a_spent_access_only_copy_cannot_be_refreshed_here(expires: timedelta | None, when: str) -> None:
    auth = login_at(expires, -9 * D, -9 * D, access_only=True)
    for check in (lambda: need(auth, NOW, POLICY, None), lambda: access_only_check(auth, NOW, FORCED)):
        with pytest.raises(AccessOnlyError) as caught:
            check()
        assert caught.value.message == (f"this is an access-only copy whose access token {when}; it cannot be "
                                        "refreshed here")
        assert caught.value.exit_code == ExitCode.ACCESS_ONLY == 11


def test_access_only_check_ignores_force() -> None:
    auth = login_at(10 * D, access_only=True)
    assert access_only_check(auth, NOW, FORCED) == "an access-only copy, fresh enough (its login is rotated elsewhere)"


# -- earliest_refresh_at and in_future ---------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("2026-01-01T12:10:00Z", NOW + 10 * M),
    ("2026-01-01T14:10:00+02:00", NOW + 10 * M),
    (int((NOW + 10 * M).timestamp()), NOW + 10 * M),
    ((NOW + 10 * M).timestamp() + 0.5, NOW + 10 * M + timedelta(milliseconds=500)),
    ("soon", None),
    (0, None),
    (-5, None),
    (1e11, None),  # milliseconds, not seconds: refused
    (True, None),
    (None, None),
    ([1], None),
])
def test_earliest_refresh_at(value: object, expected: datetime | None) -> None:
    assert earliest_refresh_at({"earliest_refresh_at": value}, NOW) == expected


def test_earliest_refresh_at_absent() -> None:
    assert earliest_refresh_at({}, NOW) is None


@pytest.mark.parametrize(("refreshed", "ahead"), [(None, False), (-D, False), (5 * M, False), (5 * M + S, True),
                                                  (365 * D, True)])
def test_in_future(refreshed: timedelta | None, ahead: bool) -> None:
    assert in_future(login_at(D, -D, refreshed), NOW) is ahead
