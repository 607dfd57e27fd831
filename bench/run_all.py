"""Run every benchmark of ``bench/`` one after the other and print all their tables (``make bench``).

Each script runs in its own process (so one's memory and imports do not colour the next one's figures)
with this interpreter; its output is streamed as it comes. A script missing from the tree is reported
and skipped; a script that fails is reported and the others still run (exit status 1 at the end).
No thresholds: the figures are for bench/README.md.

    .venv/bin/python bench/run_all.py [--quick]

``--quick`` shrinks every benchmark (smaller N) for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _common import machine

BENCH = Path(__file__).resolve().parent

# (script, arguments of a full run, arguments of a quick run)
# Full runs use each script's defaults (watching: N = 200 and 1000, five runs each, 10 simulated minutes;
# callbacks: 1 (5 repeats) and 100 concurrent; 300 starts under a cap of 20).
SCRIPTS: list[tuple[str, list[str], list[str]]] = [
    ("starts_under_cap.py", [], ["--starts", "60", "--cap", "10", "--workers", "20"]),
    ("local_endpoint_overhead.py", [], ["--executions", "50", "--modes", "describe", "list"]),
    ("callback_latency.py", [], ["--concurrency", "1", "10", "--repeats", "2", "--cap", "120"]),
    ("watch_executions.py", [], ["--sizes", "30", "--window-minutes", "4"]),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args(argv)
    print("# Benchmarks")
    print("machine:", json.dumps(machine()), flush=True)
    failed: list[str] = []
    for script, full, quick in SCRIPTS:
        path = BENCH / script
        print(f"\n## {script}\n", flush=True)
        if not path.exists():
            print(f"(missing: {path} is not in the tree; skipped)", flush=True)
            failed.append(f"{script} (missing)")
            continue
        command = [sys.executable, str(path), *(quick if args.quick else full)]
        print("$ " + " ".join(["python", f"bench/{script}", *command[2:]]), flush=True)
        started = time.monotonic()
        result = subprocess.run(command, cwd=BENCH.parent, check=False)
        print(f"\n({script}: exit {result.returncode}, {time.monotonic() - started:.0f} s)", flush=True)
        if result.returncode != 0:
            failed.append(script)
    if failed:
        print(f"\nnot every benchmark ran: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
