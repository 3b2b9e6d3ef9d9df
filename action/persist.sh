#!/usr/bin/env bash
# After the job: write the (possibly rotated) login back to the store by compare-and-set.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

store="${CODEX_CI_STORE_INPUT:-${CODEX_CI_STORE_URL:-}}"
[ -n "$store" ] || fail 2 "no store: pass store, or run the codex-auth step with a store first"
single_line store "$store"
home="${CODEX_CI_HOME_INPUT:-${CODEX_HOME:-}}"
[ -n "$home" ] || fail 2 "no CODEX_HOME: pass codex-home, or run the codex-auth step first"
single_line codex-home "$home" # it is echoed into a ::warning below
export CODEX_HOME="$home"

if [ ! -e "$home/auth.json" ]; then
  echo "::warning title=codex-ci::no auth.json in $home: nothing to persist"
  echo "persisted=skipped" >> "$GITHUB_OUTPUT"
  exit 0
fi

venv="${CODEX_CI_VENV:-}"
if [ -z "$venv" ] || [ ! -x "$venv/bin/codex-ci" ]; then
  venv="${RUNNER_TEMP:?}/codex-ci-venv-persist"
  install_codex_ci "${CODEX_CI_PYTHON:?}" "$venv" "$(extra_for "$store")" >&2
fi
"$venv/bin/codex-ci" persist --to "$store"
