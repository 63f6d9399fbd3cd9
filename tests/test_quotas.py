"""Per-caller quotas on one server (in this process) and a real Redis: refusals and their details,
reservations settled with the usage the upstream reported (on both transports), concurrent
streams, Redis going away and coming back (failing open, failing closed), and the counters
in process memory when no Redis is configured.

Minute windows start with a caller's first call and last 60 s, so every test here runs its
calls well within one window and never waits for one to pass. Three replicas sharing one
Redis are in tests/test_quota_replicas.py.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
import yaml
from google.rpc import error_details_pb2, status_pb2

from fake_upstream import FakeUpstream, Script
from llm_client import LLMClient, LLMServiceError, channel_options
from llm_client._proto.llm.v1 import llm_service_pb2 as pb
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc
from llm_service.auth import Caller, TokenStore
from llm_service.config import ConfigError
from llm_service.quotas.gate import ANONYMOUS, UNLISTED, QuotaGate
from llm_service.quotas.limits import QuotasConfig
from tests.support.messages import user_msg
from tests.support.metrics import scrape, total
from tests.support.redis_server import RedisCluster, RedisSentinel, RedisServer
from tests.support.servers import ServerThread, service_config


def _route(fake: FakeUpstream, model: str, **extra: Any) -> dict[str, Any]:
    return {"model": f"openai/{model}", "api_base": f"{fake.base_url}/v1", "key": {"env": "TEST_PROVIDER_KEY"}, **extra}


def _server(fake: FakeUpstream, quotas: dict[str, Any]) -> ServerThread:
    routes = {
        "rpm": _route(fake, "rpm"),
        "tpm-direct": _route(fake, "tpm-direct"),
        "tpm-litellm": _route(fake, "tpm-litellm", transport="litellm"),
        "streams": _route(fake, "streams"),
        "tpm-billed": _route(fake, "tpm-billed"),
        "cancelled": {"model": "anthropic/cancelled", "api_base": fake.base_url, "key": {"env": "TEST_PROVIDER_KEY"}},
        "embed": _route(fake, "text-embedding-3-small"),
        "burst": _route(fake, "burst"),
    }
    limits = {
        "rpm": {"requests_per_minute": 3},
        "tpm-direct": {"tokens_per_minute": 40},
        "tpm-litellm": {"tokens_per_minute": 40},
        "streams": {"concurrent_streams": 2},
        "tpm-billed": {"tokens_per_minute": 40},
        "cancelled": {"tokens_per_minute": 10_000},
        "embed": {"requests_per_minute": 1},
        "burst": {"requests_per_minute": 20},
    }
    return ServerThread(service_config(fake.base_url, routes=routes, quotas={"default": {"routes": limits}, **quotas}))


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.kill()


@pytest.fixture(scope="module")
def shared(fake: FakeUpstream, redis_server: RedisServer) -> Iterator[ServerThread]:
    """Counters in Redis, failing open."""
    srv = _server(fake, {"redis_url": redis_server.url, "backend_retry_s": 0.05, "key_prefix": "open"})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def closed(fake: FakeUpstream, redis_server: RedisServer) -> Iterator[ServerThread]:
    """Counters in Redis, failing closed."""
    srv = _server(
        fake, {"redis_url": redis_server.url, "backend_retry_s": 0.05, "on_backend_down": "closed", "key_prefix": "closed"}
    )
    yield srv
    srv.stop()


def _client(srv: ServerThread) -> LLMClient:
    return LLMClient(srv.target, options=channel_options(retries=False))


def _outcomes(client: LLMClient, route: str, n: int) -> list[str]:
    """What n calls in a row got: "OK" or the error's reason."""
    got = []
    for _ in range(n):
        try:
            client.complete(route, [user_msg()], max_tokens=50, timeout=30)
            got.append("OK")
        except LLMServiceError as err:
            got.append(err.reason)
    return got


