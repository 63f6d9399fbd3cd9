"""Run the fake upstream: `python -m fake_upstream --port 8090`."""

from __future__ import annotations

import argparse
import asyncio

from fake_upstream.server import FakeUpstream


async def _serve(host: str, port: int) -> None:
    fake = FakeUpstream(host, port)
    await fake.start()
    print(f"fake upstream listening on {fake.base_url}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    """Parse flags and serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    try:
        asyncio.run(_serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
