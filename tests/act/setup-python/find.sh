#!/usr/bin/env bash
# setup-python stand-in: a plain version "3.11" means 3.11 or newer here (the runner has one CPython), a range is
# checked clause by clause. Writes python-path / python-version and, like setup-python, prepends to GITHUB_PATH.
set -euo pipefail
# shellcheck disable=SC2016 # the Python program is single-quoted on purpose
check='
import re, sys
have = sys.version_info[:2]
ok = sys.implementation.name == "cpython"
for clause in filter(None, re.split(r"[\s,]+", sys.argv[1])):
    op, want = re.fullmatch(r"(>=|<=|==|>|<)?(\d+(?:\.\d+)*)", clause).groups()
    want = tuple(int(p) for p in want.split("."))[:2]
    ok = ok and {None: have >= want, ">=": have >= want, "==": have == want, "<=": have <= want,
                 ">": have > want, "<": have < want}[op]
print(sys.executable if ok else "")
'
for candidate in python3 python; do
  command -v "$candidate" > /dev/null 2>&1 || continue
  found=$("$candidate" -c "$check" "${WANT:->=3}")
  if [ -n "$found" ]; then
    echo "python-path=$found" >> "$GITHUB_OUTPUT"
    echo "python-version=$("$found" -c 'import platform; print(platform.python_version())')" >> "$GITHUB_OUTPUT"
    [ "${UPDATE_ENVIRONMENT:-true}" != true ] || dirname "$found" >> "$GITHUB_PATH"
    exit 0
  fi
done
echo "::error::setup-python stand-in: no Python on this runner matches ${WANT:-any}"
exit 1
