"""codex_ci.claims: RFC 3339 times, JWT payloads, and the Stamp that orders two logins (iat first, then
last_refresh; nothing further than FUTURE_SLACK ahead of this machine's clock is believed)."""

from __future__ import annotations

import base64
import json
import traceback
from datetime import UTC, datetime, timedelta, timezone

import pytest

from codex_ci.claims import (
    FUTURE_SLACK,
    Identity,
    Stamp,
    believed,
    decode_jwt_claims,
    epoch,
    format_time,
    loads,
    parse_time,
    text_or_none,
)
from codex_ci.errors import ExitCode, InvalidAuthError
from testing.tokenserver import make_jwt

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SECRET_CLAIM = "CANARY-claim-value"


def segment(payload: bytes) -> str:
    return base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")


def jwt_with_payload(payload: bytes) -> str:
    return f"{segment(b'{}')}.{segment(payload)}.{segment(b'signature')}"


# -- times ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("2026-01-02T03:04:05Z", T0),
    ("2026-01-02T03:04:05.000000Z", T0),
    ("2026-01-02T03:04:05.1Z", T0.replace(microsecond=100000)),
    ("2026-01-02T03:04:05.123456Z", T0.replace(microsecond=123456)),
    ("2026-01-02T03:04:05.123456789Z", T0.replace(microsecond=123456)),  # nanoseconds (chrono) cut to micro
    ("2026-01-02T05:04:05+02:00", T0),
    ("2026-01-01T22:04:05.5-05:00", T0.replace(microsecond=500000)),
    ("2026-01-02T03:04:05+00:00", T0),
    ("2026-01-02t03:04:05z", T0),
    ("  2026-01-02T03:04:05Z\n", T0),
])
def test_parse_time_accepts_rfc3339(text: str, expected: datetime) -> None:
    parsed = parse_time(text)
    assert parsed == expected
    assert parsed is not None and parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", [
    "",
    "garbage",
    "2026-01-02T03:04:05",  # no offset: whose clock?
    "2026-13-02T03:04:05Z",
    "2026-01-32T03:04:05Z",
    "9999-12-31T23:59:59-01:00",  # past the last representable UTC moment
])
def test_parse_time_refuses_what_is_not_a_moment(text: str) -> None:
    assert parse_time(text) is None


def test_format_time_is_codex_format_in_utc() -> None:
    assert format_time(T0) == "2026-01-02T03:04:05.000000Z"
    plus_two = datetime(2026, 1, 2, 5, 4, 5, 7, tzinfo=timezone(timedelta(hours=2)))
    assert format_time(plus_two) == "2026-01-02T03:04:05.000007Z"


@pytest.mark.parametrize("text", [
    "2026-01-02T03:04:05.123456Z",
    "2026-01-02T03:04:05.123456789Z",
    "2026-01-02T08:34:05.25+05:30",
    "2026-01-01T23:04:05-04:00",
])
def test_parse_format_round_trip(text: str) -> None:
    moment = parse_time(text)
    assert moment is not None
    assert parse_time(format_time(moment)) == moment
    assert format_time(parse_time(format_time(moment))) == format_time(moment)  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "expected"), [
    (1767323045, T0),
    (1767323045.5, T0.replace(microsecond=500000)),
    (True, None),
    ("1767323045", None),
    (None, None),
    (10**20, None),
])
def test_epoch(value: object, expected: datetime | None) -> None:
    assert epoch(value) == expected


@pytest.mark.parametrize(("value", "expected"), [("x", "x"), ("", None), (None, None), (5, None)])
def test_text_or_none(value: object, expected: str | None) -> None:
    assert text_or_none(value) == expected


# -- JSON ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ['{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}', '{"a": 1e999}'])
def test_loads_refuses_what_codex_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        loads(text)


def test_loads_reads_plain_json() -> None:
    assert loads('{"a": [1, 2.5, "x", null]}') == {"a": [1, 2.5, "x", None]}


# -- JWT claims ------------------------------------------------------------------------------------------------------

def test_decode_jwt_claims_reads_the_payload() -> None:
    claims = {"exp": 1767323045, "email": "ci@example.com", "nested": {"a": [1]}}
    assert decode_jwt_claims(make_jwt(claims), "tokens.id_token") == claims


