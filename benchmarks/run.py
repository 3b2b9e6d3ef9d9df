"""Run benchmarks by name (all when none is named), save their results and print a summary table.

Usage: ``python -m benchmarks.run [NAME ...]`` with names from BENCHMARKS below. Exits 1 if a correctness check
failed (speed targets that are missed are reported, not failed).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from benchmarks import action_setup, cold_start, fleet, fleet_sim, handout_fleet, herd, stores
from benchmarks.common import RESULTS, machine_info, now_iso
from benchmarks.report import MARKDOWN, Outcome, render_table, save

BENCHMARKS: dict[str, Callable[[], Outcome]] = {
    "cold_start": cold_start.run, "herd": herd.run, "stores": stores.run, "fleet": fleet.run,
    "action_setup": action_setup.run, "fleet_sim": fleet_sim.run, "handout_fleet": handout_fleet.run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of: {', '.join(BENCHMARKS)} (default: all)")
    names = parser.parse_args(argv).names or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    outcomes = []
    for name in dict.fromkeys(names):
        machine, date = machine_info(), now_iso()
        outcome = BENCHMARKS[name]()
        outcome.machine, outcome.date = machine, date
        save(outcome)
        outcomes.append(outcome)
    first = outcomes[0].machine
    print(f"\n{first['cpu_model']}, {first['cpus_usable']}/{first['cpu_count']} CPUs, Python {first['python']}, "
          f"{first['platform']}, {outcomes[0].date}")
    print(render_table(outcomes))
    print(f"\nwrote {RESULTS.relative_to(MARKDOWN.parent)}/ and {MARKDOWN.name}")
    failed = [o.name for o in outcomes if not o.passed]
    if failed:
        print(f"correctness check failed in: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
