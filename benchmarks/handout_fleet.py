"""handout_fleet: GitHub Actions secrets as the only store — one serialized rotator and 1,000 jobs on its handout.

A loopback fake of GitHub's REST API (testing/fake_github.py, which decrypts every write) and the strict token server
(refresh tokens single-use, no reuse grace). Time is simulated: a "tick" is one job's start; every ``every`` ticks
the rotator runs ``keepalive --store github://octo/app/CODEX_AUTH_JSON --handout github://octo/app/CODEX_ACCESS_JSON``
on a fresh runner home, as GitHub passes the secrets in (the stored full login, aged by the time since its last
rotation, so that it is due). Jobs start in waves of ``wave`` at once (threads) while the rotator may be running;
a job is handed the handout GitHub holds when it starts — or, with probability ``stale``, the one before (a job
queued before the last rotation). Each job restores the handout into a fresh CODEX_HOME and then refreshes "as
Codex would" (it POSTs the refresh token its auth.json holds, as Codex does after a 401 or near expiry).

Checks: refresh_token_reused 0; the login never revoked; rotations = the rotator's successful runs; every rotation
saved (the stored full login is the server's live one after every run); no job ever held a real refresh token;
every job restored a copy whose access token was valid; no job failed except with the documented access-only
refusal.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from benchmarks.report import Outcome, Row
from codex_ci.authfile import ACCESS_ONLY_TOKEN
from codex_ci.errors import AccessOnlyError
from codex_ci.home import Home
from codex_ci.policy import Policy
from codex_ci.refresh import TokenClient
from codex_ci.stores import open_store
from testing.fake_github import WRITE_TOKEN, FakeGitHub
from testing.fake_github import Secret as StoredSecret
from testing.tokenserver import CLIENT_ID, TokenServer, make_login, rfc3339

REPO = "octo/app"
SCOPE = f"repos/{REPO}/actions"
FULL, HANDOUT = "CODEX_AUTH_JSON", "CODEX_ACCESS_JSON"


def _aged(raw: bytes, seconds: float) -> str:
    """The login as GitHub passes it in, ``seconds`` after its last rotation (the simulated clock)."""
    data = json.loads(raw)
    data["last_refresh"] = rfc3339(time.time() - seconds)
    return json.dumps(data)


class Fleet:
    def __init__(self, gh: FakeGitHub, server: TokenServer, work: Path) -> None:
        self.gh, self.server, self.work = gh, server, work
        self.env = {"GITHUB_API_URL": gh.url, "CODEX_CI_GITHUB_TOKEN": WRITE_TOKEN}
        self.lock = threading.Lock()
        self.handouts: list[bytes] = []  # every handout the rotator wrote, in order
        self.counts: Counter[str] = Counter()
        self.failures: list[str] = []
        self.rotations = 0
        self.runs = 0
        self.unsaved = 0

    def rotate(self, index: int) -> None:
        """One keepalive run of the serialized rotator (on a fresh runner home)."""
        from codex_ci import distributed, sync

        full = self.gh.value(SCOPE, FULL)
        assert full is not None
        env = self.env | {FULL: _aged(full, 3600), HANDOUT: (self.gh.value(SCOPE, HANDOUT) or b"").decode()}
        store = open_store(f"github://{REPO}/{FULL}", env)
        handout = open_store(f"github://{REPO}/{HANDOUT}", env)
        policy = Policy(timedelta(hours=1), timedelta(days=8), force=True)
        result = distributed.distributed_refresh(
            Home(self.work / f"rotator-{index}"), store, policy, lock_timeout=30, lease_ttl=timedelta(minutes=2),
            lease_wait=30, client=TokenClient(read_timeout=10, attempts=1), rotator=True, handout=handout)
        written = sync.write_handout(result.auth, handout, store)
        with self.lock:
            self.runs += 1
            self.rotations += result.refreshed
            if written.action in ("written", "created"):
                value = self.gh.value(SCOPE, HANDOUT)
                assert value is not None
                self.handouts.append(value)
            stored = self.gh.value(SCOPE, FULL)
            if stored is None or json.loads(stored)["tokens"]["refresh_token"] != self.server.current_refresh_token:
                self.unsaved += 1

    def job(self, index: int, handout: bytes) -> None:
        """One job: restore the handout it was given, then refresh as Codex would."""
        from codex_ci import sync

        home = self.work / f"job-{index}"
        store = open_store(f"github://{REPO}/{HANDOUT}", {HANDOUT: handout.decode()})
        try:
            restored = sync.restore(Home(home), store, lock_timeout=30, min_ttl=timedelta(minutes=5))
        except AccessOnlyError:
            with self.lock:
                self.counts["refused-expiring"] += 1
            return
        except Exception as exc:  # noqa: BLE001 - every other failure is a failed check
            with self.lock:
                self.failures.append(f"job {index}: {type(exc).__name__}")
            return
        data = json.loads((home / "auth.json").read_text())
        token = data["tokens"]["refresh_token"]
        body = {"client_id": CLIENT_ID, "grant_type": "refresh_token", "refresh_token": token}
        status = httpx.post(self.server.url, json=body, timeout=30).status_code
        expires = restored.auth.identity.access_expires
        with self.lock:
            self.counts["finished"] += 1
            self.counts["real-refresh-token-seen"] += token != ACCESS_ONLY_TOKEN
            self.counts["valid-access-token"] += expires is not None and expires.timestamp() > time.time()
            self.counts[f"codex-refresh-http-{status}"] += 1


def simulate(jobs: int = 1000, every: int = 50, wave: int = 8, stale: float = 0.1, seed: int = 20261127
             ) -> dict[str, Any]:
    rng = random.Random(seed)  # noqa: S311 (a simulation, not a secret)
    with tempfile.TemporaryDirectory(prefix="handout-fleet-") as tmp, FakeGitHub(repos=(REPO,)) as gh, \
            TokenServer(initial_refresh_token="CANARY-rt-0", access_ttl=10 * 86400, grace=0.0) as server:
        before = os.environ.get("CODEX_REFRESH_TOKEN_URL_OVERRIDE")
        os.environ["CODEX_REFRESH_TOKEN_URL_OVERRIDE"] = server.url
        try:
            return _simulate(gh, server, Path(tmp), jobs, every, wave, stale, rng)
        finally:
            if before is None:
                del os.environ["CODEX_REFRESH_TOKEN_URL_OVERRIDE"]
            else:
                os.environ["CODEX_REFRESH_TOKEN_URL_OVERRIDE"] = before


def _simulate(gh: FakeGitHub, server: TokenServer, work: Path, jobs: int, every: int, wave: int, stale: float,
          rng: random.Random) -> dict[str, Any]:
    first = make_login(access_exp=int(time.time()) + 3600, refresh_token="CANARY-rt-0")
    gh.secrets[(SCOPE, FULL)] = StoredSecret(json.dumps(first).encode())  # the first upload
    fleet = Fleet(gh, server, work)
    fleet.rotate(0)  # the first run writes the first handout
    started = time.monotonic()
    rotator: threading.Thread | None = None
    for start in range(0, jobs, wave):
        if start and start % every < wave:  # the scheduled keepalive, concurrent with this wave of jobs
            if rotator is not None:
                rotator.join()
            rotator = threading.Thread(target=fleet.rotate, args=(start,))
            rotator.start()
        with fleet.lock:
            given = [fleet.handouts[-2] if len(fleet.handouts) > 1 and rng.random() < stale
                     else fleet.handouts[-1] for _ in range(min(wave, jobs - start))]
        threads = [threading.Thread(target=fleet.job, args=(start + i, h)) for i, h in enumerate(given)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if rotator is not None:
        rotator.join()
    elapsed = time.monotonic() - started
    return {
        "jobs": jobs, "rotator_every": every, "wave": wave, "stale_share": stale, "seconds": round(elapsed, 1),
        "rotations": fleet.rotations, "rotator_runs": fleet.runs, "successes": server.successes,
        "refresh_token_reused": server.reused, "revoked": server.revoked, "unsaved_rotations": fleet.unsaved,
        "failures": fleet.failures, **dict(fleet.counts),
    }


def run() -> Outcome:
    m = simulate()
    checks = {
        "refresh_token_reused is 0": m["refresh_token_reused"] == 0,
        "the login is never revoked": not m["revoked"],
        "every rotation was the rotator's": m["successes"] == m["rotations"],
        "every rotator run rotated (aged an hour)": m["rotations"] == m["rotator_runs"],
        "no rotation left unsaved": m["unsaved_rotations"] == 0,
        "no job saw a real refresh token": m.get("real-refresh-token-seen", 0) == 0,
        "every job that ran had a valid access token": m.get("valid-access-token", 0) == m.get("finished", 0),
        "no job failed otherwise": not m["failures"] and m.get("finished", 0) + m.get("refused-expiring", 0)
        == m["jobs"],
    }
    rows = [Row(name, "yes" if ok else "NO", "yes", ok) for name, ok in checks.items()]
    rows += [Row("jobs", str(m["jobs"])), Row("rotations (rotator runs)", f"{m['rotations']} ({m['rotator_runs']})"),
             Row("Codex-style refreshes refused (placeholder)", str(m.get("codex-refresh-http-401", 0))),
             Row("wall time", f"{m['seconds']} s")]
    how = (f"{m['jobs']} jobs in waves of {m['wave']} threads, a keepalive every {m['rotator_every']} jobs running "
           f"concurrently with a wave, {int(m['stale_share'] * 100)}% of jobs handed the previous handout (queued "
           "before the last rotation); the fake GitHub API decrypts every write; the strict token server has no "
           "reuse grace. Each job restores the handout and then POSTs the refresh token its auth.json holds.")
    return Outcome("handout_fleet", how, rows, m, passed=all(checks.values()))


if __name__ == "__main__":
    print(json.dumps(simulate(jobs=int(os.environ.get("JOBS", "200"))), indent=2))
