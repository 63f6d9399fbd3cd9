"""Prometheus metrics, scraped over HTTP from a real server, compared with what the fake upstream saw."""

from __future__ import annotations

import json
import time
from collections import Counter as Tally
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from fake_upstream import FakeUpstream, Script, Usage
from llm_client import LLMClient, LLMServiceError, channel_options, pb
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc
from tests.support.messages import user_msg
from tests.support.metrics import Samples, scrape, total
from tests.support.servers import ServerProcess, ServerThread, custom_server, free_port


def _port(srv: ServerThread) -> int:
    assert srv.running is not None
    return srv.running.metrics_port


WEATHER = pb.Tool(name="get_weather", parameters_json='{"type": "object", "properties": {"city": {"type": "string"}}}')
NO_TOOL_ENDPOINTS = Script(status=404, error={"message": "No endpoints found that support tool use (provider routing)"})


def test_token_and_retry_counters_equal_what_the_upstream_reported(fake: FakeUpstream) -> None:
    fake.script(
        Script(status=429, times=2),
        Script(text="after rate limits", usage=Usage(input=100, output=20, cached=30)),
        Script(status=503),
        Script(text="after a 503", usage=Usage(input=10, output=5)),
        Script(text="", usage=Usage(input=40, output=0)),
        Script(text="after an empty answer", usage=Usage(input=40, output=9, reasoning=4)),
    )
    with custom_server(fake) as (srv, c):
        for _ in range(3):
            c.complete("openai", [user_msg()], timeout=30)
        fake.script(
            Script(text="", usage=Usage(input=50, output=0)),
            Script(text="streamed", usage=Usage(input=50, output=10, cached=5, cache_creation=3)),
        )
        list(c.stream("anthropic", [user_msg()], timeout=30))
        fake.script(NO_TOOL_ENDPOINTS, Script(text='{"assistant_response": "ok", "tool_calls": []}', usage=Usage(7, 3)))
        c.complete("openrouter", [user_msg()], tools=[WEATHER], timeout=30)
        samples = scrape(_port(srv))

    seen = fake.requests()
    # Token truth: the usage each upstream answer reported (including the empty ones that were retried).
    truth: Tally[tuple[str, str]] = Tally()
    route_of_path = {"/v1/chat/completions": "openai", "/v1/messages": "anthropic", "/api/v1/chat/completions": "openrouter"}
    for r in seen:
        if "usage" in r.extra:
            u = r.extra["usage"]
            route = route_of_path[r.path]
            for kind, key in (("input", "input"), ("output", "output"), ("cached_input", "cached")):
                truth[(route, kind)] += u[key]
            truth[(route, "cache_creation")] += u["cache_creation"] if route == "anthropic" else 0
            truth[(route, "reasoning")] += u["reasoning"]
    for (route, kind), value in truth.items():
        assert total(samples, "llm_tokens_total", route=route, kind=kind) == value, (route, kind)
    assert total(samples, "llm_tokens_total") == sum(truth.values())

    # Retry truth: every upstream answer that was not the last of its call was retried, for its reason.
    expected = Tally()
    for r in seen:
        if r.extra["status"] == 429:
            expected["rate_limit"] += 1
        elif r.extra["status"] >= 500:
            expected["transient"] += 1
        elif r.extra["status"] == 404:
            expected["tool_compat"] += 1
        elif r.extra["empty"]:
            expected["empty_stream" if r.extra["stream"] else "empty_response"] += 1
    assert expected == {"rate_limit": 2, "transient": 1, "tool_compat": 1, "empty_response": 1, "empty_stream": 1}
    for reason, count in expected.items():
        assert total(samples, "llm_retries_total", reason=reason) == count, reason
    assert total(samples, "llm_retries_total") == len(seen) - 5, "five calls: every other upstream request was a retry"
    assert total(samples, "llm_upstream_attempts_sum") == len(seen)
    assert total(samples, "llm_upstream_attempts_count") == 5


def test_request_stream_error_and_grpc_series(fake: FakeUpstream) -> None:
    fake.script(Script(text="one two three", chunk_delay_s=0.05), Script(status=401))
    with custom_server(fake) as (srv, c):
        list(c.stream("openai", [user_msg()], timeout=30))
        with pytest.raises(LLMServiceError):
            c.complete("openai", [user_msg()], timeout=30)
        c.models()
        samples = scrape(_port(srv))
    assert total(samples, "llm_requests_total", rpc="Stream", route="openai", provider="openai", code="OK") == 1
    assert total(samples, "llm_requests_total", rpc="Complete", route="openai", code="FAILED_PRECONDITION") == 1
    assert total(samples, "llm_errors_total", route="openai", reason="UPSTREAM_AUTH_FAILED") == 1
    assert total(samples, "llm_request_duration_seconds_count", rpc="Stream", route="openai") == 1
    assert total(samples, "llm_time_to_first_token_seconds_count", route="openai") == 1
    assert total(samples, "llm_stream_events_total", route="openai", type="text_delta") == 3
    assert total(samples, "llm_stream_events_total", route="openai", type="finish") == 1
    assert total(samples, "llm_inflight_requests") == 0
    service = "llm.v1.LLMService"
    assert total(samples, "grpc_server_started_total", grpc_service=service, grpc_method="Stream", grpc_type="server_stream") == 1
    assert total(samples, "grpc_server_handled_total", grpc_method="Complete", grpc_code="FAILED_PRECONDITION") == 1
    assert total(samples, "grpc_server_handled_total", grpc_method="ListModels", grpc_code="OK") == 1
    assert total(samples, "grpc_server_handling_seconds_count", grpc_method="Stream") == 1
    assert total(samples, "grpc_server_msg_sent_total", grpc_method="Stream") == 5
    [(_, labels)] = [k for k in samples if k[0] == "llm_service_build_info"]
    assert dict(labels)["litellm_version"] == "1.106.0" and dict(labels)["version"]


