"""Benchmarks for codex-ci: ``python -m benchmarks.run [NAME ...]`` (see scripts/bench and BENCHMARKS.md).

Importing the package puts ``tests/`` on ``sys.path`` so the benchmarks can use the loopback token
endpoint the tests use (``tests/tokenserver.py``) without copying it.
"""

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent.parent / "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
