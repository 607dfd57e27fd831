"""``python -m stack``: start, stop and use the stack (``make stack`` / ``make stack-down``).

``up``      start every service and wait until all are healthy; prints the UI URL and login
``down``    stop exactly the processes ``up`` started (``--remove-data``: also drop the database)
``status``  each service and whether it runs
``env``     ``export`` lines of the Airflow environment (``eval "$(python -m stack env)"``)
``airflow`` run the Airflow CLI against the stack: ``python -m stack airflow dags list``

The state folder is ``.stack/`` unless ``--state-dir`` (or ``STACK_DIR``) says otherwise.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence

from .core import BIN, DEFAULT_STATE_DIR, Stack
from .errors import StackError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--state-dir", default=os.environ.get("STACK_DIR") or str(DEFAULT_STATE_DIR))
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the stack and wait until it is healthy")
    up.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for health (default 300)")
    up.add_argument("--no-install", action="store_true", help="never apt-get install PostgreSQL/Redis")
    down = commands.add_parser("down", help="stop the stack")
    down.add_argument("--remove-data", action="store_true", help="also delete the database and configuration")
    commands.add_parser("status", help="which services run")
    commands.add_parser("env", help="print the Airflow environment as export lines")
    airflow = commands.add_parser("airflow", help="run the Airflow CLI against the stack")
    airflow.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "up":
            Stack(args.state_dir, install=not args.no_install).up(timeout=args.timeout)
            return 0
        stack = Stack(args.state_dir)
        if args.command == "down":
            stopped = stack.down(remove_data=args.remove_data)
            print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
            return 0
        if args.command == "status":
            running = stack.running()
            if not running:
                print(f"no stack in {stack.state_dir}")
                return 1
            for name, alive in running.items():
                print(f"{name:<16} {'running' if alive else 'stopped'}  pid {stack.records[name].pid}")
            return 0 if all(running.values()) else 1
        if not stack.airflow_env:
            raise StackError(f"the stack in {stack.state_dir} was never started (make stack)")
        if args.command == "env":
            for name, value in stack.airflow_env.items():
                print(f"export {name}={shlex.quote(value)}")
            print(f'export PATH={shlex.quote(str(BIN))}:"$PATH"')
            return 0
        return subprocess.call([str(BIN / "airflow"), *args.args], env=stack.env())
    except StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
