"""The command-line options several commands share, declared once for Typer."""

from __future__ import annotations

from typing import Annotated

import typer

from codex_ci.stores import url_forms

HomeOpt = Annotated[
    str | None,
    typer.Option("--codex-home", metavar="DIR", envvar="CODEX_HOME", show_envvar=True,
                 help="Codex's home (default ~/.codex)."),
]
LockOpt = Annotated[
    float,
    typer.Option("--lock-timeout", metavar="SECONDS", envvar="CODEX_CI_LOCK_TIMEOUT", min=0.0,
                 help="Seconds to wait for auth.lock and auth.json.lock."),
]
MinTtlOpt = Annotated[
    str,
    typer.Option("--min-ttl", metavar="DURATION", envvar="CODEX_CI_MIN_TTL",
                 help="Refresh when the access token expires within this."),
]

StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store", metavar="URL", envvar="CODEX_CI_STORE_URL", show_envvar=True,
        help=f"Secret store URL: {url_forms()}.",
    ),
]
LeaseTtlOpt = Annotated[
    str, typer.Option("--lease-ttl", metavar="DURATION",
                      help="How long a refresh lease lasts if its holder dies (at most 15m).")
]
LeaseWaitOpt = Annotated[
    float, typer.Option("--lease-wait", metavar="SECONDS", min=0.0,
                        help="Seconds to wait for another runner's refresh lease.")
]

AccessOnlyOpt = Annotated[
    bool,
    typer.Option("--access-only", help="Write a copy whose refresh token is a placeholder: it can rotate nothing."),
]
HandoutOpt = Annotated[
    str | None,
    typer.Option("--handout", metavar="URL", envvar="CODEX_CI_HANDOUT_URL", show_envvar=True,
                 help="After the login is saved, write its access-only copy here (for jobs to restore)."),
]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", metavar="SECONDS", min=0.1, max=600,
                        help="Seconds to wait for the token endpoint's answer.")
]
RetriesOpt = Annotated[
    int, typer.Option("--retries", metavar="N", min=0, max=10,
                      help="Retries when the request surely did not spend the token.")
]
