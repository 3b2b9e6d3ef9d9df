"""The Typer app: options in (declared in options.py), one core call, a report out (report.py), an exit code.

Core modules are imported inside each command so that ``seed`` and ``status`` never load httpx or a store SDK.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Annotated, Any, NoReturn

import typer

from codex_ci import __version__, commands
from codex_ci.errors import CodexCIError, ExitCode
from codex_ci.options import (
    AccessOnlyOpt,
    HandoutOpt,
    HomeOpt,
    LeaseTtlOpt,
    LeaseWaitOpt,
    LockOpt,
    MinTtlOpt,
    RetriesOpt,
    StoreOpt,
    TimeoutOpt,
)
from codex_ci.report import mask, report
from codex_ci.settings import parse_duration

log = logging.getLogger("codex_ci")

APP_SETTINGS: dict[str, Any] = {
    "name": "codex-ci",
    "help": "Keep a Codex CLI ChatGPT login alive and safe on CI runners.",
    "add_completion": False,
    "no_args_is_help": True,
    "pretty_exceptions_enable": False,
    "rich_markup_mode": None,
    "context_settings": {"help_option_names": ["-h", "--help"]},
}
app = typer.Typer(**APP_SETTINGS)

def _run(body: Callable[[], int | None]) -> NoReturn:
    """Run one command: translate codex-ci errors into a one-line message and their exit code."""
    from codex_ci import github, interrupts

    interrupts.install()  # SIGINT and SIGTERM become Interrupted: locks and leases are released on the way out
    try:
        code = body() or ExitCode.OK
    except CodexCIError as exc:
        hint = f" {exc.hint}" if exc.hint else ""
        message = exc.message.rstrip(".").replace("\r", "\\r").replace("\n", "\\n")  # one line, whatever a path holds
        log.error("error: %s.%s", message, hint)
        github.error(exc.message)
        code = exc.exit_code
    except KeyboardInterrupt:
        log.error("error: interrupted.")
        code = ExitCode.INTERRUPTED
    except typer.Exit:
        raise
    except Exception as exc:  # a bug: say what kind, never its text or traceback (they could hold a payload)
        log.error("internal error (%s). This is a bug in codex-ci; please report it.", type(exc).__name__)
        github.error(f"internal error ({type(exc).__name__})")
        code = ExitCode.UNEXPECTED
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"codex-ci {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Say more (never a secret).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("codex-ci: %(message)s"))
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)


@app.command()
def seed(
    codex_home: HomeOpt = None,
    from_file: Annotated[
        str | None, typer.Option("--from-file", metavar="PATH",
                                 help="Read the login from PATH (- for stdin), not CODEX_AUTH_JSON.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing auth.json.")] = False,
    if_newer: Annotated[
        bool, typer.Option("--if-newer", help="Replace it only if the seed's last_refresh is later.")
    ] = False,
    access_only: AccessOnlyOpt = False,
    lock_timeout: LockOpt = 60.0,
) -> None:
    """Write auth.json from CODEX_AUTH_JSON (JSON or base64) only if it is absent."""

    def body() -> None:
        from codex_ci.home import Home
        from codex_ci.seed import read_source, seed

        raw, source = read_source(from_file)
        result = seed(Home.resolve(codex_home), raw, source, force=force, if_newer=if_newer,
                      lock_timeout=lock_timeout, on_login=mask, access_only=access_only)
        log.info("%s", result.reason)
        report("codex-ci seed", result.auth, {"seeded": result.action != "kept"})

    _run(body)


@app.command()
def refresh(
    codex_home: HomeOpt = None,
    min_ttl: MinTtlOpt = "1h",
    max_age: Annotated[
        str, typer.Option("--max-age", metavar="DURATION",
                          help="Refresh when the expiry is unreadable and last_refresh is older.")
    ] = "8d",
    force: Annotated[
        bool, typer.Option("--force", help="Refresh even if the token is fresh (never within a minute of the last).")
    ] = False,
    timeout: TimeoutOpt = 30.0,
    retries: RetriesOpt = 2,
    lock_timeout: LockOpt = 60.0,
    store: StoreOpt = None,
    lease_ttl: LeaseTtlOpt = "2m",
    lease_wait: LeaseWaitOpt = 180.0,
    handout: HandoutOpt = None,
) -> None:
    """Refresh the login under Codex's locks, exactly as Codex would, if it needs it.

    With --store: the distributed refresh. Restore from the store, and if a refresh is needed take a lease in
    the store so that any number of runners rotate the login once, then write it back by compare-and-set.
    """

    def body() -> None:
        from codex_ci.settings import RefreshSettings

        settings = RefreshSettings.for_refresh(
            min_ttl=min_ttl, max_age=max_age, force=force, timeout=timeout, retries=retries,
            lock_timeout=lock_timeout, lease_ttl=lease_ttl, lease_wait=lease_wait)
        commands.refresh(codex_home, store, settings, title="codex-ci refresh", handout=handout)

    _run(body)


@app.command()
def restore(
    from_url: Annotated[
        str | None,
        typer.Option("--from", metavar="URL", envvar="CODEX_CI_STORE_URL", show_envvar=True,
                     help="Store URL to restore from."),
    ] = None,
    codex_home: HomeOpt = None,
    lock_timeout: LockOpt = 60.0,
    force: Annotated[
        bool, typer.Option("--force", help="Take the store's login even when auth.json changed since its base.")
    ] = False,
    access_only: AccessOnlyOpt = False,
    min_ttl: Annotated[
        str, typer.Option("--min-ttl", metavar="DURATION", envvar="CODEX_CI_MIN_TTL",
                          help="For an access-only copy: refuse one whose access token expires within this.")
    ] = "1h",
) -> None:
    """Write the store's login to auth.json, unless auth.json holds a newer rotation of its own.

    A store holding an access-only copy (a handout), or --access-only, writes a copy that can rotate nothing."""
    _run(lambda: commands.sync("restore", from_url, "--from", codex_home=codex_home, lock_timeout=lock_timeout,
                               force=force, access_only=access_only, min_ttl=min_ttl))


@app.command()
def persist(
    to_url: Annotated[
        str | None,
        typer.Option("--to", metavar="URL", envvar="CODEX_CI_STORE_URL", show_envvar=True,
                     help="Store URL to write to."),
    ] = None,
    codex_home: HomeOpt = None,
    lock_timeout: LockOpt = 60.0,
    force: Annotated[
        bool, typer.Option("--force", help="Write auth.json over whatever the store holds (after a new login).")
    ] = False,
) -> None:
    """Write auth.json back to the store if it changed, by compare-and-set; never over a newer login."""
    _run(lambda: commands.sync("persist", to_url, "--to", codex_home=codex_home, lock_timeout=lock_timeout,
                               force=force))


@app.command()
def keepalive(
    store: StoreOpt = None,
    codex_home: HomeOpt = None,
    max_age: Annotated[
        str | None,
        typer.Option("--max-age", metavar="DURATION",
                     help="Refresh only if the stored login is older than this (default: always)."),
    ] = None,
    min_ttl: MinTtlOpt = "1h",
    timeout: TimeoutOpt = 30.0,
    retries: RetriesOpt = 2,
    lock_timeout: LockOpt = 60.0,
    lease_ttl: LeaseTtlOpt = "2m",
    lease_wait: LeaseWaitOpt = 180.0,
    handout: HandoutOpt = None,
) -> None:
    """The nightly job (the rotator): rotate the stored login (distributed, once), write its access-only copy to
    --handout for the jobs, then report its health."""

    def body() -> int:
        from codex_ci.home import Home
        from codex_ci.settings import RefreshSettings
        from codex_ci.status import read_status

        url = commands.require_store(store, "--store")
        settings = RefreshSettings.for_keepalive(
            min_ttl=min_ttl, max_age=max_age, timeout=timeout, retries=retries, lock_timeout=lock_timeout,
            lease_ttl=lease_ttl, lease_wait=lease_wait)
        commands.refresh(codex_home, url, settings, title="codex-ci keepalive", handout=handout, rotator=True)
        report = read_status(Home.resolve(codex_home), min_ttl=settings.policy.min_ttl, lock_timeout=lock_timeout)
        log.info("health: %s", report.health)
        return report.exit_code

    _run(body)


@app.command()
def status(
    codex_home: HomeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
    min_ttl: Annotated[
        str, typer.Option("--min-ttl", metavar="DURATION", envvar="CODEX_CI_MIN_TTL",
                          help="Report `expiring` (exit 20) when the access token expires within this.")
    ] = "1h",
    lock_timeout: LockOpt = 10.0,
    store: StoreOpt = None,
) -> None:
    """Show the login's health; the exit code tells it (see README). --store adds the stored copy."""

    def body() -> int:
        from codex_ci.home import Home
        from codex_ci.status import read_status, render, store_view

        home = Home.resolve(codex_home)
        report = read_status(home, min_ttl=parse_duration(min_ttl, "--min-ttl"), lock_timeout=lock_timeout)
        if store:
            report.store = store_view(commands.open_store(store), home)
        if as_json:
            import json

            text = json.dumps(report.as_dict(), indent=2)
        else:  # a path may hold bytes that are not UTF-8: print them escaped, never fail on them
            text = render(report).encode("utf-8", "backslashreplace").decode("utf-8")
        typer.echo(text)
        return report.exit_code

    _run(body)


GLOBAL_FLAGS = ("-v", "--verbose", "-q", "--quiet")


def main() -> None:
    """The console script. Typer builds every command's parameters before it runs one, so when the command is
    named, only that one is registered: it keeps ``seed``'s start-up close to a one-command Typer app. The global
    flags also work after the command (``codex-ci seed -q``): they are moved before it."""
    name = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    if name is not None:
        at = sys.argv.index(name)
        moved = [arg for arg in sys.argv[at + 1:] if arg in GLOBAL_FLAGS]
        rest = [arg for arg in sys.argv[at + 1:] if arg not in GLOBAL_FLAGS]
        sys.argv[1:] = [*sys.argv[1:at], *moved, name, *rest]
    command = next((info for info in app.registered_commands if info.callback and info.callback.__name__ == name), None)
    if command is None:
        app(prog_name="codex-ci")
        return
    single = typer.Typer(**APP_SETTINGS)
    single.callback()(main_options)
    single.registered_commands.append(command)
    single(prog_name="codex-ci")