def test_calls_the_caller_ended_are_counted_as_the_caller_saw_them(fake: FakeUpstream) -> None:
    """A cancelled call is CANCELLED and a passed deadline DEADLINE_EXCEEDED, in both series; no _created series."""
    fake.script(Script(first_byte_delay_s=30), Script(first_byte_delay_s=30), Script(first_byte_delay_s=30))
    with custom_server(fake) as (srv, _):
        with grpc.insecure_channel(srv.target) as channel:
            stub = pb_grpc.LLMServiceStub(channel)
            stream = stub.Stream(pb.StreamRequest(model="openai", messages=[user_msg()]), timeout=30)
            fake.wait_for(lambda rs: len(rs) == 1)
            stream.cancel()
            unary = stub.Complete.future(pb.CompleteRequest(model="openai", messages=[user_msg()]), timeout=30)
            fake.wait_for(lambda rs: len(rs) == 2)
            unary.cancel()
            with pytest.raises(grpc.RpcError) as late:
                stub.Complete(pb.CompleteRequest(model="openai", messages=[user_msg()]), timeout=0.5)
            assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        samples = _wait_for_handled(srv, 3)
    handled = {
        dict(ls)["grpc_method"] + ":" + dict(ls)["grpc_code"]: v
        for (n, ls), v in samples.items()
        if n == "grpc_server_handled_total" and dict(ls)["grpc_service"] == "llm.v1.LLMService"
    }
    assert handled == {"Stream:CANCELLED": 1, "Complete:CANCELLED": 1, "Complete:DEADLINE_EXCEEDED": 1}
    assert total(samples, "llm_requests_total", rpc="Stream", code="CANCELLED") == 1
    assert total(samples, "llm_requests_total", rpc="Complete", code="CANCELLED") == 1
    assert total(samples, "llm_requests_total", rpc="Complete", code="DEADLINE_EXCEEDED") == 1
    assert not [n for n, _ in samples if n.endswith("_created")]


def _wait_for_handled(srv: ServerThread, calls: int) -> Samples:
    deadline = time.monotonic() + 5
    while True:
        samples = scrape(_port(srv))
        done = total(samples, "grpc_server_handled_total", grpc_service="llm.v1.LLMService")
        if done >= calls or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def test_label_values_come_from_the_configuration_only(fake: FakeUpstream) -> None:
    attacker_names = ["no-such-route", "x" * 500, "user-1234-request-abcd"]
    with custom_server(fake) as (srv, c):
        for name in attacker_names:
            with pytest.raises(LLMServiceError) as info:
                c.complete(name, [user_msg()], timeout=30)
            assert info.value.code == grpc.StatusCode.NOT_FOUND
        c.complete("openai", [user_msg()], metadata={"user": "alice", "request_id": "r-42"}, timeout=30)
        samples = scrape(_port(srv))
        assert srv.running is not None
        routes = set(srv.running.config.routes)
    values = {v for (_, labels) in samples for (_, v) in labels}
    assert not values & set(attacker_names), "an unknown route never becomes a label value"
    assert "alice" not in values and "r-42" not in values
    route_values = {v for (_, labels) in samples for (k, v) in labels if k == "route"}
    assert route_values <= routes
    assert total(samples, "grpc_server_handled_total", grpc_method="Complete", grpc_code="NOT_FOUND") == 3


# --- several worker processes ----------------------------------------------------------------------


@pytest.fixture
def workers(fake: FakeUpstream, tmp_path: Path) -> Iterator[list[tuple[str, int]]]:
    """Two server processes sharing one PROMETHEUS_MULTIPROC_DIR, as workers of one pod would."""
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    route = {"model": "openai/test-model", "api_base": f"{fake.base_url}/v1", "key": {"env": "TEST_PROVIDER_KEY"}}
    servers = [
        ServerProcess(
            {"routes": {"openai": route}, "server": {"drain_grace_s": 1}}, tmp_path, PROMETHEUS_MULTIPROC_DIR=str(multiproc)
        )
        for _ in range(2)
    ]
    try:
        yield [(s.target, s.metrics_port) for s in servers]
    finally:
        for s in servers:
            s.stop()


def test_metrics_sum_over_worker_processes(workers: list[tuple[str, int]], fake: FakeUpstream) -> None:
    fake.script(Script(text="a", usage=Usage(input=3, output=1)), Script(text="b", usage=Usage(input=5, output=2)))
    for target, _ in workers:
        with LLMClient(target, options=channel_options(retries=False)) as c:
            c.complete("openai", [user_msg()], timeout=30)
    for _, metrics_port in workers:  # either worker's /metrics shows both workers' calls
        samples = scrape(metrics_port)
        assert total(samples, "llm_requests_total", rpc="Complete", code="OK") == 2
        assert total(samples, "llm_tokens_total", kind="input") == 8
        assert total(samples, "llm_inflight_requests") == 0


def test_metrics_listen_is_configurable_and_can_be_off(fake: FakeUpstream) -> None:
    with custom_server(fake, server={"metrics_listen": ""}) as (srv, c):
        assert srv.running is not None and srv.running.metrics_port == 0
        c.models()
    port = free_port()
    with custom_server(fake, server={"metrics_listen": f"127.0.0.1:{port}"}) as (srv, _):
        assert "llm_service_build_info" in json.dumps([k[0] for k in scrape(port)])
