"""Three replicas (real processes) sharing one real Redis hold each caller to its limits exactly,
whichever replica a call reaches: requests per minute, tokens per minute with answers of known
usage, a daily budget on a priced route. `--quota-status` reads the same counters, and a
caller's limits change with the tokens file, without a restart.

Minute windows start with a caller's first call and last 60 s: every caller here makes all its
calls within seconds of its first, so the counts are exact without waiting for a window.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from fake_upstream import FakeUpstream
from llm_client import LLMClient, LLMServiceError, channel_options
from llm_service.auth import hash_token
from tests.support.messages import user_msg
from tests.support.metrics import scrape, total
from tests.support.redis_server import RedisServer
from tests.support.servers import ServerProcess, service_env, started_side_by_side

# The fake's answers report 11 input and 7 output tokens; at 200 and 1,000 US dollars per
# million tokens, one answer on the priced route costs $0.0022 + $0.007 = $0.0092.
TOKENS_PER_ANSWER = 18
CALLERS: dict[str, dict[str, Any]] = {
    "rpm-team": {"requests_per_minute": 60},
    "tpm-team": {"tokens_per_minute": 100},
    "budget-team": {"usd_per_day": 0.01},
    "reload-team": {"requests_per_minute": 1},
}


def _tokens_file(path: Path, callers: dict[str, dict[str, Any]]) -> None:
    entries = [{"name": name, "sha256": hash_token(f"token-{name}"), "quotas": limits} for name, limits in callers.items()]
    path.write_text(yaml.safe_dump({"tokens": entries}))


def _config(fake: FakeUpstream, redis_url: str, tokens: Path) -> dict[str, Any]:
    upstream = {"api_base": f"{fake.base_url}/v1", "key": {"env": "TEST_PROVIDER_KEY"}}
    return {
        "routes": {
            "chat": {"model": "openai/m:echo", **upstream},
            "priced": {"model": "openai/priced-model", "price_usd_per_mtok": {"input": 200, "output": 1000}, **upstream},
        },
        "auth": {"tokens_file": str(tokens)},
        # Failing closed, a replica that lost Redis would show as UNAVAILABLE rather than as a miscount.
        "quotas": {"redis_url": redis_url, "backend_retry_s": 0.2, "backend_timeout_s": 10, "on_backend_down": "closed"},
    }


class Cluster:
    """The three replicas, their Redis and their tokens file."""

    def __init__(self, replicas: list[ServerProcess], redis: RedisServer, tokens: Path, config: dict[str, Any]) -> None:
        self.replicas = replicas
        self.redis = redis
        self.tokens = tokens
        self.config = config
        self.target = "ipv4:" + ",".join(r.target for r in replicas)

    def client(self, caller: str, target: str | None = None) -> LLMClient:
        """A client of caller spreading its calls over the replicas (round robin), with no channel retries."""
        return LLMClient(target or self.target, token=f"token-{caller}", options=channel_options(retries=False))

    def metric(self, name: str, **labels: str) -> list[float]:
        """The metric on each replica."""
        return [total(scrape(r.metrics_port), name, **labels) for r in self.replicas]


@pytest.fixture(scope="module")
def cluster(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("quota-replicas")
    redis = RedisServer(workdir)
    tokens = workdir / "tokens.yaml"
    _tokens_file(tokens, CALLERS)
    config = _config(fake, redis.url, tokens)
    try:
        replicas = started_side_by_side(lambda _: ServerProcess(config, workdir), range(3))
    except BaseException:
        redis.kill()
        raise
    yield Cluster(replicas, redis, tokens, config)
    with ThreadPoolExecutor() as pool:
        list(pool.map(ServerProcess.stop, replicas))
    redis.kill()


def _outcome(client: LLMClient, route: str = "chat") -> str:
    try:
        client.complete(route, [user_msg()], max_tokens=50, timeout=30)
        return "OK"
    except LLMServiceError as err:
        return f"{err.reason}:{err.metadata.get('limit', '')}"


def test_sixty_requests_per_minute_are_sixty_over_three_replicas(cluster: Cluster) -> None:
    served_before = sum(cluster.metric("llm_requests_total", rpc="Complete", code="OK"))
    with cluster.client("rpm-team") as client, ThreadPoolExecutor(8) as pool:
        outcomes = Counter(pool.map(lambda _: _outcome(client), range(200)))
    assert outcomes == {"OK": 60, "QUOTA_EXCEEDED:requests_per_minute": 140}
    served = [a for a in cluster.metric("llm_requests_total", rpc="Complete", code="OK")]
    refused = cluster.metric("llm_quota_rejections_total", caller="rpm-team", limit="requests_per_minute")
    assert sum(served) - served_before == 60
    assert all(n > 0 for n in refused), f"every replica refused some, from the shared count: {refused}"
    # Attribution by caller, and the caller on each call's log line.
    assert sum(cluster.metric("llm_caller_requests_total", caller="rpm-team", code="OK")) == 60
    assert any(line.get("caller_name") == "rpm-team" for r in cluster.replicas for line in r.logged("rpc"))


def test_tokens_per_minute_count_the_reported_usage_over_three_replicas(cluster: Cluster) -> None:
    with cluster.client("tpm-team") as client:
        outcomes = [_outcome(client) for _ in range(9)]
    # Admitted while under 100 tokens: after 0, 18, 36, 54, 72, 90; refused at 108.
    assert outcomes == ["OK"] * 6 + ["QUOTA_EXCEEDED:tokens_per_minute"] * 3
    tokens = sum(cluster.metric("llm_caller_tokens_total", caller="tpm-team"))
    assert tokens == 6 * TOKENS_PER_ANSWER


def test_a_daily_budget_stops_the_caller_after_the_call_that_crosses_it_on_every_replica(cluster: Cluster) -> None:
    with cluster.client("budget-team") as client:
        assert [_outcome(client, "priced") for _ in range(2)] == ["OK", "OK"]  # $0.0092, then $0.0184: crossed
    for replica in cluster.replicas:
        with cluster.client("budget-team", replica.target) as client:
            assert _outcome(client, "priced") == "QUOTA_EXCEEDED:usd_per_day"
    assert sum(cluster.metric("llm_caller_cost_usd_total", caller="budget-team")) == pytest.approx(0.0184)
    # What the 80%-of-budget alert reads: the shared spend beside the budget.
    assert max(cluster.metric("llm_caller_spent_usd", caller="budget-team", period="day")) == pytest.approx(0.0184)
    assert max(cluster.metric("llm_caller_budget_usd", caller="budget-team", period="day")) == 0.01


def test_quota_status_reads_the_live_counters_from_redis(cluster: Cluster, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cluster.config))
    with cluster.client("rpm-team") as client:
        _outcome(client)  # the caller has counters, whichever tests ran before
    done = subprocess.run(
        [sys.executable, "-m", "llm_service", "--config", str(config), "--quota-status", "rpm-team"],
        env=service_env(TEST_PROVIDER_KEY="unused"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    (row,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert row["caller"] == "rpm-team" and row["scope"] == "*"
    assert 1 <= row["requests_this_minute"] <= 60 and row["limits"] == {"requests_per_minute": 60}
    assert 0 < row["minute_resets_in_s"] <= 60


def test_a_callers_limits_change_with_the_tokens_file_without_a_restart(cluster: Cluster) -> None:
    with cluster.client("reload-team") as client:
        assert [_outcome(client) for _ in range(2)] == ["OK", "QUOTA_EXCEEDED:requests_per_minute"]
        _tokens_file(cluster.tokens, {**CALLERS, "reload-team": {"requests_per_minute": 100}})
        deadline = time.monotonic() + 10  # each replica looks at the file at most once a second
        while _outcome(client) != "OK":
            assert time.monotonic() < deadline, "the new limit did not take effect"
            time.sleep(0.05)
