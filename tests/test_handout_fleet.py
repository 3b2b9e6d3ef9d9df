"""The GitHub-secrets fleet (benchmarks/handout_fleet.py) at a small scale: one serialized rotator and jobs on its
access-only handout, some of them handed the previous handout; scripts/bench runs it with 1,000 jobs."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import handout_fleet  # noqa: E402


def test_a_rotator_and_a_hundred_jobs_on_its_handout() -> None:
    m = handout_fleet.simulate(jobs=120, every=40, wave=8, stale=0.2)
    assert (m["refresh_token_reused"], m["revoked"], m["unsaved_rotations"], m["failures"]) == (0, False, 0, [])
    assert m["rotator_runs"] >= 3 and m["rotations"] == m["rotator_runs"] == m["successes"]
    assert m["finished"] == 120 and m["valid-access-token"] == 120
    assert m.get("real-refresh-token-seen", 0) == 0
    assert m["codex-refresh-http-401"] == 120  # every job's "Codex" presented only the placeholder
