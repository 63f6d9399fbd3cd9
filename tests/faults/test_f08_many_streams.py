"""Fault 8: 10,000 streams, half of them cancelled by the caller or failing upstream.

The server's memory (RSS) stays within a stated bound, its upstream sockets return to
their baseline, and its connection pool is not exhausted: calls afterwards all succeed.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest

from fake_upstream import FakeUpstream
from llm_client import pb
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc
from tests.conftest import ServerProcess, user_msg

STREAMS = int(os.environ.get("F08_STREAMS", "10000"))
WARMUP = 1_000
CONCURRENCY = 64
RSS_GROWTH_BOUND_MB = 64  # after warm-up, 9,000 more streams may grow the server by at most this
SOCKET_SLACK = 4


def rss_mb(pid: int) -> float:
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


async def _one(stub: pb_grpc.LLMServiceStub, i: int, outcomes: Counter[str]) -> None:
    kind = ("cancel", "fail", "drop")[(i // 2) % 3] if i % 2 else "ok"  # half of them ordinary
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


async def _load(target: str, indices: range) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    queue = iter(indices)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.LLMServiceStub(channel)

        async def worker() -> None:
            for i in queue:
                await _one(stub, i, outcomes)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return outcomes


@pytest.mark.timeout(600)  # about 20 s on the fast path here (it was two minutes through LiteLLM's per-chunk decoding)
def test_f08_ten_thousand_streams_half_cancelled_or_failing(fake: FakeUpstream, tmp_path: Path) -> None:
    base = f"{fake.base_url}/v1"
    routes = {
        name: {"model": f"openai/m:{scenario}", "api_base": base, "key": {"env": "TEST_PROVIDER_KEY"}, "max_retries": 0}
        for name, scenario in (("ok", "echo"), ("slow", "slow"), ("fail", "fail"), ("drop", "drop"))
    }
    server = ServerProcess(
        {"routes": routes, "resilience": {"breaker_failures": 1_000_000, "retry_budget_tokens": 1e9}}, tmp_path
    )
    upstream_port = int(fake.base_url.rsplit(":", 1)[1])
    try:
        started = time.monotonic()
        sockets_base = upstream_sockets(server.pid, upstream_port)
        warm = asyncio.run(_load(server.target, range(WARMUP)))
        time.sleep(1.0)
        rss_base, sockets_busy = rss_mb(server.pid), upstream_sockets(server.pid, upstream_port)
        rest = asyncio.run(_load(server.target, range(WARMUP, STREAMS)))
        time.sleep(4.0)  # twice the keep-alive timeout
        rss_end, sockets_end = rss_mb(server.pid), upstream_sockets(server.pid, upstream_port)
        after = asyncio.run(_load(server.target, range(0, 400, 2)))  # even: ordinary streams only
        elapsed = time.monotonic() - started
    finally:
        output = server.stop()
    outcomes = warm + rest
    print(
        f"\n{STREAMS} streams in {elapsed:.0f} s: {dict(outcomes)}; RSS {rss_base:.0f} MB after warm-up, "
        f"{rss_end:.0f} MB at the end (+{rss_end - rss_base:.1f} MB, bound {RSS_GROWTH_BOUND_MB} MB); "
        f"upstream sockets {sockets_base} before, {sockets_busy} after warm-up, {sockets_end} once idle"
    )
    assert sum(outcomes.values()) == STREAMS
    assert outcomes["finished"] == STREAMS // 2 and outcomes["cancelled"] == len(range(1, STREAMS, 6))
    assert set(outcomes) <= {"finished", "cancelled", "failed:UNAVAILABLE"}, "failures are UNAVAILABLE, nothing else"
    assert rss_end - rss_base < RSS_GROWTH_BOUND_MB
    assert sockets_end <= sockets_base + SOCKET_SLACK, "upstream sockets returned to their baseline"
    assert after == Counter({"finished": 200}), f"no pool exhaustion: {after}"
    assert "Traceback" not in output
