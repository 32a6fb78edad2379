"""``python -m bench [--quick] [--only edge,checkout,browse] [--profile] [--set NAME=VALUE] [--no-baseline]``

Starts its own cluster on free loopback ports, runs the scenarios, prints the
table, writes bench/results/bench-<time>.json (and latest.json) and, after a
full run, the figures in bench/BASELINE.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from bench import report
from bench.runner import Budget, run

SCENARIOS = ("edge", "checkout", "browse")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmarks of the whole system on this machine (bench/BASELINE.md)."
    )
    parser.add_argument("--quick", action="store_true", help="short runs, for trying the benchmark out")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the shop processes during each load (figures are then distorted)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for every shop process (experiments; the baseline is then left alone)",
    )
    parser.add_argument(
        "--unsafe-fast-storage",
        action="store_true",
        help="the stores without flushes, as the test suite runs them: to measure what durability costs "
        "(the baseline is then left alone; `make bench` never sets it)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="do not touch bench/BASELINE.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bench: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    only = {name.strip() for name in args.only.split(",") if name.strip()} or None
    if only and not only <= set(SCENARIOS):
        parser.error(f"--only takes {', '.join(SCENARIOS)}")
    budget = Budget().quick() if args.quick else Budget()
    extra_env = dict(item.split("=", 1) for item in args.set)
    results = asyncio.run(
        run(budget, only, profiling=args.profile, extra_env=extra_env, unsafe_fast_storage=args.unsafe_fast_storage)
    )
    results["quick"] = args.quick
    table = report.rows(results)
    print()
    print(report.machine_line(results))
    print()
    print(report.table_text(table))
    path = report.write_json(results)
    print(f"\nresults: {path}")
    for label, processes in (results.get("profiles") or {}).items():
        for name, summary in processes.items():
            if summary.get("samples"):
                print(f"\nprofile {label} / {name} ({summary['samples']} samples), self %:")
                for frame, share in summary["self_pct"]:
                    print(f"  {share:5.1f}  {frame}")
                print("  inclusive %:")
                for frame, share in summary["inclusive_pct"]:
                    print(f"  {share:5.1f}  {frame}")
    if not (args.no_baseline or args.quick or only or args.profile or extra_env or args.unsafe_fast_storage):
        report.write_baseline(results, table)
        print(f"baseline: {report.BASELINE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
