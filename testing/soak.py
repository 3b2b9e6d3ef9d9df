"""How hard the long-running tests push: a fast subset in scripts/test, the full runs in scripts/soak."""

from __future__ import annotations

import os

SOAK = os.environ.get("CODEX_CI_SOAK") == "1"


def scale(fast: int, soak: int) -> int:
    """``fast`` trials normally, ``soak`` under scripts/soak (CODEX_CI_SOAK=1)."""
    return soak if SOAK else fast
