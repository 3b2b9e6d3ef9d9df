#!/usr/bin/env bash
# Decide where codex-ci's private venv lives, which extra it needs, and the cache key for it.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

version="${CODEX_CI_VERSION_INPUT:-}"
[[ "$version" =~ ^[0-9A-Za-z.+!-]*$ ]] || fail 2 "codex-ci-version is not a version"
extra=$(extra_for "${CODEX_CI_STORE_INPUT:-}")
python_version=$("$CODEX_CI_PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
# Hashed with the Python at hand: sha256sum is GNU coreutils, absent from macOS runners.
source_hash=$(cat "$root/pyproject.toml" "$root"/codex_ci/*.py "$root"/codex_ci/stores/*.py |
  "$CODEX_CI_PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:16])')
venv="${RUNNER_TEMP:?}/codex-ci-venv-${extra:-core}"
{
  echo "venv=$venv"
  echo "extra=$extra"
  echo "cache-key=codex-ci-${RUNNER_OS:-os}-${RUNNER_ARCH:-arch}-py$python_version-${extra:-core}-${version:-src-$source_hash}"
} >> "$GITHUB_OUTPUT"