def _wait(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _metric(srv: ServerThread, name: str, **labels: str) -> float:
    assert srv.running is not None
    return total(scrape(srv.running.metrics_port), name, **labels)


def test_refused_call_says_which_limit_with_quota_failure_and_retry_info_and_never_goes_upstream(
    fake: FakeUpstream, shared: ServerThread
) -> None:
    with _client(shared) as client:
        assert _outcomes(client, "rpm", 3) == ["OK"] * 3
    upstream_before = len(fake.requests())
    channel = grpc.insecure_channel(shared.target)
    try:
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.LLMServiceStub(channel).Complete(pb.CompleteRequest(model="rpm", messages=[user_msg()]), timeout=30)
    finally:
        channel.close()
    err = caught.value
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "requests_per_minute" in err.details() and "3 requests per minute" in err.details()
    raw = dict(err.trailing_metadata())["grpc-status-details-bin"]
    details = {d.type_url.rsplit(".", 1)[-1]: d for d in status_pb2.Status.FromString(raw).details}
    info, retry, quota = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo(), error_details_pb2.QuotaFailure()
    details["ErrorInfo"].Unpack(info)
    details["RetryInfo"].Unpack(retry)
    details["QuotaFailure"].Unpack(quota)
    assert info.reason == "QUOTA_EXCEEDED" and info.metadata["limit"] == "requests_per_minute"
    assert info.metadata["scope"] == "rpm" and info.metadata["quota"] == "3"
    assert 0 < retry.retry_delay.seconds <= 60  # the window's end: it started with the first of the three calls
    (violation,) = quota.violations
    assert violation.quota_id == "requests_per_minute" and violation.quota_value == 3
    assert violation.subject == f"caller:{ANONYMOUS}/route:rpm" and violation.quota_dimensions["scope"] == "rpm"
    assert len(fake.requests()) == upstream_before  # refused before anything went upstream
    assert _metric(shared, "llm_quota_rejections_total", caller=ANONYMOUS, limit="requests_per_minute") == 1
    assert _metric(shared, "llm_caller_requests_total", caller=ANONYMOUS, code="RESOURCE_EXHAUSTED") == 1


@pytest.mark.parametrize("route", ["tpm-direct", "tpm-litellm"])
def test_tokens_reserved_from_max_tokens_are_settled_with_the_reported_usage(
    fake: FakeUpstream, shared: ServerThread, route: str
) -> None:
    # Each answer reports 11 + 7 tokens. Reserved, a call holds its input estimate + 50 tokens,
    # more than the limit of 40: without settlement the second call would be refused.
    with _client(shared) as client:
        assert _outcomes(client, route, 4) == ["OK", "OK", "OK", "QUOTA_EXCEEDED"]  # 0, 18, 36 < 40; then 54
    assert _metric(shared, "llm_caller_tokens_total", caller=ANONYMOUS, kind="input") >= 33


def test_an_attempt_the_provider_billed_and_that_was_retried_counts_too(fake: FakeUpstream, shared: ServerThread) -> None:
    # The first call's first answer is empty: billed (11 + 7 tokens) and retried, so the call uses 36.
    fake.script(Script(text="", match_model="tpm-billed"))
    with _client(shared) as client:
        assert _outcomes(client, "tpm-billed", 3) == ["OK", "OK", "QUOTA_EXCEEDED"]  # 0, 36 < 40; then 54


def test_a_cancelled_stream_settles_with_what_the_provider_billed_before_the_cancel(
    fake: FakeUpstream, shared: ServerThread, redis_server: RedisServer
) -> None:
    # Anthropic reports the usage so far in its first event; the caller cancels after the first text.
    fake.script(Script(text="one two three", stall_after_chunks=3, stall_s=30, match_model="cancelled"))
    window = redis.Redis(port=redis_server.port, decode_responses=True)
    key = "open:{_anonymous}:cancelled:minute"
    channel = grpc.insecure_channel(shared.target)
    try:
        call = pb_grpc.LLMServiceStub(channel).Stream(pb.StreamRequest(model="cancelled", messages=[user_msg()], max_tokens=500))
        assert next(call).WhichOneof("event") == "text_delta"
        assert int(window.hget(key, "tok") or 0) >= 500  # reserved: the input estimate + max_tokens
        call.cancel()
        _wait(lambda: int(window.hget(key, "tok") or 0) < 500)
        assert int(window.hget(key, "tok")) == 11 + 1  # the input, and the 1 output token Anthropic's first event says
    finally:
        channel.close()
        window.close()


def test_embed_calls_are_admitted_and_billed_like_the_others(shared: ServerThread) -> None:
    tokens_before = _metric(shared, "llm_caller_tokens_total", caller=ANONYMOUS, kind="input")
    with _client(shared) as client:
        assert len(client.embed("embed", ["one text"], timeout=30).vectors) == 1
        with pytest.raises(LLMServiceError) as refused:
            client.embed("embed", ["another"], timeout=30)
    assert refused.value.reason == "QUOTA_EXCEEDED" and refused.value.metadata["limit"] == "requests_per_minute"
    assert refused.value.quota_violations == [(f"caller:{ANONYMOUS}/route:embed", refused.value.message)]  # QuotaFailure
    assert _metric(shared, "llm_caller_tokens_total", caller=ANONYMOUS, kind="input") > tokens_before


def test_third_concurrent_stream_is_refused_at_once_and_one_is_admitted_after_one_ends(
    fake: FakeUpstream, shared: ServerThread
) -> None:
    held = Script(text="held open for a while", stall_after_chunks=1, stall_s=1.0, match_model="streams")
    fake.script(held, dataclasses.replace(held, stall_s=30.0))
    channel = grpc.insecure_channel(shared.target)
    stub = pb_grpc.LLMServiceStub(channel)
    request = pb.StreamRequest(model="streams", messages=[user_msg()])
    try:
        first = stub.Stream(request, timeout=30)
        fake.wait_for(lambda seen: len(seen) == 1)  # admitted (the upstream has it), holding the 1-s script
        second = stub.Stream(request, timeout=30)
        fake.wait_for(lambda seen: len(seen) == 2)
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.Stream(request, timeout=30))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "concurrent_streams" in refused.value.details()
        assert len(fake.requests()) == 2  # refused before anything went upstream
        assert list(first)[-1].WhichOneof("event") == "finish"  # the first ends: its slot is given back
        assert list(stub.Stream(request, timeout=30))[-1].WhichOneof("event") == "finish"
        second.cancel()
    finally:
        channel.close()


