"""The process entry point: `python -m llm_service --config FILE [--listen HOST:PORT]`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import replace

from llm_service import logs
from llm_service.config import DEFAULT_CONFIG_PATH, ConfigError, load_config


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
    parser.add_argument("--check-config", action="store_true", help="validate the config file and exit")
    parser.add_argument(
        "--hash-token", action="store_true", help="read a client token on standard input, print the sha256 a tokens file stores"
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
    if args.check_config:
        print(f"{args.config}: OK ({len(config.routes)} routes)")
        return 0
    if args.listen:
        config = replace(config, server=replace(config.server, listen=args.listen))
    logs.configure(config.server.log_level)
    asyncio.run(_serve(config))
    return 0


async def _serve(config: object) -> None:
    from llm_service.server import serve_until_signalled

    await serve_until_signalled(config)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
