"""``sagemaker-pipelines-local``: ``serve`` the local AWS endpoint in the foreground (printing the
``export`` lines that point another shell at it), or ``seed`` it with the demo resources. Options:
``--help``; details: docs/local-endpoint.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

DEFAULT_PORT = 5055


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sagemaker-pipelines-local",
        description="A local AWS endpoint: SageMaker Pipelines executed by a local engine, the rest by moto.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the endpoint in the foreground")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = a free port)"
    )
    serve.add_argument(
        "--time-scale", type=float, default=None, help="multiply simulated durations (0.01 = 100x faster)"
    )
    serve.add_argument(
        "--default-step-duration",
        type=float,
        default=None,
        help="simulated seconds per step (before scaling)",
    )
    serve.add_argument("--seed", action="store_true", help="create the demo resources once serving")
    serve.add_argument("--env-file", default=None, help="also write the export lines to this file")
    serve.add_argument("--verbose", "-v", action="store_true", help="log every request")

    seed = commands.add_parser("seed", help="create the demo resources on a running endpoint")
    seed.add_argument(
        "--endpoint-url",
        default=None,
        help=f"endpoint URL (default: $AWS_ENDPOINT_URL, else http://127.0.0.1:{DEFAULT_PORT})",
    )
    seed.add_argument("--region", default="us-east-1")
    return parser


def _export_lines(environ: dict[str, str]) -> list[str]:
    """``unset`` of the variables that would send clients elsewhere (a profile, a session token...), then
    one ``export`` per variable of the endpoint."""
    from .server import ENV_TO_UNSET

    return [f"unset {' '.join(ENV_TO_UNSET)}"] + [
        f"export {name}={shlex.quote(value)}" for name, value in environ.items()
    ]


def _serve(args: argparse.Namespace) -> int:
    from .server import LocalEndpoint

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if not args.verbose:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    if args.time_scale is not None and args.time_scale <= 0:
        print("--time-scale must be > 0", file=sys.stderr)
        return 2
    endpoint = LocalEndpoint(
        args.host, args.port, time_scale=args.time_scale, default_step_duration=args.default_step_duration
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    endpoint.start()
    try:
        if args.seed:
            from .seed import seed

            created = seed(endpoint.url)
            print(f"# seeded: {json.dumps(created)}", flush=True)
        lines = _export_lines(endpoint.environ())
        print(f"# local AWS endpoint serving on {endpoint.url} (Ctrl-C to stop)")
        print("# SageMaker pipeline actions -> local engine; everything else -> moto; controls: /_local/")
        print("\n".join(lines), flush=True)
        if args.env_file:
            with open(args.env_file, "w", encoding="utf-8") as handle:
                handle.write("\n".join(lines) + "\n")
        while not stop.wait(0.5):
            pass
    finally:
        endpoint.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("# local AWS endpoint stopped", flush=True)
    return 0


def _seed(args: argparse.Namespace) -> int:
    from .seed import seed

    url = args.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or f"http://127.0.0.1:{DEFAULT_PORT}"
    created = seed(url, region=args.region)
    print(json.dumps(created, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sagemaker-pipelines-local`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    return _seed(args)


if __name__ == "__main__":
    sys.exit(main())
