"""The mixed stream load of fault 8 and `make soak`, and what they observe of the server process.

Half the streams are ordinary; the other half are cancelled by the caller, fail upstream,
or are dropped by it. Each kind has its own route, all of them on the fake upstream.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

from llm_client import pb
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc
from tests.support.messages import user_msg


def mixed_load_config(fake_url: str) -> dict[str, Any]:
    """A server configuration (for `ServerProcess`) with one route per kind of stream, no retries,
    and a retry budget and breaker that never step in."""
    base = f"{fake_url}/v1"
    routes = {
        name: {"model": f"openai/m:{scenario}", "api_base": base, "key": {"env": "TEST_PROVIDER_KEY"}, "max_retries": 0}
        for name, scenario in (("ok", "echo"), ("slow", "slow"), ("fail", "fail"), ("drop", "drop"))
    }
    return {"routes": routes, "resilience": {"breaker_failures": 1_000_000, "retry_budget_tokens": 1e9}}


async def mixed_stream(stub: pb_grpc.LLMServiceStub, i: int, outcomes: Counter[str]) -> None:
    """Stream number `i` of the mix, counted in `outcomes` as finished, cancelled or failed:<CODE>.

    Even numbers are ordinary; odd ones cycle through cancelled, failing and dropped.
    """
    kind = ("cancel", "fail", "drop")[(i // 2) % 3] if i % 2 else "ok"
    route = {"ok": "ok", "cancel": "slow", "fail": "fail", "drop": "drop"}[kind]
    call = stub.Stream(pb.StreamRequest(model=route, messages=[user_msg(f"stream {i}")]), timeout=60)
    try:
        async for event in call:
            if kind == "cancel":
                call.cancel()
                break
            if event.WhichOneof("event") == "finish":
                outcomes["finished"] += 1
        if kind == "cancel":
            outcomes["cancelled"] += 1
    except grpc.aio.AioRpcError as err:
        outcomes[f"failed:{err.code().name}"] += 1
    except asyncio.CancelledError:
        outcomes["cancelled"] += 1


def rss_mb(pid: int) -> float:
    """The process's resident memory, in MB."""
    match = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    assert match
    return int(match[1]) / 1024


def upstream_sockets(pid: int, upstream_port: int) -> int:
    """The process's established TCP connections to the upstream port."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if fields[3] == "01" and remote_port == upstream_port and fields[9] in inodes:
                count += 1
    return count