@pytest.mark.parametrize(("token", "why"), [
    ("only.two", "expected three dot-separated parts"),
    (f"a.{segment(b'{}')}.c.d", "expected three dot-separated parts"),
    (f"a..{segment(b'x')}", "expected three dot-separated parts"),
    (f".{segment(b'{}')}.c", "expected three dot-separated parts"),
    ("a.!!!.c", "its payload does not decode to JSON"),
    (f"a.{base64.urlsafe_b64encode(b'{}').decode()}.c", "its payload does not decode to JSON"),  # "=" padding
    (f"a.{base64.b64encode(bytes([0xfb, 0xff]) + b'{}').decode().rstrip('=')}.c",
     "its payload does not decode to JSON"),  # standard base64's "+" and "/"
    (jwt_with_payload(b"not json"), "its payload does not decode to JSON"),
    (jwt_with_payload(b'{"exp": NaN}'), "its payload does not decode to JSON"),
    (jwt_with_payload(b'{"a": "\\ud800"}'), "its payload does not decode to JSON"),  # a lone surrogate
    (jwt_with_payload(b"[1, 2]"), "its payload is not a JSON object"),
    (jwt_with_payload(b'"x"'), "its payload is not a JSON object"),
])
def test_decode_jwt_claims_errors_name_the_field(token: str, why: str) -> None:
    with pytest.raises(InvalidAuthError) as caught:
        decode_jwt_claims(token, "tokens.access_token")
    assert caught.value.message == f"tokens.access_token is not a JWT ({why})"
    assert caught.value.exit_code == ExitCode.INVALID


@pytest.mark.parametrize("token", [
    SECRET_CLAIM,
    f"{SECRET_CLAIM}.{SECRET_CLAIM}.{SECRET_CLAIM}",
    jwt_with_payload(json.dumps([SECRET_CLAIM]).encode()),
    jwt_with_payload(SECRET_CLAIM.encode()),
])
def test_decode_jwt_claims_errors_never_show_the_value(token: str) -> None:
    with pytest.raises(InvalidAuthError) as caught:
        decode_jwt_claims(token, "tokens.id_token")
    shown = f"{caught.value} {caught.value.hint} {caught.value!r}" + "".join(traceback.format_exception(caught.value))
    assert "CANARY" not in shown
    assert segment(SECRET_CLAIM.encode()) not in shown


# -- Stamp -----------------------------------------------------------------------------------------------------------

def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.mark.parametrize(("mine", "theirs", "newer"), [
    # iat decides when both have one and they differ, whatever last_refresh says
    (Stamp(at(10), at(0)), Stamp(at(0), at(30)), True),
    (Stamp(at(0), at(30)), Stamp(at(10), at(0)), False),
    (Stamp(at(10), None), Stamp(at(0), at(30)), True),
    # equal iat (or one missing): last_refresh decides
    (Stamp(at(0), at(5)), Stamp(at(0), at(4)), True),
    (Stamp(at(0), at(4)), Stamp(at(0), at(5)), False),
    (Stamp(at(0), at(5)), Stamp(at(0), at(5)), False),
    (Stamp(None, at(5)), Stamp(at(0), at(4)), True),
    (Stamp(at(0), at(4)), Stamp(None, at(5)), False),
    # an unknown last_refresh is never newer; a known one is newer than an unknown one
    (Stamp(at(0), None), Stamp(at(0), at(5)), False),
    (Stamp(at(0), at(5)), Stamp(at(0), None), True),
    (Stamp(None, None), Stamp(None, None), False),
    (Stamp(None, at(0)), Stamp(None, None), True),
])
def test_stamp_newer_than(mine: Stamp, theirs: Stamp, newer: bool) -> None:
    assert mine.newer_than(theirs) is newer


@pytest.mark.parametrize("stamp", [
    Stamp(T0, T0 + timedelta(microseconds=7)),
    Stamp(None, T0),
    Stamp(T0, None),
    Stamp(None, None),
])
def test_stamp_encode_decode_round_trip(stamp: Stamp) -> None:
    assert Stamp.decode(stamp.encode()) == stamp


def test_stamp_encoding() -> None:
    assert Stamp(T0, at(1)).encode() == "2026-01-02T03:04:05.000000Z,2026-01-02T03:05:05.000000Z"
    assert Stamp(None, T0).encode() == ",2026-01-02T03:04:05.000000Z"
    assert Stamp(None, None).encode() == ","
    assert Stamp.decode("") == Stamp(None, None)
    assert Stamp.decode("garbage,also garbage") == Stamp(None, None)


def test_believed_up_to_future_slack() -> None:
    assert timedelta(minutes=5) == FUTURE_SLACK
    assert believed(None, T0) is None
    assert believed(T0 - timedelta(days=400), T0) == T0 - timedelta(days=400)
    assert believed(T0 + FUTURE_SLACK, T0) == T0 + FUTURE_SLACK
    assert believed(T0 + FUTURE_SLACK + timedelta(microseconds=1), T0) is None


def test_a_far_future_stamp_never_wins() -> None:
    """What authfile.stamp builds for a login whose iat and last_refresh were planted years ahead."""
    planted = Stamp(believed(at(60 * 24 * 365), T0), believed(at(60 * 24 * 365), T0))
    honest = Stamp(believed(at(-60), T0), believed(at(-60), T0))
    assert planted == Stamp(None, None)
    assert not planted.newer_than(honest)
    assert honest.newer_than(planted)


def test_identity_defaults() -> None:
    identity = Identity("ci@example.com", "acct", "plus", T0)
    assert identity.access_issued is None
    with pytest.raises(AttributeError):
        identity.email = "other"  # type: ignore[misc]
