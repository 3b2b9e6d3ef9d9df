"""codex_ci.authfile: parse, validate and serialize auth.json the way Codex does, keeping what codex-ci does not know,
and telling which of its values a CI log must mask. Messages name keys, never values."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import ISSUED_AT, login

from codex_ci.authfile import ACCESS_ONLY_TOKEN, MAX_BYTES, AuthFile
from codex_ci.claims import Stamp, format_time
from codex_ci.errors import ExitCode, InvalidAuthError
from codex_ci.secret import Secret
from testing.tokenserver import make_jwt

NOW = datetime.fromtimestamp(ISSUED_AT, UTC) + timedelta(days=1)
DEFAULT_HINT = InvalidAuthError.hint


def dump(data: Any) -> bytes:
    return json.dumps(data).encode()


def parse(data: Any, source: str = "SRC") -> AuthFile:
    return AuthFile.parse(data if isinstance(data, (bytes, str)) else dump(data), source)


def refused(data: Any, source: str = "SRC") -> InvalidAuthError:
    with pytest.raises(InvalidAuthError) as caught:
        parse(data, source)
    assert caught.value.exit_code == ExitCode.INVALID
    return caught.value


# -- round trip --------------------------------------------------------------------------------------------------

def test_codex_shaped_file_round_trips_byte_for_byte() -> None:
    raw = json.dumps(login(), indent=2).encode()
    assert parse(raw).to_bytes() == raw


def test_unknown_keys_are_kept_in_their_order_after_the_known_ones() -> None:
    data = login()
    shuffled = {"zeta": 1, "last_refresh": data["last_refresh"], "alpha": {"deep": [1, "two"]},
                "tokens": dict([*reversed(data["tokens"].items()), ("token_extra", "x")]),
                "auth_mode": "chatgpt", "middle": None}
    written = json.loads(parse(shuffled).to_bytes())
    assert list(written) == ["auth_mode", "OPENAI_API_KEY", "tokens", "last_refresh", "zeta", "alpha", "middle"]
    assert list(written["tokens"]) == ["id_token", "access_token", "refresh_token", "account_id", "token_extra"]
    assert written["OPENAI_API_KEY"] is None  # Codex writes it for a ChatGPT login
    assert written["alpha"] == {"deep": [1, "two"]}
    assert written["zeta"] == 1
    assert written["middle"] is None
    assert written["tokens"] == data["tokens"] | {"token_extra": "x"}


def test_to_bytes_is_two_space_json_without_ascii_escapes() -> None:
    data = login() | {"note": "café ✓"}
    out = parse(data).to_bytes()
    assert out == json.dumps(json.loads(out), indent=2, ensure_ascii=False).encode()
    assert "café ✓".encode() in out
    assert not out.endswith(b"\n")


def test_to_bytes_is_stable() -> None:
    once = parse(login() | {"extra": [1, {"b": 2, "a": 1}]}).to_bytes()
    assert parse(once).to_bytes() == once


def test_apikey_file_keeps_its_shape() -> None:
    data = {"OPENAI_API_KEY": "sk-CANARY-key-value", "custom": True}
    auth = parse(data)
    assert auth.mode == "apikey"
    assert not auth.is_chatgpt
    assert json.loads(auth.to_bytes()) == data
    assert list(json.loads(auth.to_bytes())) == ["OPENAI_API_KEY", "custom"]


@pytest.mark.parametrize(("data", "mode"), [
    ({"OPENAI_API_KEY": "sk-x"}, "apikey"),
    ({"auth_mode": "apikey", "OPENAI_API_KEY": "sk-x"}, "apikey"),
    ({"personal_access_token": "pat-x"}, "personalAccessToken"),
    ({"agent_identity": {"id": "a"}}, "agentIdentity"),
    ({"bedrock_api_key": "b-x"}, "bedrockApiKey"),
    ({"auth_mode": "chatgptAuthTokens", "tokens": None}, "chatgptAuthTokens"),
])
def test_mode_is_resolved_like_codex(data: dict[str, Any], mode: str) -> None:
    auth = parse(data)
    assert auth.mode == mode
    assert auth.refresh_token is None


def test_identity_comes_from_the_tokens() -> None:
    data = login(expires_in=None, email="someone@example.com", account_id="acct-xyz", plan="pro")
    data["tokens"]["access_token"] = make_jwt({"iat": ISSUED_AT, "exp": ISSUED_AT + 3600})
    identity = parse(data).identity
    assert identity.email == "someone@example.com"
    assert identity.account_id == "acct-xyz"
    assert identity.plan == "pro"
    assert identity.access_issued == datetime.fromtimestamp(ISSUED_AT, UTC)
    assert identity.access_expires == datetime.fromtimestamp(ISSUED_AT + 3600, UTC)


def test_account_id_falls_back_to_the_id_token_claim() -> None:
    data = login(account_id="acct-from-claim")
    del data["tokens"]["account_id"]
    assert parse(data).identity.account_id == "acct-from-claim"


# -- validation --------------------------------------------------------------------------------------------------

def broken(**changes: Any) -> dict[str, Any]:
    data = login()
    for key, value in changes.items():
        if key.startswith("tokens_"):
            data["tokens"][key.removeprefix("tokens_")] = value
        else:
            data[key] = value
    return data


def without(key: str) -> dict[str, Any]:
    data = login()
    del data["tokens"][key]
    return data


@pytest.mark.parametrize(("raw", "message"), [
    (b"", "SRC is empty"),
    (b"  \n\t", "SRC is empty"),
    (b"{\x00}", "SRC contains NUL bytes"),
    (b"\xff{}", "SRC is not valid UTF-8"),
    (b"[]", "SRC must be a JSON object, not an array"),
    (b"null", "SRC must be a JSON object, not null"),
    (b"true", "SRC must be a JSON object, not a boolean"),
    (b"12", "SRC must be a JSON object, not a number"),
    (b'"plain"', "SRC must be a JSON object, not a string"),
    (b'"{\\"tokens\\": 1}"', "SRC is a JSON string holding JSON, not the JSON object itself"),
    (b'{"a": NaN}', "SRC is not valid JSON (NaN is not valid JSON)"),
    (b'{"a": 1e999}', "SRC is not valid JSON (a number is out of range)"),
    (b'{"a" 1}', "SRC is not valid JSON (Expecting ':' delimiter: line 1, column 6)"),
    (b"{", "SRC is cut short: its JSON ends before the login does"),
    (b'{"tokens": {"id_token": "eyJhb', "SRC is cut short: its JSON ends before the login does"),
    (b"[" * 100_000, "SRC is nested too deeply"),
    (b'{"a": "\\ud800"}', "SRC contains invalid unicode escapes"),
])
def test_refuses_what_is_not_a_json_object(raw: bytes, message: str) -> None:
    assert refused(raw).message == message


def test_refuses_a_file_over_the_size_limit() -> None:
    raw = b'{"pad": "' + b"x" * MAX_BYTES + b'"}'
    assert refused(raw).message == f"SRC is too large ({len(raw)} bytes; the limit is {MAX_BYTES})"


def test_truncated_and_double_encoded_get_their_own_hints() -> None:
    assert refused(b'{"a": "b').hint == "Copy the whole auth.json into SRC: the value was truncated."
    assert refused(json.dumps(json.dumps(login())).encode()).hint == (
        "It was encoded twice: store the content of auth.json as it is.")
    assert refused(b"[]").hint == DEFAULT_HINT


@pytest.mark.parametrize(("data", "message"), [
    (broken(auth_mode="weird"), "SRC: auth_mode must be one of chatgpt, apikey, chatgptAuthTokens, agentIdentity, "
                                "personalAccessToken, bedrockApiKey"),
    (broken(tokens=["x"]), "SRC: tokens must be an object or null"),
    (broken(tokens=None), "SRC: tokens is missing (a ChatGPT login needs tokens)"),
    ({"auth_mode": "chatgpt"}, "SRC: tokens is missing (a ChatGPT login needs tokens)"),
    (broken(OPENAI_API_KEY=7), "SRC: OPENAI_API_KEY must be a string or null"),
    (broken(last_refresh="yesterday"), "SRC: last_refresh is not an RFC 3339 timestamp"),
    (broken(last_refresh=1767323045), "SRC: last_refresh is not an RFC 3339 timestamp"),
    ({"auth_mode": "apikey", "OPENAI_API_KEY": ""}, "SRC: auth_mode is apikey but OPENAI_API_KEY is empty"),
    (without("id_token"), "SRC: tokens.id_token is missing"),
    (without("refresh_token"), "SRC: tokens.refresh_token is missing"),
    (broken(tokens_access_token=""), "SRC: tokens.access_token must be a non-empty string"),
    (broken(tokens_refresh_token=5), "SRC: tokens.refresh_token must be a non-empty string"),
    (broken(tokens_account_id=5), "SRC: tokens.account_id must be a string or null"),
    (broken(tokens_id_token="CANARY-not-a-jwt"),
     "SRC: tokens.id_token is not a JWT (expected three dot-separated parts)"),
    (broken(tokens_access_token="a.CANARY-not-base64!.c"),
     "SRC: tokens.access_token is not a JWT (its payload does not decode to JSON)"),
])
def test_validation_names_the_key_never_the_value(data: dict[str, Any], message: str) -> None:
    error = refused(data)
    assert error.message == message
    assert error.hint == DEFAULT_HINT
    assert "CANARY" not in f"{error} {error.hint}"


# -- seeds and stored values -------------------------------------------------------------------------------------

def test_parse_seed_json() -> None:
    raw = json.dumps(login(), indent=2)
    auth, kind = AuthFile.parse_seed("\n " + raw + "\n", "CODEX_AUTH_JSON")
    assert kind == "json"
    assert auth.to_bytes() == raw.encode()


@pytest.mark.parametrize("encode", [
    lambda raw: base64.b64encode(raw),
    lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"="),
    lambda raw: b"\n".join(base64.b64encode(raw)[i:i + 76] for i in range(0, len(base64.b64encode(raw)), 76)),
], ids=["standard", "urlsafe-unpadded", "wrapped-at-76"])
def test_parse_seed_base64(encode: Any) -> None:
    raw = json.dumps(login(), indent=2).encode()
    auth, kind = AuthFile.parse_seed(encode(raw).decode(), "CODEX_AUTH_JSON")
    assert kind == "base64"
    assert auth.to_bytes() == raw


def test_parse_seed_base64_of_a_bad_login_names_the_decoding() -> None:
    with pytest.raises(InvalidAuthError) as caught:
        AuthFile.parse_seed(base64.b64encode(b'{"tokens": 1}'), "CODEX_AUTH_JSON")
    assert caught.value.message == "CODEX_AUTH_JSON (base64-decoded): tokens must be an object or null"


@pytest.mark.parametrize(("seed", "message", "hint"), [
    ("'{\"a\": 1}'", "SEED is wrapped in quotes",
     "Remove the quotes around it: it must hold the JSON itself, or its base64."),
    ('"{\\"a\\": 1}', "SEED is wrapped in quotes",
     "Remove the quotes around it: it must hold the JSON itself, or its base64."),
    ("`abc`", "SEED is wrapped in quotes",
     "Remove the quotes around it: it must hold the JSON itself, or its base64."),
    ("/home/runner/.codex/auth.json", "SEED looks like a file path, not a login",
     "Did you mean --from-file PATH? It must hold the content of auth.json."),
    ("~/.codex/auth.json", "SEED looks like a file path, not a login",
     "Did you mean --from-file PATH? It must hold the content of auth.json."),
    ("./auth.json", "SEED looks like a file path, not a login",
     "Did you mean --from-file PATH? It must hold the content of auth.json."),
    ("not a login at all", "SEED is neither JSON nor base64-encoded JSON", DEFAULT_HINT),
    (base64.b64encode(b"[1, 2]").decode(), "SEED is neither JSON nor base64-encoded JSON", DEFAULT_HINT),
    ("", "SEED is empty", DEFAULT_HINT),
    ("12", "SEED must be a JSON object, not a number", DEFAULT_HINT),
])
def test_parse_seed_refusals(seed: str, message: str, hint: str) -> None:
    with pytest.raises(InvalidAuthError) as caught:
        AuthFile.parse_seed(seed, "SEED")
    assert (caught.value.message, caught.value.hint) == (message, hint)


def test_parse_stored_says_how_to_rewrite_a_damaged_value() -> None:
    with pytest.raises(InvalidAuthError) as caught:
        AuthFile.parse_stored('{"tokens": 1}', "file:///srv/login.json")
    assert caught.value.message == "file:///srv/login.json: tokens must be an object or null"
    assert caught.value.hint == (
        "The stored value is damaged or is not a codex-ci login. From a runner or a trusted machine holding a good "
        "login, `codex-ci persist --force --to file:///srv/login.json` rewrites it.")


@pytest.mark.parametrize("text", ["\ud800", '{"tokens": "\ud800"}', '{"a": 1} \udbff'])
def test_parse_stored_refuses_a_lone_surrogate(text: str) -> None:
    with pytest.raises(InvalidAuthError) as caught:
        AuthFile.parse_stored(text, "file:///srv/login.json")
    assert caught.value.message == "file:///srv/login.json is not valid UTF-8"  # as AuthFile.parse says it
    assert caught.value.hint == (
        "The stored value is damaged or is not a codex-ci login. From a runner or a trusted machine holding a good "
        "login, `codex-ci persist --force --to file:///srv/login.json` rewrites it.")


def test_parse_seed_refuses_a_lone_surrogate() -> None:
    with pytest.raises(InvalidAuthError) as caught:
        AuthFile.parse_seed('{"a": "\ud800"}', "SEED")
    assert caught.value.message == "SEED is not valid UTF-8"


def test_parse_stored_reads_a_good_value() -> None:
    text = json.dumps(login(), indent=2)
    assert AuthFile.parse_stored(text, "file:///srv/login.json").to_bytes() == text.encode()


# -- access-only copies ------------------------------------------------------------------------------------------

def test_access_only_replaces_only_the_refresh_token() -> None:
    original = parse(login() | {"extra": {"k": "v"}})
    copy = original.access_only()
    assert copy.is_access_only
    assert not original.is_access_only
    assert copy.tokens["refresh_token"] == ACCESS_ONLY_TOKEN
    assert original.refresh_token == Secret("CANARY-rt-0")  # the original is not changed
    assert copy.tokens | {"refresh_token": "CANARY-rt-0"} == original.tokens
    assert json.loads(copy.to_bytes())["extra"] == {"k": "v"}
    assert copy.identity == original.identity


def test_access_only_needs_a_chatgpt_login() -> None:
    with pytest.raises(InvalidAuthError) as caught:
        parse({"OPENAI_API_KEY": "sk-CANARY-api-key"}).access_only()
    assert caught.value.message == "an access-only copy needs a ChatGPT login, not a apikey one"


def test_a_placeholder_outside_a_chatgpt_login_is_not_access_only() -> None:
    data = {"auth_mode": "chatgptAuthTokens", "tokens": login()["tokens"] | {"refresh_token": ACCESS_ONLY_TOKEN}}
    assert not parse(data).is_access_only


# -- masking -----------------------------------------------------------------------------------------------------

def test_secret_values_cover_every_secret_wherever_it_sits() -> None:
    data = login()
    data["OPENAI_API_KEY"] = "sk-CANARY-api-key"
    data["future_field"] = {"nested": ["CANARY-in-a-list", {"deeper": "CANARY-in-a-dict"}]}
    data["tokens"]["session_token"] = "CANARY-session"
    found = [secret.reveal() for secret in parse(data).secret_values()]
    assert found == ["sk-CANARY-api-key", data["tokens"]["id_token"], data["tokens"]["access_token"],
                     "CANARY-rt-0", "CANARY-session", "CANARY-in-a-list", "CANARY-in-a-dict"]
    assert all(isinstance(secret, Secret) for secret in parse(data).secret_values())


def test_secret_values_leave_out_plain_keys_short_strings_duplicates_and_the_placeholder() -> None:
    data = login(account_id="acct-1234567890")
    data["email"] = "long-enough@example.com"
    data["region"] = "us-east-1-long"
    data["short"] = "1234567"  # under MIN_MASKED
    data["copy"] = "CANARY-rt-0"  # the refresh token again
    data["tokens"]["refresh_token"] = ACCESS_ONLY_TOKEN
    data["dup"] = data["tokens"]["id_token"]
    found = [secret.reveal() for secret in parse(data).secret_values()]
    assert found == [data["tokens"]["id_token"], data["tokens"]["access_token"], "CANARY-rt-0"]


def test_repr_and_tokens_hide_the_values() -> None:
    auth = parse(login())
    assert repr(auth) == "AuthFile(mode='chatgpt', [secure])"
    assert str(auth) == "AuthFile(mode='chatgpt', [secure])"
    assert repr(auth.refresh_token) == "Secret([secure])"
    assert "CANARY" not in repr(auth.identity)


# -- changes -----------------------------------------------------------------------------------------------------

def test_normalized_for_seed_fills_account_id_and_last_refresh() -> None:
    data = login(account_id="acct-claim", last_refresh=None)
    del data["tokens"]["account_id"]
    del data["last_refresh"]
    normalized = json.loads(parse(data).normalized_for_seed(NOW).to_bytes())
    assert normalized["tokens"]["account_id"] == "acct-claim"
    assert normalized["last_refresh"] == format_time(NOW)


def test_normalized_for_seed_keeps_what_is_there() -> None:
    raw = json.dumps(login(), indent=2).encode()
    assert parse(raw).normalized_for_seed(NOW).to_bytes() == raw


def test_with_refresh_takes_the_new_tokens_and_keeps_the_omitted_ones() -> None:
    before = parse(login())
    new_access = make_jwt({"iat": ISSUED_AT + 100, "exp": ISSUED_AT + 9000})
    after = before.with_refresh({"access_token": new_access, "refresh_token": "CANARY-rt-1", "id_token": ""}, NOW)
    assert after.tokens["access_token"] == new_access
    assert after.refresh_token == Secret("CANARY-rt-1")
    assert after.tokens["id_token"] == before.tokens["id_token"]
    assert after.last_refresh == NOW
    assert after.stamp(NOW) == Stamp(datetime.fromtimestamp(ISSUED_AT + 100, UTC), NOW)
    assert before.refresh_token == Secret("CANARY-rt-0")


def test_stamp_does_not_believe_a_planted_future() -> None:
    future = NOW + timedelta(days=30)
    data = login(last_refresh=format_time(future))
    data["tokens"]["access_token"] = make_jwt({"iat": int(future.timestamp()), "exp": int(future.timestamp()) + 60})
    auth = parse(data)
    assert auth.last_refresh == future
    assert auth.refreshed_at(NOW) is None
    assert auth.stamp(NOW) == Stamp(None, None)
