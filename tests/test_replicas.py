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
from llm_client import LLMClient, LLMServiceError
from tests.conftest import ServerProcess, user_msg
from tests.test_metrics import scrape, total


def _config(fake: FakeUpstream, scenario: str = "echo") -> dict[str, Any]:
    route = {"model": f"openai/m:{scenario}", "api_base": f"{fake.base_url}/v1", "key": {"env": "TEST_PROVIDER_KEY"}}
    return {"routes": {"chat": route}, "server": {"drain_grace_s": 10}}


def _target(replicas: list[ServerProcess]) -> str:
    return "ipv4:" + ",".join(r.target for r in replicas)


def test_round_robin_spreads_calls_across_three_replicas(fake: FakeUpstream, tmp_path: Path) -> None:
    replicas = [ServerProcess(_config(fake), tmp_path) for _ in range(3)]
    try:
        with LLMClient(_target(replicas)) as client:
            for _ in range(60):
                client.complete("chat", [user_msg()], timeout=30)
        served = [total(scrape(r.metrics_port), "llm_requests_total", rpc="Complete") for r in replicas]
    finally:
        for r in replicas:
            r.stop()
    assert sum(served) == 60
    assert min(served) >= 15, f"calls per replica: {served}"


def test_rolling_restart_loses_no_call(fake: FakeUpstream, tmp_path: Path) -> None:
    replicas = [ServerProcess(_config(fake, "slow"), tmp_path) for _ in range(3)]  # streams last about 2 s
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