def test_concurrent_calls_counted_in_one_pipeline_each_get_their_own_answer_even_after_redis_lost_its_scripts(
    shared: ServerThread, redis_server: RedisServer
) -> None:
    # The admissions asked for in one round of the server's event loop go to Redis in one pipeline;
    # a Redis that lost its scripts (SCRIPT FLUSH, as after a restart) gets them again.
    counters = redis.Redis(port=redis_server.port, decode_responses=True)
    counters.script_flush()
    with _client(shared) as client, ThreadPoolExecutor(24) as pool:
        outcomes = Counter(pool.map(lambda _: _outcomes(client, "burst", 1)[0], range(24)))
    assert outcomes == {"OK": 20, "QUOTA_EXCEEDED": 4}
    assert int(counters.hget("open:{_anonymous}:burst:minute", "req") or 0) == 20, "counted in Redis, not in process"
    assert _metric(shared, "llm_quota_backend_up") == 1


def test_a_redis_behind_a_password_counts_in_its_database_and_one_that_stops_answering_is_failed_open_after_the_timeout(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    redis_server = RedisServer(tmp_path, password="s3cret")
    assert redis_server.proc is not None
    url = f"redis://:s3cret@127.0.0.1:{redis_server.port}/3"
    srv = _server(fake, {"redis_url": url, "backend_timeout_s": 0.3, "backend_retry_s": 0.05, "key_prefix": "pw"})
    counters = redis.Redis(port=redis_server.port, password="s3cret", db=3, decode_responses=True)
    key = "pw:{_anonymous}:rpm:minute"
    try:
        with _client(srv) as client:
            assert _outcomes(client, "rpm", 1) == ["OK"]
            assert counters.hget(key, "req") == "1", "counted in database 3"
            os.kill(redis_server.proc.pid, signal.SIGSTOP)  # connected, and answering nothing
            try:
                assert _outcomes(client, "rpm", 1) == ["OK"]  # served once the backend timed out
                assert _metric(srv, "llm_quota_backend_up") == 0
            finally:
                os.kill(redis_server.proc.pid, signal.SIGCONT)
            _wait(lambda: _metric(srv, "llm_quota_backend_up") == 1)
            before = int(counters.hget(key, "req") or 0)
            assert _outcomes(client, "rpm", 1) == ["OK"]
            assert int(counters.hget(key, "req") or 0) == before + 1, "counted in Redis again"
    finally:
        srv.stop()
        redis_server.kill()


def test_redis_down_fails_open_or_closed_as_configured_and_enforcement_resumes_when_it_is_back(
    fake: FakeUpstream, shared: ServerThread, closed: ServerThread, redis_server: RedisServer
) -> None:
    with _client(shared) as open_client, _client(closed) as closed_client:
        assert _outcomes(open_client, "streams", 1) == ["OK"]  # counted in Redis
        assert _outcomes(closed_client, "rpm", 1) == ["OK"]
        assert _metric(shared, "llm_quota_backend_up") == 1
        redis_server.kill()
        try:
            # Failing open: served, counted in this process (the limit still holds per replica).
            assert _outcomes(open_client, "rpm", 4) == ["OK", "OK", "OK", "QUOTA_EXCEEDED"]
            assert _metric(shared, "llm_quota_backend_up") == 0
            # Failing closed: refused with UNAVAILABLE, nothing sent upstream.
            with pytest.raises(LLMServiceError) as refused:
                closed_client.complete("rpm", [user_msg()], timeout=30)
            assert refused.value.code == grpc.StatusCode.UNAVAILABLE and refused.value.reason == "QUOTA_BACKEND_UNAVAILABLE"
            assert refused.value.retry_delay_s is not None
        finally:
            redis_server.start()  # empty: the counters it held are gone
        _wait(lambda: _metric(shared, "llm_quota_backend_up") == 1 and _metric(closed, "llm_quota_backend_up") == 1)
        # Back: counted in Redis again, from zero, and the limit holds.
        assert _outcomes(open_client, "rpm", 4) == ["OK", "OK", "OK", "QUOTA_EXCEEDED"]
        assert _outcomes(closed_client, "rpm", 4) == ["OK", "OK", "OK", "QUOTA_EXCEEDED"]


def test_a_redis_cluster_holds_the_counters(fake: FakeUpstream, tmp_path: Path) -> None:
    cluster = RedisCluster(tmp_path)
    srv = _server(fake, {"redis_url": cluster.url, "redis_cluster": True, "on_backend_down": "closed"})
    try:
        with _client(srv) as client:
            assert _outcomes(client, "rpm", 4) == ["OK", "OK", "OK", "QUOTA_EXCEEDED"]
        assert _metric(srv, "llm_quota_backend_up") == 1
    finally:
        srv.stop()
        cluster.kill()


def test_a_redis_sentinel_names_the_redis_that_holds_the_counters(fake: FakeUpstream, tmp_path: Path) -> None:
    """redis+sentinel://host:port/name: the counters go to the master the Sentinel names."""
    sentinel = RedisSentinel(tmp_path)
    srv = _server(fake, {"redis_url": sentinel.url, "on_backend_down": "closed", "key_prefix": "sentinel"})
    try:
        with _client(srv) as client:
            assert _outcomes(client, "rpm", 4) == ["OK", "OK", "OK", "QUOTA_EXCEEDED"]
        assert _metric(srv, "llm_quota_backend_up") == 1
        keys = subprocess.run(
            ["redis-cli", "-p", str(sentinel.master.port), "--scan", "--pattern", "sentinel:*"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.split()  # fmt: skip
        assert any(k.endswith(":minute") for k in keys), keys
    finally:
        srv.stop()
        sentinel.kill()


def test_without_redis_the_same_limits_hold_in_process_memory(fake: FakeUpstream) -> None:
    srv = _server(fake, {})
    try:
        with _client(srv) as client:
            assert _outcomes(client, "rpm", 4) == ["OK", "OK", "OK", "QUOTA_EXCEEDED"]
            assert _outcomes(client, "tpm-direct", 4) == ["OK", "OK", "OK", "QUOTA_EXCEEDED"]
        assert _metric(srv, "llm_quota_rejections_total", caller=ANONYMOUS) == 2
    finally:
        srv.stop()


def test_only_configured_callers_name_a_series() -> None:
    class Sink:
        def quota_refused(self, caller: str, limit: str) -> None: ...
        def quota_backend(self, up: bool) -> None: ...
        def caller_spend(self, caller: str, period: str, spent_usd: float, budget_usd: float) -> None: ...

    config = QuotasConfig(callers={"from-config": QuotasConfig().default})
    gate = QuotaGate(config, Sink())
    assert gate.label(Caller("billing", listed=True)) == "billing"  # named by the tokens file
    assert gate.label(Caller("from-config")) == "from-config"  # a certificate's name the quotas section lists
    assert gate.label(Caller("cn-nobody-configured")) == UNLISTED
    assert gate.label(None) == ANONYMOUS


@pytest.mark.parametrize(
    ("quotas", "named"),
    [
        ({"default": {"routes": {"nowhere": {"requests_per_minute": 1}}}}, "quotas.default.routes: expected names of configured"),
        ({"callers": {"team": {"requests_per_minut": 1}}}, "quotas.callers.team.requests_per_minut: expected one of"),
        ({"default": {"usd_per_day": -1}}, "quotas.default.usd_per_day: expected US dollars, >= 0"),
        ({"on_backend_down": "maybe"}, 'quotas.on_backend_down: expected "open" or "closed"'),
        ({"redis_url": "http://redis:6379"}, "quotas.redis_url: expected a redis://, rediss://, unix:// or redis+sentinel://"),
        ({"redis_url": "redis+sentinel://127.0.0.1:26379"}, "quotas.redis_url: expected a redis://, rediss://, unix://"),
    ],
)
def test_a_bad_quotas_section_stops_the_server_naming_the_key(fake: FakeUpstream, quotas: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        service_config(fake.base_url, quotas=quotas)


def test_a_bad_quota_in_the_tokens_file_names_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(yaml.safe_dump({"tokens": [{"name": "a", "sha256": "0" * 64, "quotas": {"tokens_per_minute": "many"}}]}))
    with pytest.raises(ConfigError, match=re.escape("tokens[0].quotas.tokens_per_minute: expected an integer >= 0")):
        TokenStore(str(path))
