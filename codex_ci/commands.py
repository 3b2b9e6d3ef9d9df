"""What refresh, keepalive, restore and persist do once their options are parsed: open the stores, make the one
core call, log and report the outcome. The Typer layer (cli.py) only parses options and maps errors to exit codes."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from codex_ci.errors import ConfigError
from codex_ci.report import facts, mask, report
from codex_ci.settings import RefreshSettings, parse_duration

if TYPE_CHECKING:
    from codex_ci.stores import Store

log = logging.getLogger("codex_ci")


def refresh(codex_home: str | None, store: str | None, settings: RefreshSettings, *, title: str,
            handout: str | None = None, rotator: bool = False) -> None:
    """One local refresh, or with a store the distributed one; then the report."""
    from codex_ci.home import Home

    home = Home.resolve(codex_home)
    extra: dict[str, Any] = {}
    if store:
        from codex_ci.distributed import distributed_refresh
        from codex_ci.sync import write_handout

        settings.check_lease()
        opened = open_store(store)
        handout_store = open_store(handout) if handout else None
        result = distributed_refresh(
            home, opened, settings.policy, lock_timeout=settings.lock_timeout, client=settings.client(),
            on_login=mask, lease_ttl=settings.lease_ttl, lease_wait=settings.lease_wait, rotator=rotator,
            handout=handout_store,
        )
        extra["store-version"] = result.version or ""
        if handout_store is not None:  # the full login is in the store: only now the access-only copy
            handed = write_handout(result.auth, handout_store, opened)
            log.info("%s", handed.reason)
            extra["handout"] = handed.action
    elif handout:
        raise ConfigError("--handout needs --store: the full login must be saved before its access-only copy")
    else:
        from codex_ci.rotate import refresh_home

        result = refresh_home(home, settings.policy, lock_timeout=settings.lock_timeout, client=settings.client(),
                              on_login=mask)
    expires = facts(result.auth)["expires-at"] or "unknown"
    log.info("%s: %s (access token valid until %s)", "refreshed" if result.refreshed else "not refreshed",
             result.reason, expires)
    report(title, result.auth, {"refreshed": result.refreshed} | extra)


def open_store(url: str) -> Store:
    from codex_ci.stores import open_store as open_url

    store = open_url(url)
    log.debug("store: %s", store.url)
    return store


def sync(command: str, url: str | None, option: str, *, codex_home: str | None, lock_timeout: float, force: bool,
         access_only: bool = False, min_ttl: str = "1h") -> None:
    """restore or persist: one core call, then the report (output ``restored`` or ``persisted``)."""
    from codex_ci import sync as core
    from codex_ci.home import Home

    home, store = Home.resolve(codex_home), open_store(require_store(url, option))
    if command == "restore":
        result = core.restore(home, store, lock_timeout=lock_timeout, on_login=mask, force=force,
                              access_only=access_only, min_ttl=parse_duration(min_ttl, "--min-ttl"))
    else:
        result = core.persist(home, store, lock_timeout=lock_timeout, on_login=mask, force=force)
    outcome = "restored" if command == "restore" else "persisted"
    report(f"codex-ci {command}", result.auth, {outcome: result.action, "store-version": result.version})
    core.check_persisted(result)
    log.info("%s", result.reason)


def require_store(value: str | None, option: str) -> str:
    if not value:
        raise ConfigError(f"{option} (or CODEX_CI_STORE_URL) is required")
    return value
