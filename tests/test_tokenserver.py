"""Tests for the fake OAuth token server in testing/tokenserver.py (stdlib urllib only)."""

from __future__ import annotations

import http.client
import json
import re
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from testing.tokenserver import CLIENT_ID, TokenServer, decode_jwt_payload, make_jwt, make_login

INITIAL = "CANARY-rt-0"
ROOT = Path(__file__).resolve().parent.parent


def post(
    url: str,
    refresh_token: str | None = INITIAL,
    *,
    body: Any = None,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes, Message]:
    """POST a refresh request; return (status, raw body, headers) even for HTTP errors."""
    if body is None:
        body = {"client_id": CLIENT_ID, "grant_type": "refresh_token", "refresh_token": refresh_token}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": content_type, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read(), err.headers


def post_json(url: str, refresh_token: str | None = INITIAL, **kwargs: Any) -> tuple[int, Any]:
    """Like post() but decode the JSON body."""
    status, raw, _ = post(url, refresh_token, **kwargs)
    return status, json.loads(raw)


@pytest.fixture
def server() -> Iterator[TokenServer]:
    with TokenServer(INITIAL) as srv:
        yield srv


def test_make_jwt_and_login_shape() -> None:
    token = make_jwt({"a": 1})
    header, payload, signature = token.split(".")
    assert "=" not in token and signature
    assert decode_jwt_payload(token) == {"a": 1}

    login = make_login(access_exp=None, refresh_token="rt-x", canary="SECRET")
    assert login["auth_mode"] == "chatgpt" and login["OPENAI_API_KEY"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", login["last_refresh"])
    tokens = login["tokens"]
    assert tokens["refresh_token"] == "rt-x" and tokens["account_id"] == "acct-1234567890"
    access = decode_jwt_payload(tokens["access_token"])
    assert "exp" not in access and access["canary"] == "SECRET"
    id_claims = decode_jwt_payload(tokens["id_token"])
    assert id_claims["aud"] == CLIENT_ID and id_claims["email"] == "ci@example.com"
    assert id_claims["https://api.openai.com/auth"]["chatgpt_plan_type"] == "plus"

    plain = make_login(access_exp=123, refresh_token="r", last_refresh=None)
    assert plain["last_refresh"] is None
    assert decode_jwt_payload(plain["tokens"]["access_token"])["exp"] == 123
    assert "canary" not in decode_jwt_payload(plain["tokens"]["access_token"])


def test_rotation_issues_new_chain_link(server: TokenServer) -> None:
    status, body = post_json(server.url, INITIAL)
    assert status == 200
    new_rt = body["refresh_token"]
    assert new_rt != INITIAL and new_rt.startswith("CANARY-rt-1-")
    assert server.current_refresh_token == new_rt
    access = decode_jwt_payload(body["access_token"])
    assert access["canary"] == "CANARY"
    assert abs(access["exp"] - (time.time() + 3600)) < 60
    assert decode_jwt_payload(body["id_token"])["iss"] == "https://auth.openai.com"

    status, body = post_json(server.url, new_rt)
    assert status == 200 and body["refresh_token"].startswith("CANARY-rt-2-")
    assert (server.posts, server.successes, server.reused, server.revoked) == (2, 2, 0, False)
    assert [r["outcome"] for r in server.requests] == ["rotated", "rotated"]


def test_spent_token_revokes_whole_chain(server: TokenServer) -> None:
    _, body = post_json(server.url, INITIAL)
    live = body["refresh_token"]

    status, body = post_json(server.url, INITIAL)
    assert status == 401 and body["error"]["code"] == "refresh_token_reused"
    assert server.revoked and server.reused == 1

    status, body = post_json(server.url, live)
    assert status == 401 and body["error"]["code"] == "refresh_token_invalidated"
    assert [r["outcome"] for r in server.requests] == ["rotated", "reused", "revoked"]


def test_unknown_token_is_rejected_without_revoking(server: TokenServer) -> None:
    status, body = post_json(server.url, "never-issued")
    assert status == 401 and body["error"]["code"] == "refresh_token_invalidated"
    assert not server.revoked
    assert post_json(server.url, INITIAL)[0] == 200


def test_grace_replays_identical_response() -> None:
    with TokenServer(INITIAL, grace=5.0) as srv:
        first = post(srv.url, INITIAL)
        replay = post(srv.url, INITIAL)
        assert first[0] == replay[0] == 200 and first[1] == replay[1]
        assert (srv.successes, srv.replays, srv.revoked) == (1, 1, False)
        live = json.loads(first[1])["refresh_token"]
        assert srv.current_refresh_token == live

        # Only the most recently spent token may be replayed.
        assert post_json(srv.url, live)[0] == 200
        status, body = post_json(srv.url, INITIAL)
        assert status == 401 and body["error"]["code"] == "refresh_token_reused" and srv.revoked


def test_grace_expires() -> None:
    with TokenServer(INITIAL, grace=0.2) as srv:
        assert post(srv.url, INITIAL)[0] == 200
        time.sleep(0.3)
        status, body = post_json(srv.url, INITIAL)
        assert status == 401 and body["error"]["code"] == "refresh_token_reused" and srv.revoked


@pytest.mark.parametrize(
    ("kwargs", "status", "error"),
    [
        ({"content_type": "application/x-www-form-urlencoded"}, 400, "invalid_request"),
        ({"body": {"client_id": CLIENT_ID, "grant_type": "password", "refresh_token": "x"}}, 400, "invalid_request"),
        ({"body": {"client_id": CLIENT_ID, "grant_type": "refresh_token"}}, 400, "invalid_request"),
        ({"body": b"not json"}, 400, "invalid_request"),
        ({"body": {"client_id": "other", "grant_type": "refresh_token", "refresh_token": "x"}}, 401, "invalid_client"),
    ],
)
def test_malformed_requests_are_rejected(server: TokenServer, kwargs: dict[str, Any], status: int, error: str) -> None:
    assert post_json(server.url, INITIAL, **kwargs) == (status, {"error": error})
    assert server.current_refresh_token == INITIAL and server.posts == 1 and not server.revoked


def _error_code(body: bytes) -> Any:
    error = json.loads(body)["error"]
    return error["code"] if isinstance(error, dict) else error


@pytest.mark.parametrize(
    ("mode", "status", "check"),
    [
        ("http500", 500, lambda b: json.loads(b) == {"error": "server_error"}),
        ("http502", 502, lambda b: json.loads(b) == {"error": "server_error"}),
        ("http503", 503, lambda b: json.loads(b) == {"error": "server_error"}),
        ("http429", 429, lambda b: json.loads(b) == {"error": "rate_limited"}),
        ("expired", 401, lambda b: _error_code(b) == "refresh_token_expired"),
        ("reused", 401, lambda b: _error_code(b) == "refresh_token_reused"),
        ("invalidated", 401, lambda b: json.loads(b) == {"error": "refresh_token_invalidated"}),
        ("invalid_grant", 400, lambda b: json.loads(b) == {"error": "invalid_grant"}),
        ("code_toplevel", 400, lambda b: json.loads(b) == {"code": "REFRESH_TOKEN_EXPIRED"}),
        ("unauthorized", 401, lambda b: json.loads(b) == {}),
        ("garbage", 200, lambda b: b == b"<html>not json</html>"),
        ("html500", 500, lambda b: b.startswith(b"<html>")),
        ("empty_ok", 200, lambda b: json.loads(b) == {}),
    ],
)
def test_fault_modes_answer_without_rotating(mode: str, status: int, check: Any) -> None:
    with TokenServer(INITIAL, mode=mode) as srv:
        got_status, body, headers = post(srv.url, INITIAL)
        assert got_status == status and check(body)
        if mode == "http429":
            assert headers["Retry-After"] == "1"
        if mode in ("garbage", "html500"):
            assert headers["Content-Type"] == "text/html"
        assert srv.current_refresh_token == INITIAL and not srv.revoked
        assert srv.posts == 1 and srv.requests[0]["outcome"] == f"fault:{mode}"
        assert srv.reused == (mode == "reused")


def test_set_mode_with_count_reverts_to_ok(server: TokenServer) -> None:
    server.set_mode("http503", count=2)
    assert [post(server.url, INITIAL)[0] for _ in range(3)] == [503, 503, 200]
    assert server.mode == "ok"
    with pytest.raises(ValueError):
        server.set_mode("nope")


def test_partial_keeps_old_refresh_token_live(server: TokenServer) -> None:
    server.set_mode("partial", count=1)
    status, body = post_json(server.url, INITIAL)
    assert status == 200 and set(body) == {"access_token"}
    assert decode_jwt_payload(body["access_token"])["canary"] == "CANARY"
    assert server.current_refresh_token == INITIAL and server.successes == 0
    assert post_json(server.url, INITIAL)[0] == 200


def test_slow_rotates_before_sleeping() -> None:
    with TokenServer(INITIAL, mode="slow", delay=0.5) as srv:
        with pytest.raises(TimeoutError):
            post(srv.url, INITIAL, timeout=0.2)
        assert srv.current_refresh_token != INITIAL
        start = time.monotonic()
        status, body = post_json(srv.url, INITIAL)
        assert time.monotonic() - start >= 0.45
        assert status == 401 and body["error"]["code"] == "refresh_token_reused" and srv.revoked


def test_drop_closes_without_rotating(server: TokenServer) -> None:
    server.set_mode("drop", count=1)
    with pytest.raises(http.client.RemoteDisconnected):
        post(server.url, INITIAL)
    assert server.current_refresh_token == INITIAL and server.requests[0]["outcome"] == "fault:drop"
    assert post(server.url, INITIAL)[0] == 200


def test_drop_after_rotate_spends_token(server: TokenServer) -> None:
    server.set_mode("drop_after_rotate", count=1)
    with pytest.raises(http.client.RemoteDisconnected):
        post(server.url, INITIAL)
    assert server.current_refresh_token != INITIAL and server.successes == 0
    assert server.requests[0]["outcome"] == "rotated+dropped"
    status, body = post_json(server.url, INITIAL)
    assert status == 401 and body["error"]["code"] == "refresh_token_reused"


def test_get_is_404_and_headers_are_recorded(server: TokenServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(server.url, timeout=5)
    assert info.value.code == 404
    info.value.close()
    assert server.posts == 0 and server.requests == []

    post(server.url, INITIAL, headers={"User-Agent": "codex_cli_rs/0.1", "Originator": "codex_cli_rs"})
    recorded = server.requests[0]
    assert recorded["headers"] == {
        "content-type": "application/json",
        "user-agent": "codex_cli_rs/0.1",
        "originator": "codex_cli_rs",
    }
    assert recorded["path"] == "/oauth/token" and recorded["body"]["refresh_token"] == INITIAL


def test_concurrent_reuse_rotates_exactly_once(server: TokenServer) -> None:
    results: list[int] = []
    barrier = threading.Barrier(64)

    def worker() -> None:
        barrier.wait()
        results.append(post(server.url, INITIAL)[0])

    threads = [threading.Thread(target=worker) for _ in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [200] + [401] * 63
    assert (server.posts, server.successes, server.reused, server.revoked) == (64, 1, 1, True)


def test_state_file_written_in_process(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    with TokenServer(INITIAL, state_file=state) as srv:
        assert json.loads(state.read_text())["posts"] == 0
        post(srv.url, INITIAL)
        with srv.lock:
            assert json.loads(state.read_text()) == srv.snapshot()
    assert list(tmp_path.iterdir()) == [state]


def test_standalone_prints_url_writes_state_and_stops_on_sigterm(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    cmd = [sys.executable, "-m", "testing.tokenserver", "--port", "0", "--state-file", str(state),
           "--refresh-token", INITIAL, "--grace", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        assert select.select([proc.stdout], [], [], 5)[0], "server printed no URL"
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/oauth/token", url)

        assert post(url, INITIAL, headers={"Originator": "codex_cli_rs"})[0] == 200
        assert post(url, INITIAL)[0] == 200  # replay within --grace
        saved = json.loads(state.read_text())
        assert (saved["posts"], saved["successes"], saved["replays"], saved["revoked"]) == (2, 1, 1, False)
        assert saved["requests"][0]["headers"]["originator"] == "codex_cli_rs"
        assert saved["requests"][0]["body"]["refresh_token"] == INITIAL

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
