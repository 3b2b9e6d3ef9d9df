#!/usr/bin/env bash
# Regenerate the action's hash-locked requirements from scripts/constraints.txt: one file per store extra
# (requirements-core.txt, -vault, -aws, -gcp, -github), setuptools for building codex-ci from this checkout
# (requirements-build.txt) and uv itself (requirements-uv.txt). Run from a development checkout after changing
# pyproject.toml's dependencies or scripts/constraints.txt; tests/test_release.py fails while they drift.
# Usage: action/lock.sh [OUTDIR] (default: action/). Needs uv (the `test` extra installs the pinned one).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-action}
uv=${UV:-$(command -v uv || echo .venv/bin/uv)}
export UV_NO_CONFIG=1 # a developer's uv.toml must not change the result; UV_INDEX_URL (a mirror) still applies
# Resolve as the index was at this moment, so that a release published later cannot change the result (move it
# forward, together with scripts/constraints.txt, to take newer versions).
EXCLUDE_NEWER=2026-11-27T07:45:00Z
compile() { # compile OUTPUT ARGS...: a universal (Linux and macOS, Python 3.11+) hash-locked resolution
  local output=$1
  shift
  "$uv" pip compile --quiet --universal --python-version 3.11 --generate-hashes --no-header \
    --exclude-newer "$EXCLUDE_NEWER" \
    --constraints scripts/constraints.txt "$@" --output-file "$output"
}
for extra in core vault aws gcp github; do
  if [ "$extra" = core ]; then
    compile "$out/requirements-core.txt" pyproject.toml
  else
    compile "$out/requirements-$extra.txt" pyproject.toml --extra "$extra"
  fi
done
printf 'setuptools\n' | compile "$out/requirements-build.txt" -
printf 'uv\n' | compile "$out/requirements-uv.txt" -
