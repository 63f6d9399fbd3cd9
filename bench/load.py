"""The benchmark's load generator: one process per measured path, all cells in turn, a JSON line per run.

Paths:
  http      an aiohttp client parsing the upstream's JSON and SSE itself (the HTTP floor), in-process
  litellm   litellm.acompletion, in-process
  grpc      a gRPC server (the service on either path, or the bare ceiling) at --target, whose
            CPU is read from /proc/<--pid> around each run

For in-process paths the measured CPU is this process's; bench/run.py pins this process
to the measured core then. For gRPC paths this process shares the other core with the
upstream.

    python -m bench.load --path grpc --target 127.0.0.1:8302 --pid 1234 --upstream http://127.0.0.1:8300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.upstream import CHUNKS, EMBED_INPUTS

MODES = ("unary", "burst", "paced")  # and "embed": a batch of EMBED_INPUTS short texts (not the ceiling's)
EMBED_TEXTS = [f"a short text to embed, number {i}" for i in range(EMBED_INPUTS)]
Call = Callable[[str], Awaitable[float]]  # mode -> time to first token (s); raises on failure
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) of pid, or of this process."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int | None) -> float:
    status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def run_cell(call: Call, mode: str, concurrency: int, seconds: float, pid: int | None) -> dict[str, Any]:
    """Concurrency workers calling until the time is up (each makes at least one call)."""
    latencies: list[float] = []
    ttfts: list[float] = []
    failures = 0
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal failures
        while True:
            started = time.monotonic()
            try:
                ttft = await call(mode)
            except Exception as exc:  # counted and shown; a benchmark run with failures is not trusted
                failures += 1
                if failures <= 3:
                    print(f"call failed: {type(exc).__name__}: {exc}"[:300], file=sys.stderr)
                ttft = 0.0
            else:
                latencies.append(time.monotonic() - started)
                ttfts.append(ttft)
            if time.monotonic() >= deadline:
                return

    cpu_before, wall_before = cpu_s(pid), time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.monotonic() - wall_before, cpu_s(pid) - cpu_before
    calls = len(latencies)
    return {
        "mode": mode,
        "concurrency": concurrency,
        "calls": calls,
        "failures": failures,
        "wall_s": wall,
        "calls_per_s": calls / wall,
        "p50_ms": percentile(latencies, 0.5) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "ttft_p50_ms": percentile(ttfts, 0.5) * 1e3,
        "cpu_us_per_call": cpu / max(calls, 1) * 1e6,
        "cpu_us_per_chunk": cpu / max(calls * CHUNKS, 1) * 1e6 if mode in ("burst", "paced") else None,
        "rss_mb": rss_mb(pid),
    }


def _model(mode: str) -> str:
    return "bench-paced" if mode == "paced" else "bench-burst"


def http_path(upstream: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import aiohttp

    # Idle connections are dropped before uvicorn's 5 s keep-alive closes them (LiteLLM Proxy), so a
    # call never lands on a connection the server is closing; the floor is unaffected.
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000, keepalive_timeout=3))
    url = f"{upstream}/v1/chat/completions"
    # The upstream ignores the key; LiteLLM Proxy (make bench-peer) checks its master key.
    headers = {"Authorization": f"Bearer {os.environ.get('BENCH_BEARER', 'bench')}", "Content-Type": "application/json"}
    # A peer gateway may need headers of its own (the Portkey gateway: which provider, which host).
    headers.update(json.loads(os.environ.get("BENCH_HEADERS", "{}")))

    async def call(mode: str) -> float:
        started = time.monotonic()
        if mode == "embed":
            body_embed = {"model": "text-embedding-3-small", "input": EMBED_TEXTS}
            async with session.post(f"{upstream}/v1/embeddings", data=json.dumps(body_embed), headers=headers) as resp:
                assert len(json.loads(await resp.read())["data"]) == EMBED_INPUTS
                return time.monotonic() - started
        body = {"model": _model(mode), "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 256}
        if mode == "unary":
            async with session.post(url, data=json.dumps(body), headers=headers) as resp:
                answer = json.loads(await resp.read())
                assert answer["choices"][0]["message"]["content"]
                return time.monotonic() - started
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        first = 0.0
        async with session.post(url, data=json.dumps(body), headers=headers) as resp:
            async for line in resp.content:
                if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
                    continue
                chunk = json.loads(line[5:])
                if not first and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    first = time.monotonic() - started
        assert first, f"the stream brought no text (HTTP {resp.status})"  # a failed stream is a failure, not a fast call
        return first

    return call, session.close


def litellm_path(upstream: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    from llm_service.core import litellm_setup

    litellm_setup.install()
    import litellm

    async def call(mode: str) -> float:
        started = time.monotonic()
        if mode == "embed":
            model, base = "openai/text-embedding-3-small", f"{upstream}/v1"
            embedded = await litellm.aembedding(model=model, input=EMBED_TEXTS, api_base=base, api_key="bench", timeout=600.0)
            assert len(embedded.data) == EMBED_INPUTS
            return time.monotonic() - started
        kwargs: dict[str, Any] = {
            "model": f"openai/{_model(mode)}",
            "messages": [{"role": "user", "content": "Say hello."}],
            "api_base": f"{upstream}/v1",
            "api_key": "bench",
            "max_tokens": 256,
            "timeout": 600.0,
        }
        if mode == "unary":
            answer = await litellm.acompletion(**kwargs)
            assert answer.choices[0].message.content
            return time.monotonic() - started
        first = 0.0
        response = await litellm.acompletion(**kwargs, stream=True, stream_options={"include_usage": True})
        async for chunk in response:
            if not first and chunk.choices and chunk.choices[0].delta.content:
                first = time.monotonic() - started
        return first

    async def close() -> None:
        return None

    return call, close


def grpc_path(target: str, route_prefix: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import grpc

    from llm_client._proto.llm.v1 import llm_service_pb2 as pb
    from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc

    channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(4)]
    stubs = [pb_grpc.LLMServiceStub(ch) for ch in channels]
    messages = [pb.Message(role=pb.ROLE_USER, parts=[pb.ContentPart(text="Say hello.")])]
    turn = iter(range(10**12))

    async def call(mode: str) -> float:
        stub = stubs[next(turn) % len(stubs)]
        started = time.monotonic()
        if mode == "embed":
            inputs = [pb.EmbedInput(text=t) for t in EMBED_TEXTS]
            embedded = await stub.Embed(pb.EmbedRequest(model=route_prefix + "-embed", inputs=inputs), timeout=600)
            assert len(embedded.embeddings) == EMBED_INPUTS
            return time.monotonic() - started
        model = route_prefix + ("-paced" if mode == "paced" else "-burst")
        if mode == "unary":
            answer = await stub.Complete(pb.CompleteRequest(model=model, messages=messages), timeout=600)
            assert answer.text
            return time.monotonic() - started
        first = 0.0
        finished = False
        async for event in stub.Stream(pb.StreamRequest(model=model, messages=messages), timeout=600):
            if not first and event.HasField("text_delta"):
                first = time.monotonic() - started
            finished = finished or event.HasField("finish")
        assert finished
        return first

    async def close() -> None:
        for ch in channels:
            await ch.close()

    return call, close


async def hold(target: str, streams: int) -> None:
    """Open streams to the slow route, report, wait for a line on stdin, cancel them all, report."""
    import grpc

    from llm_client._proto.llm.v1 import llm_service_pb2 as pb
    from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc

    channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(10)]
    messages = [pb.Message(role=pb.ROLE_USER, parts=[pb.ContentPart(text="Say hello.")])]
    calls = [
        pb_grpc.LLMServiceStub(channels[i % len(channels)]).Stream(pb.StreamRequest(model="bench-slow", messages=messages))
        for i in range(streams)
    ]
    await asyncio.gather(*(c.read() for c in calls))  # every stream has its first event: all are open
    print(json.dumps({"opened": streams}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    for c in calls:
        c.cancel()
    for ch in channels:
        await ch.close()
    print(json.dumps({"closed": streams}), flush=True)


async def main_async(args: argparse.Namespace) -> None:
    if args.hold:
        await hold(args.target, args.hold)
        return
    if args.path == "http":
        call, close = http_path(args.upstream)
    elif args.path == "litellm":
        call, close = litellm_path(args.upstream)
    else:
        call, close = grpc_path(args.target, args.route_prefix)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    for mode in args.modes.split(","):
        await run_cell(call, mode, 8, 0.5, args.pid)  # warm-up: connections, caches, first-call imports
        for concurrency in concurrencies:
            for run in range(args.runs):
                result = await run_cell(call, mode, concurrency, args.seconds, args.pid)
                print(json.dumps({"path": args.label, "run": run, **result}), flush=True)
    await close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", choices=("http", "litellm", "grpc"), default="grpc")
    parser.add_argument("--label", default="")
    parser.add_argument("--target", default="")
    parser.add_argument("--route-prefix", default="bench")
    parser.add_argument("--pid", type=int, default=None)
    parser.add_argument("--upstream", default="")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--concurrency", default="1,32,256")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--hold", type=int, default=0, help="open this many slow streams instead (memory under load)")
    args = parser.parse_args()
    args.label = args.label or args.path
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
