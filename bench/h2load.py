"""Unary gRPC load from h2load (nghttp2's load generator, in C), for the unary rows.

The Python load generator spends more CPU per call than the server it measures does, so at
high concurrency it can be the limit on calls/s. h2load sends one prepared gRPC request body
(the 5-byte length prefix and a serialized CompleteRequest) over 4 connections, with the
cell's concurrency spread over them as HTTP/2 streams, pinned to the other core. The
server's CPU is read from /proc around each run, as in bench/load.py; latencies come from
h2load's per-request log.

    python -m bench.h2load --target 127.0.0.1:8301 --pid 1234 [--route-prefix bench]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.load import cpu_s, percentile, rss_mb
from llm_client._proto.llm.v1 import llm_service_pb2 as pb

CONNECTIONS = 4
OTHER_CPU = "1"
METHOD = "/llm.v1.LLMService/Complete"


def request_body(route_prefix: str) -> bytes:
    """The Complete request the Python generator sends, framed as one gRPC message."""
    request = pb.CompleteRequest(
        model=f"{route_prefix}-burst", messages=[pb.Message(role=pb.ROLE_USER, parts=[pb.ContentPart(text="Say hello.")])]
    )
    payload = request.SerializeToString()
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def run_cell(target: str, pid: int | None, body: Path, concurrency: int, seconds: float) -> dict[str, Any]:
    connections = min(CONNECTIONS, concurrency)
    streams = max(1, concurrency // connections)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "requests.log"
        argv = ["taskset", "-c", OTHER_CPU, "h2load", f"http://{target}{METHOD}", "--data", str(body),
                "--header", "content-type: application/grpc", "--header", "te: trailers",
                "--clients", str(connections), "--max-concurrent-streams", str(streams), "--threads", "1",
                "--duration", f"{round(seconds * 1000)}ms", "--warm-up-time", "200ms", "--log-file", str(log)]  # fmt: skip
        cpu_before, wall_before = cpu_s(pid), time.monotonic()
        out = subprocess.run(argv, capture_output=True, text=True, check=True)
        wall, cpu = time.monotonic() - wall_before, cpu_s(pid) - cpu_before
        latencies = [int(line.split()[2]) / 1e6 for line in log.read_text().splitlines() if line.split()[1] == "200"]
    done = _figure(out.stdout, r"requests: \d+ total, \d+ started, (\d+) done")
    failed = _figure(out.stdout, r"(\d+) failed")
    data_bytes = _figure(out.stdout, r"traffic: .*? headers \(.*?\), .*?\((\d+)\) data")
    # An answer is about 60 bytes; a gRPC error is trailers only, so no data: check the calls answered.
    assert done and data_bytes / done > 20, f"h2load's calls did not get answers:\n{out.stdout}"
    # h2load's own rate counts the warm-up out; the CPU figure is for every call in the run.
    rate = _float(out.stdout, r"finished in [\d.]+m?s, ([\d.]+) req/s")
    return {
        "mode": "unary",
        "concurrency": concurrency,
        "calls": done,
        "failures": failed,
        "wall_s": wall,
        "calls_per_s": rate,
        "p50_ms": percentile(latencies, 0.5) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "ttft_p50_ms": None,
        "cpu_us_per_call": cpu / max(len(latencies), 1) * 1e6,
        "cpu_us_per_chunk": None,
        "rss_mb": rss_mb(pid),
    }


def _figure(text: str, pattern: str) -> int:
    match = re.search(pattern, text)
    return int(match.group(1)) if match else 0


def _float(text: str, pattern: str) -> float:
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", default="")
    parser.add_argument("--target", required=True)
    parser.add_argument("--pid", type=int, default=None)
    parser.add_argument("--route-prefix", default="bench")
    parser.add_argument("--concurrency", default="1,32,256")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    if shutil.which("h2load") is None:
        raise SystemExit("h2load is missing: `make bench` installs it (Debian's nghttp2-client)")
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "complete.bin"
        body.write_bytes(request_body(args.route_prefix))
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            for run in range(args.runs):
                cell = run_cell(args.target, args.pid, body, concurrency, args.seconds)
                print(json.dumps({"path": args.label, "run": run, "client": "h2load", **cell}), flush=True)


if __name__ == "__main__":
    main()
