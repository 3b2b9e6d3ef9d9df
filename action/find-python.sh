#!/usr/bin/env bash
# Find a Python >= 3.11 already on the runner that matches the python-version input (a range such as ">=3.11",
# ">=3.11,<3.14" or "3.12"); print nothing to python-path when there is none, so that actions/setup-python runs.
# Windows runners are refused here, once and clearly: codex-ci relies on POSIX file locking and permissions.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ "${RUNNER_OS:-}" != Windows ] || fail 2 "codex-ci runs on Linux and macOS runners only, not on Windows"
spec="${CODEX_CI_PYTHON_VERSION_INPUT:->=3.11}"
single_line python-version "$spec"
[[ "$spec" =~ ^[0-9.,\ \<\>=x]+$ ]] || fail 2 "python-version must be a version or range such as >=3.11"
# shellcheck disable=SC2016 # the Python program is single-quoted on purpose
check='
import re, sys
have = sys.version_info[:3]
def key(text):
    return tuple(int(p) for p in text.split(".") if p != "x")
ok = have >= (3, 11) and sys.implementation.name == "cpython"
for clause in re.split(r"[\s,]+", sys.argv[1].strip()):
    m = re.fullmatch(r"(>=|<=|==|>|<|=)?([0-9]+(?:\.[0-9]+|\.x)*)", clause)
    if not clause:
        continue
    if not m:
        ok = False
        break
    op, want = m.group(1) or "==", key(m.group(2))
    part = have[:len(want)]
    ok = ok and {">=": part >= want, "<=": part <= want, ">": part > want, "<": part < want,
                 "==": part == want, "=": part == want}[op]
from importlib.util import find_spec  # pip downloads uv; without pip, venv and ensurepip make a pip
ok = ok and bool(find_spec("pip") or (find_spec("venv") and find_spec("ensurepip")))
print(sys.executable if ok else "")
'
found=""
for candidate in python3 python3.13 python3.12 python3.11 python; do
  command -v "$candidate" > /dev/null 2>&1 || continue
  found=$("$candidate" -I -c "$check" "$spec" 2> /dev/null) || found=""
  [ -z "$found" ] || break
done
if [ -n "$found" ]; then
  echo "codex-ci: using $found ($("$found" -I -c 'import platform; print(platform.python_version())'))" >&2
else
  echo "codex-ci: no Python on the runner matches python-version $spec: actions/setup-python will provide one" >&2
fi
echo "python-path=$found" >> "$GITHUB_OUTPUT"
