"""`python -m bench store verify [DIR] [--repair]` and `python -m bench store compact
[DIR]`: find damaged runs (each named with its path and what is wrong), move them
aside, or compact finished runs for fast loading."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .compact import compact
from .verify import repair, verify


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench store",
                                 description="Check or compact a results store.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify", help="list every damaged run (exit 1 if any)")
    v.add_argument("results_dir", nargs="?", default="results")
    v.add_argument("--repair", action="store_true",
                   help="move damaged runs into RESULTS_DIR/quarantine/<time>/ (so a re-run "
                        "of the grid trains those configs again) and remove temporary files")
    c = sub.add_parser("compact", help="copy finished runs' rows into one Parquet part "
                                       "(index/) so that load() reads them in one go")
    c.add_argument("results_dir", nargs="?", default="results")
    a = ap.parse_args(argv)
    root = Path(a.results_dir)
    if not root.is_dir():
        print(f"error: results_dir {root} is not a folder", file=sys.stderr)
        return 2
    if a.cmd == "compact":
        part, n = compact(root)
        print(f"compacted {n} finished runs into {part}" if part else
              "nothing to compact: every finished run is in a part already")
        return 0
    verdict = verify(root)
    for path, problems in verdict.damaged:
        for what in problems:
            print(f"damaged: {path}: {what}")
    for p in verdict.leftovers:
        print(f"leftover: {p} (a temporary file of a writer that was stopped)")
    print(f"{verdict.runs} runs checked under {root}: {len(verdict.damaged)} damaged, "
          f"{len(verdict.leftovers)} temporary files")
    if verdict.no_model:
        print(f"{verdict.no_model} finished runs have no model.pt here (model files are not "
              f"committed; their rows are checked and whole)")
    if a.repair:
        for src, dest in repair(root, verdict):
            print(f"moved aside: {src} -> {dest}")
        return 0
    return 1 if verdict.damaged else 0
