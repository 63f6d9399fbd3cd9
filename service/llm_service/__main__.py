"""The process entry point: `python -m llm_service --config FILE [--listen HOST:PORT]`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import replace

from llm_service import logs
from llm_service.config import DEFAULT_CONFIG_PATH, MAX_WORKERS, Config, ConfigError, load_config
from llm_service.tracing import TracingError, TracingSettings


def main(argv: list[str] | None = None) -> int:
    """Parse flags, load the configuration, serve until signalled."""
    parser = argparse.ArgumentParser(prog="llm_service", description="gRPC gateway to LLM providers")
    parser.add_argument(
        "--config",
        default=os.environ.get("LLM_SERVICE_CONFIG", str(DEFAULT_CONFIG_PATH)),
        help="routes YAML file (env LLM_SERVICE_CONFIG; default: the bundled config)",
    )
    parser.add_argument(
        "--listen",
        default=os.environ.get("LLM_SERVICE_LISTEN"),
        help="host:port to serve on (env LLM_SERVICE_LISTEN; default: the config's server.listen)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.environ.get("LLM_SERVICE_WORKERS") or None,  # argparse converts (and rejects) it as it does the flag
        help="worker processes sharing the port (env LLM_SERVICE_WORKERS; default: the config's server.workers)",
    )
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)  # set by the supervisor
    parser.add_argument("--check-config", action="store_true", help="validate the config file and exit")
    parser.add_argument(
        "--hash-token", action="store_true", help="read a client token on standard input, print the sha256 a tokens file stores"
    )
    parser.add_argument(
        "--quota-status",
        nargs="?",
        const="",
        default=None,
        metavar="CALLER",
        help="print the live quota counters in Redis (of CALLER, or of every caller) as JSON lines, and exit",
    )
    args = parser.parse_args(argv)
    if args.hash_token:
        from llm_service.auth import hash_token

        token = sys.stdin.readline().strip()
        if not token:
            print("llm_service: no token on standard input", file=sys.stderr)
            return 2
        print(hash_token(token))
        return 0
    try:
        config = load_config(args.config, os.environ)
    except ConfigError as exc:
        print(f"llm_service: invalid configuration: {exc}", file=sys.stderr)
        return 2
    try:
        tracing = TracingSettings.from_environ(os.environ)
    except TracingError as exc:
        print(f"llm_service: invalid tracing environment: {exc}", file=sys.stderr)
        return 2
    if args.quota_status is not None:
        from llm_service.quotas.report import print_status

        return print_status(config, args.quota_status)
    if args.check_config:
        print(f"{args.config}: OK ({len(config.routes)} routes)")
        return 0
    if args.listen:
        config = replace(config, server=replace(config.server, listen=args.listen))
    if args.workers is not None:
        if not 1 <= args.workers <= MAX_WORKERS:
            print(f"llm_service: --workers must be from 1 to {MAX_WORKERS}, not {args.workers}", file=sys.stderr)
            return 2
        config = replace(config, server=replace(config.server, workers=args.workers))
    if args.worker is not None:
        return _work(config, args.worker, tracing)
    logs.configure(config.server.log_level)
    if config.server.workers > 1:
        from llm_service.workers import Supervisor, WorkersError, check

        try:
            check(config)
        except WorkersError as exc:
            print(f"llm_service: invalid configuration: {exc}", file=sys.stderr)
            return 2
        from llm_service.metrics import CannotListen

        try:
            return Supervisor(config, args.config).run()
        except CannotListen as exc:
            print(f"llm_service: {exc}", file=sys.stderr)
            return 1
    return _serve(config, reuse_port=False, tracing=tracing)


def _work(config: Config, index: int, tracing: TracingSettings | None) -> int:
    """One of the supervisor's workers: the whole server on the shared port, no /metrics, no fake upstream."""
    from llm_service.workers import EXIT_CANNOT_LISTEN, die_with_supervisor

    die_with_supervisor()
    logs.configure(config.server.log_level, fields={"worker": index})
    server = replace(config.server, metrics_listen="", workers=1)
    code = _serve(replace(config, server=server, fake_upstream=""), reuse_port=True, tracing=tracing)
    return EXIT_CANNOT_LISTEN if code == 1 else code


def _serve(config: Config, reuse_port: bool, tracing: TracingSettings | None) -> int:
    from llm_service.metrics import CannotListen
    from llm_service.server import serve_until_signalled

    try:
        asyncio.run(serve_until_signalled(config, reuse_port=reuse_port, tracing=tracing))
    except CannotListen as exc:
        print(f"llm_service: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
