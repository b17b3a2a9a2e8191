"""``python -m bench [--quick] [--out PATH]``: run the benchmark, print the table, write the JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.report import DEFAULT_OUT, parse_env, run_bench


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny workload (checks the harness, not the pipeline)")
    parser.add_argument("--out", type=Path, default=None, help=f"JSON result file (default {DEFAULT_OUT})")
    parser.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE",
        help="extra environment for the pipeline workers (repeatable), e.g. DERIVE_INTERVALS=false",
    )  # fmt: skip
    args = parser.parse_args()
    run_bench(quick=args.quick, out=args.out, worker_env=parse_env(args.env))


if __name__ == "__main__":
    main()
