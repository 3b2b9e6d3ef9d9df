"""refresh on one CODEX_HOME: under Codex's locks for the whole read, decide, POST and write, exactly as Codex
would, and never twice for one need."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from codex_ci import interrupts
from codex_ci.claims import format_time, utcnow
from codex_ci.errors import AmbiguousRefreshError, InvalidAuthError
from codex_ci.home import Home
from codex_ci.policy import Policy, earliest_refresh_at, in_future, need
from codex_ci.result import LoginHook, Result, ignore
from codex_ci.secret import Secret
from codex_ci.state import digest

if TYPE_CHECKING:
    from codex_ci.refresh import TokenClient

log = logging.getLogger("codex_ci")


def refresh_home(
    home: Home, policy: Policy, *, lock_timeout: float, client: TokenClient | None = None,
    on_login: LoginHook = ignore, deadline: float | None = None, expected: Secret | None = None,
) -> Result:
    """Refresh auth.json if it needs it (no POST may run past ``deadline``, a time.monotonic() value: see
    TokenClient.refresh).

    Never rotates a login that another process refreshed after this run started (whatever its new lifetime), nor
    one rotated moments ago (see policy.too_soon), not even when forced. ``expected`` is the refresh token the
    caller set out to refresh (by default, the one auth.json holds when this starts). From just before the POST
    until the new login is written, SIGINT and SIGTERM are deferred (see interrupts.rotation)."""
    from codex_ci.refresh import TokenClient

    home.ensure(create=False)
    started = utcnow()
    before = expected or home.peek_refresh_token()
    with home.lock(lock_timeout):
        auth, _ = home.load()
        on_login(auth)
        now = utcnow()
        last = auth.last_refresh
        rotating = auth.is_chatgpt and not auth.is_access_only  # else need() says why not
        if rotating and ((before is not None and auth.refresh_token != before)
                         or (last is not None and started <= last <= now)):
            return Result("not-refreshed", auth, "another process refreshed it while this one waited")
        if rotating and in_future(auth, now):
            log.warning("auth.json's last_refresh is more than 5 minutes ahead of this machine's clock; ignoring it")
        state = home.state()
        due, why = need(auth, now, policy, state.refresh_not_before)
        if not due:
            return Result("not-refreshed", auth, why)
        token = auth.refresh_token
        if token is None:  # validated by AuthFile; kept for the type checker
            raise InvalidAuthError("tokens.refresh_token is missing")
        log.info("refreshing: %s", why)
        with interrupts.rotation():
            tokens = (client or TokenClient()).refresh(token, deadline)
            try:
                refreshed = auth.with_refresh(tokens, utcnow())
            except InvalidAuthError as exc:
                raise AmbiguousRefreshError(
                    f"the token endpoint answered with unusable tokens: {exc.message}") from None
            on_login(refreshed)
            data = refreshed.to_bytes()
            home.write(data)
            not_before = earliest_refresh_at(tokens, now)
            home.save_state(replace(state, not_before=format_time(not_before) if not_before else "",
                                    rotated=digest(data)))
    return Result("refreshed", refreshed, why)
