#!/usr/bin/env bash
# Install codex-ci (with only the chosen store's locked requirements) into a private venv.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
extra=$(extra_for "${CODEX_CI_STORE_INPUT:-}")
venv="${RUNNER_TEMP:?}/codex-ci-venv-$extra"
install_codex_ci "${CODEX_CI_PYTHON:?}" "$venv" "$extra"
echo "venv=$venv" >> "$GITHUB_OUTPUT"
