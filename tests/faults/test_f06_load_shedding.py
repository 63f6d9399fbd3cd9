"""Fault 6: over the concurrency limit, excess calls are rejected at once; admitted calls all succeed."""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fake_upstream import FakeUpstream, Script
from llm_client import LLMClient, ResourceExhausted, channel_options, pb
from tests.support.messages import user_msg
from tests.support.servers import ServerProcess, custom_server

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


def test_f06_a_burst_of_50_over_limit_callers_is_shed_fast(fake: FakeUpstream, tmp_path: Path) -> None:
    """50 callers over the limit at the same instant, against a server in its own process: every one
    is refused with SERVER_OVERLOADED; the median and worst rejection times are printed (this
    machine is shared, so the figure is reported, not asserted beyond a loose sanity bound)."""
    import asyncio

    from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc

    routes = {"openai": {"model": "openai/test-model", "api_base": f"{fake.base_url}/v1", "key": {"env": "TEST_PROVIDER_KEY"}}}
    fake.script(Script(text=" ".join(["word"] * 40), chunk_delay_s=0.1, times=LIMIT))
    server = ServerProcess({"routes": routes, "limits": {"max_concurrent_rpcs": LIMIT}}, tmp_path)
    try:
        holders = [LLMClient(server.target, options=channel_options(retries=False)) for _ in range(LIMIT)]
        held = [threading.Thread(target=lambda c=c: list(c.stream("openai", [user_msg()], timeout=30))) for c in holders]
        for t in held:
            t.start()
        fake.wait_for(lambda rs: len(rs) == LIMIT, timeout_s=10)

        async def burst(health_check: bool = False) -> list[tuple[float, grpc.StatusCode | None]]:
            channels = [grpc.aio.insecure_channel(server.target) for _ in range(BURST)]
            for ch in channels:
                await ch.channel_ready()
            request = pb.CompleteRequest(model="openai", messages=[user_msg()])

            async def one(ch: grpc.aio.Channel) -> tuple[float, grpc.StatusCode | None]:
                started = time.perf_counter()
                try:
                    if health_check:  # the floor: gRPC's own cost of 50 simultaneous calls, same harness
                        await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=30)
                    else:
                        await pb_grpc.LLMServiceStub(ch).Complete(request, timeout=30)
                    code = None
                except grpc.aio.AioRpcError as err:
                    code = err.code()
                return time.perf_counter() - started, code

            try:
                return await asyncio.gather(*(one(ch) for ch in channels))
            finally:
                for ch in channels:
                    await ch.close()

        floors = [statistics.median(t for t, _ in asyncio.run(burst(health_check=True))) for _ in range(3)]
        shed_runs = [asyncio.run(burst()) for _ in range(3)]
        results = [r for run in shed_runs for r in run]
        for t in held:
            t.join(30)
        for c in holders:
            c.close()
    finally:
        server.stop()
    latencies = sorted(t for t, _ in results)
    assert all(code == grpc.StatusCode.RESOURCE_EXHAUSTED for _, code in results)
    p50, worst = statistics.median(latencies) * 1000, latencies[-1] * 1000
    floor = statistics.median(floors) * 1000
    print(
        f"burst of {BURST} over-limit callers (3 runs): rejected in median {p50:.1f} ms, worst {worst:.1f} ms; "
        f"{BURST} health checks in the same harness: median {floor:.1f} ms (ratio {p50 / floor:.2f})"
    )
    assert worst < 1000, "rejected at once, not queued behind the admitted streams"
