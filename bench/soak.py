"""A short bounded soak (`make soak`): steady mixed load against a server process for a few minutes.

It samples the server's RSS and its open upstream sockets every few seconds, writes
bench/results/soak.json and bench/results/soak.png, and exits non-zero when a call
failed in a way the load did not ask for, or memory kept growing in the second half.

    python -m bench.soak [--seconds 180] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from fake_upstream import FakeUpstream
from tests.support.load import mixed_load_config, mixed_stream, rss_mb, upstream_sockets
from tests.support.servers import ServerProcess

import grpc  # isort: skip
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc  # isort: skip

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLE_EVERY_S = 2.0
LATE_GROWTH_BOUND_MB = 32.0  # RSS may not grow more than this over the second half of the run


async def _run(
    target: str, seconds: float, concurrency: int, pid: int, upstream_port: int
) -> tuple[Counter[str], list[dict[str, float]]]:
    outcomes: Counter[str] = Counter()
    samples: list[dict[str, float]] = []
    started = time.monotonic()
    stop = started + seconds
    counter = iter(range(10**9))

    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.LLMServiceStub(channel)

        async def worker() -> None:
            while time.monotonic() < stop:
                await mixed_stream(stub, next(counter), outcomes)

        async def sampler() -> None:
            while time.monotonic() < stop:
                samples.append(
                    {
                        "t": round(time.monotonic() - started, 1),
                        "rss_mb": rss_mb(pid),
                        "upstream_sockets": upstream_sockets(pid, upstream_port),
                        "calls": sum(outcomes.values()),
                    }
                )
                await asyncio.sleep(SAMPLE_EVERY_S)

        await asyncio.gather(sampler(), *(worker() for _ in range(concurrency)))
    return outcomes, samples


def _plot(samples: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] for s in samples]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    ax1.plot(t, [s["rss_mb"] for s in samples], label="server RSS (MB)")
    ax1.set_ylabel("RSS (MB)")
    ax1.set_title("llm-service soak: mixed streams (ordinary, cancelled, failing upstream)")
    ax2.plot(t, [s["upstream_sockets"] for s in samples], color="tab:orange", label="upstream sockets")
    ax2.set_ylabel("open upstream sockets")
    ax2.set_xlabel("seconds")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    fake = FakeUpstream().start_in_thread()
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(mixed_load_config(fake.base_url), Path(tmp))
        try:
            outcomes, samples = asyncio.run(
                _run(server.target, args.seconds, args.concurrency, server.pid, int(fake.base_url.rsplit(":", 1)[1]))
            )
        finally:
            output = server.stop()
    RESULTS.mkdir(exist_ok=True)
    half = [s["rss_mb"] for s in samples[len(samples) // 2 :]]
    late_growth = max(half) - half[0] if half else 0.0
    unexpected = {k: v for k, v in outcomes.items() if k not in ("finished", "cancelled", "failed:UNAVAILABLE")}
    report = {
        "seconds": args.seconds,
        "concurrency": args.concurrency,
        "outcomes": dict(outcomes),
        "unexpected_outcomes": unexpected,
        "rss_mb": {"first": samples[0]["rss_mb"], "last": samples[-1]["rss_mb"], "max": max(s["rss_mb"] for s in samples)},
        "late_rss_growth_mb": round(late_growth, 1),
        "late_rss_growth_bound_mb": LATE_GROWTH_BOUND_MB,
        "upstream_sockets": {"first": samples[0]["upstream_sockets"], "last": samples[-1]["upstream_sockets"]},
        "tracebacks_in_server_output": output.count("Traceback"),
        "samples": samples,
    }
    (RESULTS / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(samples, RESULTS / "soak.png")
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    ok = not unexpected and late_growth <= LATE_GROWTH_BOUND_MB and report["tracebacks_in_server_output"] == 0
    print(f"soak {'passed' if ok else 'FAILED'}: results in {RESULTS}/soak.json and soak.png")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
