"""Kubernetes behaviour proven locally: server processes on loopback stand in for replicas.

The Python client's production channel (round_robin, gRFC A6 retries of UNAVAILABLE) with a
multi-address target spreads calls over the replicas, and a rolling restart loses no call.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from fake_upstream import FakeUpstream
from llm_client import LLMClient, LLMServiceError, channel_options
from tests.support.dns import TinyDNS
from tests.support.messages import user_msg
from tests.support.metrics import scrape, total
from tests.support.servers import ServerProcess, free_port, started_side_by_side


def _config(fake: FakeUpstream, scenario: str = "echo") -> dict[str, Any]:
    route = {"model": f"openai/m:{scenario}", "api_base": f"{fake.base_url}/v1", "key": {"env": "TEST_PROVIDER_KEY"}}
    return {"routes": {"chat": route}, "server": {"drain_grace_s": 10}}


def _served(replica: ServerProcess) -> float:
    """Complete calls the replica has answered, from its own /metrics."""
    return total(scrape(replica.metrics_port), "llm_requests_total", rpc="Complete")


def _target(replicas: list[ServerProcess]) -> str:
    return "ipv4:" + ",".join(r.target for r in replicas)


def test_round_robin_spreads_calls_across_three_replicas(fake: FakeUpstream, tmp_path: Path) -> None:
    replicas = started_side_by_side(lambda _: ServerProcess(_config(fake), tmp_path), range(3))
    try:
        with LLMClient(_target(replicas)) as client:
            for _ in range(60):
                client.complete("chat", [user_msg()], timeout=30)
        served = [_served(r) for r in replicas]
    finally:
        for r in replicas:
            r.stop()
    assert sum(served) == 60
    assert min(served) >= 15, f"calls per replica: {served}"


def test_rolling_restart_loses_no_call(fake: FakeUpstream, tmp_path: Path) -> None:
    replicas = started_side_by_side(lambda _: ServerProcess(_config(fake, "slow"), tmp_path), range(3))  # streams last about 2 s
    target = _target(replicas)
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with LLMClient(target) as client:
            while not stop.is_set():
                try:
                    events = list(client.stream("chat", [user_msg()], timeout=60))
                    outcomes["ok" if events and events[-1].kind == "finish" else "incomplete"] += 1
                except LLMServiceError as err:
                    failures.append(f"{err.code.name} {err.reason} {err.message}")

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        for i, old in enumerate(replicas):
            old.stop()  # SIGTERM: drains its open streams, then exits
            replicas[i] = ServerProcess(_config(fake, "slow"), tmp_path, port=old.port)
            time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        for r in replicas:
            r.stop()
    assert failures == [], failures[:5]
    assert outcomes["ok"] >= 12 and outcomes["incomplete"] == 0, outcomes


def test_scale_up_a_new_replica_gets_a_fair_share_within_the_connection_age(fake: FakeUpstream, tmp_path: Path) -> None:
    age_s, grace_s = 2.0, 3.0
    config = _config(fake)
    config["server"].update(max_connection_age_s=age_s, max_connection_age_grace_s=grace_s)
    port = free_port()
    hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    dns = TinyDNS("llm.test", hosts)
    replicas = started_side_by_side(lambda h: ServerProcess(config, tmp_path, port=port, host=h), hosts)
    # 1 s between re-resolutions instead of gRPC's default 30 s keeps the test short.
    options = [*channel_options(), ("grpc.dns_min_time_between_resolutions_ms", 1000)]
    try:
        with LLMClient(f"dns://127.0.0.1:{dns.port}/llm.test:{port}", options=options) as client:
            for _ in range(30):
                client.complete("chat", [user_msg()], timeout=30)
            replicas.append(ServerProcess(config, tmp_path, port=port, host="127.0.0.4"))
            dns.addresses.append("127.0.0.4")
            added = time.monotonic()
            newcomer = replicas[-1]
            while _served(newcomer) == 0:
                assert time.monotonic() - added < age_s + grace_s + 10, "the new replica got no call"
                client.complete("chat", [user_msg()], timeout=30)
                time.sleep(0.05)
            reached_s = time.monotonic() - added
            before = [_served(r) for r in replicas]
            for _ in range(40):
                client.complete("chat", [user_msg()], timeout=30)
            after = [_served(r) for r in replicas]
    finally:
        for r in replicas:
            r.stop()
        dns.close()
    share = [a - b for a, b in zip(after, before, strict=True)]
    print(f"\nnew replica reached after {reached_s:.1f} s; the next 40 calls went {share}")
    assert reached_s < age_s + grace_s + 10
    assert share[-1] >= 6, f"the new replica's share of 40 calls: {share}"
