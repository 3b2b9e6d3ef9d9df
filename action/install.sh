#!/usr/bin/env bash
# Install codex-ci (with only the chosen store's extra) into a private venv; the caller's Python is untouched.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
install_codex_ci "$CODEX_CI_PYTHON" "$CODEX_CI_VENV" "${CODEX_CI_EXTRA:-}" "${CODEX_CI_VERSION_INPUT:-}"
