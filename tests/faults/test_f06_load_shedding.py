"""Fault 6: over the concurrency limit, excess calls are rejected at once; admitted calls all succeed."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fake_upstream import FakeUpstream, Script
from llm_client import LLMClient, ResourceExhausted, channel_options
from tests.support.messages import user_msg
from tests.support.paths import ROOT
from tests.support.servers import ServerProcess, custom_server, free_port

LIMIT = 4
EXCESS = 12


def test_f06_excess_calls_are_shed_fast_admitted_ones_succeed_health_stays_serving(fake: FakeUpstream) -> None:
    # Each admitted stream takes about 2 s: a queued call would wait that long, a shed one does not.
    fake.script(Script(text=" ".join(["word"] * 20), chunk_delay_s=0.1, times=LIMIT))
    with custom_server(fake, limits={"max_concurrent_rpcs": LIMIT, "shed_retry_after_s": 0.5}) as (srv, client):
        results: list[str] = []

        def admitted() -> None:
            with LLMClient(srv.target, options=channel_options(retries=False)) as c:
                results.append(list(c.stream("openai", [user_msg()], timeout=30))[-1].text)

        threads = [threading.Thread(target=admitted) for _ in range(LIMIT)]
        for t in threads:
            t.start()
        fake.wait_for(lambda rs: len(rs) == LIMIT, timeout_s=10)

        latencies, errors = [], []
        for _ in range(EXCESS):
            started = time.perf_counter()
            try:
                client.complete("openai", [user_msg()], timeout=30)
            except ResourceExhausted as err:
                errors.append(err)
            latencies.append(time.perf_counter() - started)
        with grpc.insecure_channel(srv.target) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        for t in threads:
            t.join(30)

    assert len(errors) == EXCESS, "every call over the limit was rejected"
    assert all(e.reason == "SERVER_OVERLOADED" and e.retry_delay_s == 0.5 for e in errors)
    assert "limits.max_concurrent_rpcs" in errors[0].message
    assert max(latencies) < 1.0, "rejected at once, not queued behind the 2 s streams"
    print(f"shed call latency: median {statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert len(results) == LIMIT and all(r.startswith("word word") for r in results), "admitted calls all succeeded"
    assert len(fake.requests()) == LIMIT, "shed calls never reached the upstream"


BURST = 50
RUNS = 5
GO_CLIENT = ROOT / "build/go/bin/llm-interop"
# A shed call is one admission check and a status with its details: at most this many times the
# server's cost of a health check, both measured side by side by the same Go client.
SHED_TO_HEALTH_RATIO_BOUND = 3.0


def _go_burst(target: str) -> dict[str, Any]:
    """The Go client's burst: BURST connections, each sending one Complete (and, apart, one health
    Check) at the same instant, RUNS times after an untimed first burst; milliseconds per call."""
    assert GO_CLIENT.is_file(), "run `make go-client` (make test builds it with Debian's Go packages)"
    command = [str(GO_CLIENT), "burst", target, "openai", str(BURST), str(RUNS)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out: dict[str, Any] = json.loads(run.stdout)
    return out


def _median_of_runs(runs: list[list[float]]) -> float:
    return statistics.median(statistics.median(ms) for ms in runs)


def _bare_grpc_floor() -> dict[str, Any]:
    """The same burst against a bare grpc.aio server in its own process (bench/ceiling.py: a canned
    Complete answer and the stock health servicer, no interceptors): the least one Python gRPC
    process takes to answer BURST callers at once on this machine, measured in the same run."""
    port = free_port()
    bare = subprocess.Popen([sys.executable, "-m", "bench.ceiling", "--port", str(port), "--health"], cwd=ROOT)
    try:
        return _go_burst(f"127.0.0.1:{port}")  # its Dial waits for the port to open
    finally:
        bare.terminate()
        bare.wait(10)


def test_f06_a_burst_of_50_over_limit_callers_is_shed_as_fast_as_a_health_check(fake: FakeUpstream, tmp_path: Path) -> None:
    """50 callers over the limit at the same instant, against a server in its own process, timed by
    the Go client (a Python client's own cost of 50 simultaneous calls was most of the figure):
    every one is refused with SERVER_OVERLOADED, and the median rejection is within a ratio of 50
    simultaneous health checks from the same client. The same client then times a bare grpc.aio
    server answering the same bursts (a canned Complete, a health Check): the floor the 10 ms
    target is compared with. The figures are printed; no time is asserted."""
    routes = {"openai": {"model": "openai/test-model", "api_base": f"{fake.base_url}/v1", "key": {"env": "TEST_PROVIDER_KEY"}}}
    fake.script(Script(text=" ".join(["word"] * 30), chunk_delay_s=0.1, times=LIMIT))  # held 3 s: the Go run takes 1
    server = ServerProcess({"routes": routes, "limits": {"max_concurrent_rpcs": LIMIT}}, tmp_path)
    try:
        holders = [LLMClient(server.target, options=channel_options(retries=False)) for _ in range(LIMIT)]
        held = [threading.Thread(target=lambda c=c: list(c.stream("openai", [user_msg()], timeout=30))) for c in holders]
        for t in held:
            t.start()
        fake.wait_for(lambda rs: len(rs) == LIMIT, timeout_s=10)
        out = _go_burst(server.target)
        for t in held:
            t.join(30)
        for c in holders:
            c.close()
    finally:
        server.stop()
    floor = _bare_grpc_floor()
    shed_calls = BURST * (RUNS + 1)  # and the first burst, timed apart
    assert out["codes"] == {"ResourceExhausted": shed_calls} and out["reasons"] == {"SERVER_OVERLOADED": shed_calls}
    assert floor["codes"] == {"OK": shed_calls}, floor["codes"]
    assert len(fake.requests()) == LIMIT, "shed calls never reached the upstream"
    shed, health = _median_of_runs(out["shed_ms"]), _median_of_runs(out["health_ms"])
    bare_complete, bare_health = _median_of_runs(floor["shed_ms"]), _median_of_runs(floor["health_ms"])
    worst = max(max(ms) for ms in out["shed_ms"])
    ratio = shed / health
    print(
        f"burst of {BURST} over-limit callers from the Go client ({RUNS} runs): rejected in median {shed:.2f} ms "
        f"(runs {', '.join(f'{statistics.median(ms):.2f}' for ms in out['shed_ms'])}), worst {worst:.1f} ms; "
        f"{BURST} health checks at once: median {health:.2f} ms; ratio {ratio:.2f}; the server's first bursts, "
        f"untimed in the ratio: shed {statistics.median(out['cold_shed_ms']):.1f} ms, "
        f"health {statistics.median(out['cold_health_ms']):.1f} ms; a bare grpc.aio server, same bursts: "
        f"canned Complete median {bare_complete:.2f} ms, health {bare_health:.2f} ms; shed / bare Complete "
        f"{shed / bare_complete:.2f}"
    )
    assert ratio < SHED_TO_HEALTH_RATIO_BOUND, (out["shed_ms"], out["health_ms"])
