"""Fault 6: over the concurrency limit, excess calls are rejected at once; admitted calls all succeed."""

from __future__ import annotations

import statistics
import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fake_upstream import FakeUpstream, Script
from llm_client import LLMClient, ResourceExhausted, channel_options
from tests.conftest import custom_server, user_msg

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
