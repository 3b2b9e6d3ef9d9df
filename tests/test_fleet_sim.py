"""The fleet simulation (benchmarks/fleet_sim.py) against every store, as a test.

Fast (scripts/test): 80 jobs on the file store and 60 on Vault (OpenBao), each with real CLI processes among them.
Soak (scripts/soak, CODEX_CI_SOAK=1): 1,000 jobs on each of file, Vault, AWS (moto) and GCP (the gRPC fake).
Every run must end with no failed job, no refresh token reused, the login not revoked, no rotation lost, the store
holding the server's live login, every finished job having held a live login (or one whose rotation was in flight
when it read it) and none having kept a login expired by its own clock; rotations must happen every few jobs, not
every job. Among the jobs, some run on wall clocks off by up to 10 minutes (CLI jobs under faketime) and some are
cancelled (SIGINT or SIGTERM) while their refresh POST is in flight: those must save the rotation and exit 130 or
143. The documented window (a runner gone between the rotation and the store write) is checked apart: its loss is
counted as such, and the strict server then revokes the login, as README warns.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from testing.soak import SOAK, scale
from testing.targets import StoreTarget

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import fleet_sim  # noqa: E402

JOBS = {"file": scale(80, 1000), "vault": scale(60, 1000), "aws": scale(0, 1000), "gcp": scale(0, 1000)}
SEED = 20261122


def explain(result: fleet_sim.FleetResult) -> str:
    failed = [name for name, ok in result.checks.items() if not ok]
    return f"{result.kind}: failed checks {failed}; metrics {result.metrics}"


def with_skewed_cli_jobs(specs: list[fleet_sim.JobSpec]) -> list[fleet_sim.JobSpec]:
    """At least two real CLI jobs under faketime, even at the fast scale: one 9 minutes ahead (it sees every login
    expired, so it rotates whenever it gets the lease) and one 9 minutes behind (it sees every login fresh)."""
    jobs = len(specs)
    for n, skew in ((jobs // 3, 540), (2 * jobs // 3, -540)):
        specs[n] = replace(specs[n], runner="cli", death=None, skew=skew)
    return specs


@pytest.mark.parametrize("kind", fleet_sim.KINDS)
def test_fleet(kind: str, request: pytest.FixtureRequest) -> None:
    jobs = JOBS[kind]
    if not jobs:
        pytest.skip(f"the {kind} fleet runs under scripts/soak only")
    target: StoreTarget = request.getfixturevalue(f"{kind}_target")
    specs = with_skewed_cli_jobs(fleet_sim.plan(jobs, SEED))
    result = fleet_sim.simulate(kind, target.url, target.env, jobs=jobs, seed=SEED, specs=specs,
                                deadline_seconds=scale(240, 900))
    m = result.metrics
    assert result.passed, explain(result)
    assert m["finished"] + m["died"] + m["cancelled_mid_post"] == jobs, m
    assert m["died"] > 0, m["deaths"]
    # the new conditions happened, and the safety checks (in result.checks) held through them
    assert m["skewed_jobs"] > 0 and m["skewed_cli_jobs"] >= 2 and m["skewed_ahead"] > 0 and m["skewed_behind"] > 0, m
    assert m["cancelled_mid_post"] > 0 and m["cancels_not_delivered"] == 0, m
    assert m["cancelled_mid_post_saved"] == m["cancelled_mid_post"], m
    assert m["refresh_token_reused"] == 0 and not m["revoked"] and m["lost_rotations"] == 0, m
    assert m["store_ends_newest"], m
    assert 3 <= m["rotations"] <= jobs // 2, m  # every few jobs, not every job
    assert m["posts"] == m["rotations"]  # no POST without a rotation: nothing retried, nothing rejected
    if SOAK:
        assert m["lease_holders_killed"] > 0 and m["persist_steps_after_death"] > 0, m
        assert set(m["cancelled_mid_post_by_signal"]) == {"SIGINT", "SIGTERM"}, m


def test_runner_gone_in_the_documented_window(file_target: StoreTarget) -> None:
    """The one loss README documents: counted as lost in the window, not outside it; and its consequence."""
    result = fleet_sim.window_trial("file", file_target.url, file_target.env)
    m = result.metrics
    assert m["lost_in_window"] == 1 and m["lost_rotations"] == 0, m
    assert m["revoked"] and m["refresh_token_reused"] == 1, m
    assert m["failed"] == 1 and "refresh token was already used" in str(m["failures"]), m
