"""OpenTelemetry tracing, proved at a real OTLP receiver: a server exporting to it over gRPC (and
one over HTTP) is called with a caller's traceparent, and what it exported is read back."""

from __future__ import annotations

import ast
import io
import json
import logging
import secrets
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from fake_upstream import FakeUpstream, Script, Usage
from fake_upstream.embeddings import tokens_of
from llm_client import LLMClient, channel_options
from llm_client._proto.llm.v1 import llm_service_pb2 as pb
from llm_service.auth import hash_token
from llm_service.logs import JsonFormatter
from llm_service.tracing import TracingError, TracingSettings
from tests.support.messages import user_msg
from tests.support.otlp import OtlpGrpcReceiver, OtlpHttpReceiver, ReceivedSpan
from tests.support.paths import ROOT
from tests.support.servers import PATHS, SENTINEL_KEY, ServerPath, ServerThread, on_path, service_config

TOKEN = "llmtok-traced-caller-token-0123456789abcdef"
PROMPT = "PROMPT-SENTINEL tell me about tracing"
ANSWER = "ANSWER-SENTINEL spans all the way down"
SERVER_SPAN = "llm.v1.LLMService/{}"
BATCH_DELAY_MS = "20"  # the traced server exports what ended at most this long ago: tests wait on the receiver


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpGrpcReceiver]:
    r = OtlpGrpcReceiver()
    yield r
    r.stop()


@pytest.fixture(scope="module", params=PATHS)
def traced(
    fake: FakeUpstream, receiver: OtlpGrpcReceiver, tmp_path_factory: pytest.TempPathFactory, request: Any
) -> Iterator[ServerThread]:
    """A server exporting to the receiver over OTLP/gRPC, every call sampled, callers with a token."""
    path: ServerPath = request.param
    tokens = tmp_path_factory.mktemp("tokens") / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": [{"name": "tracer", "sha256": hash_token(TOKEN)}]}))
    openai = {"model": "openai/test-model", "api_base": f"{fake.base_url}/v1", "key": {"env": "TEST_PROVIDER_KEY"}}
    anthropic = {"model": "anthropic/claude-test", "api_base": fake.base_url, "key": {"env": "TEST_PROVIDER_KEY"}}
    routes = {
        "forwarding": {**openai, "forward_traceparent": True},
        "forwarding-anthropic": {**anthropic, "forward_traceparent": True},
        "content": {**openai, "trace_content": True},
        "embed": {**openai, "model": "openai/text-embedding-3-small", "embed_batch_size": 2, "embed_concurrency": 2},
        # Refused at once, its breaker open after two failures: every call falls back to openai.
        "fragile": {"model": "openai/test-model", "api_base": "http://127.0.0.1:9/v1", "max_retries": 0, "fallbacks": ["openai"]},
    }
    settings = TracingSettings.from_environ(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_TRACES_SAMPLER": "always_on",
            "OTEL_BSP_SCHEDULE_DELAY": BATCH_DELAY_MS,
        }
    )
    srv = ServerThread(
        on_path(
            service_config(fake.base_url, routes=routes, auth={"tokens_file": str(tokens)}, resilience={"breaker_failures": 2}),
            path,
        ),
        settings,
    )
    yield srv
    srv.stop()


@pytest.fixture
def client(traced: ServerThread) -> Iterator[LLMClient]:
    with LLMClient(traced.target, token=TOKEN, options=channel_options(retries=False)) as c:
        yield c


def _caller() -> tuple[str, str, list[tuple[str, str]]]:
    """A caller's trace id, span id, and the metadata that carries them (with a tracestate and baggage)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, [("traceparent", f"00-{trace_id}-{span_id}-01"), ("tracestate", "caller=1"), ("baggage", "team=a")]


def _exported(receiver: OtlpGrpcReceiver, trace_id: str, rpc: str) -> list[ReceivedSpan]:
    """The trace's spans, once its server span was exported (its batch goes within BATCH_DELAY_MS)."""

    def ended(spans: list[ReceivedSpan]) -> bool:
        return any(s.trace_id == trace_id and s.name == SERVER_SPAN.format(rpc) for s in spans)

    return [s for s in receiver.wait_for(ended) if s.trace_id == trace_id]


def _server_and_attempts(spans: list[ReceivedSpan], rpc: str) -> tuple[ReceivedSpan, list[ReceivedSpan]]:
    server = next(s for s in spans if s.name == SERVER_SPAN.format(rpc))
    attempts = sorted((s for s in spans if s.parent_id == server.span_id), key=lambda s: s.raw.start_time_unix_nano)
    return server, attempts


def test_a_call_continues_the_callers_trace_with_an_attempt_span_per_upstream_request(
    traced: ServerThread, receiver: OtlpGrpcReceiver, client: LLMClient, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    fake.script(
        Script(status=429, headers={"retry-after-ms": "37"}),
        Script(text=ANSWER, usage=Usage(input=21, output=8), finish_reason="stop"),
    )
    trace_id, caller_span, metadata = _caller()
    lines = io.StringIO()
    engine_log = logging.StreamHandler(lines)
    engine_log.setFormatter(JsonFormatter())
    logging.getLogger("llm_service.core.engine").addHandler(engine_log)
    try:
        with caplog.at_level(logging.INFO, logger="llm_service"):
            request = pb.CompleteRequest(model="openai", messages=[user_msg(PROMPT)])
            client.stub.Complete(request, metadata=metadata, timeout=10)
    finally:
        logging.getLogger("llm_service.core.engine").removeHandler(engine_log)
    spans = _exported(receiver, trace_id, "Complete")
    server, attempts = _server_and_attempts(spans, "Complete")

    # The server span: a child of the caller's span, with the gRPC server span's attributes.
    assert server.parent_id == caller_span and server.raw.kind == server.raw.SPAN_KIND_SERVER
    a = server.attributes
    assert (a["rpc.system"], a["rpc.service"], a["rpc.method"], a["rpc.grpc.status_code"]) == (
        "grpc",
        "llm.v1.LLMService",
        "Complete",
        0,
    )
    assert a["server.port"] == traced.port and a["network.peer.address"] == "127.0.0.1" and a["network.peer.port"] > 0
    assert (a["llm_service.route"], a["llm_service.caller"]) == ("openai", "tracer")
    assert server.raw.status.code == server.raw.status.STATUS_CODE_UNSET

    # One attempt span per upstream request: the 429, then the answer, with what the fake reported.
    assert len(attempts) == len(fake.requests()) == 2
    limited, answered = (s.attributes for s in attempts)
    assert [s.name for s in attempts] == ["chat test-model"] * 2 and all(s.raw.kind == s.raw.SPAN_KIND_CLIENT for s in attempts)
    assert (limited["error.type"], limited["http.response.status_code"], limited["llm_service.attempt"]) == (
        "UPSTREAM_RATE_LIMITED",
        429,
        1,
    )
    assert attempts[0].raw.status.code == attempts[0].raw.status.STATUS_CODE_ERROR
    reported = fake.requests()[1].extra["usage"]
    assert answered == answered | {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "test-model",
        "gen_ai.response.model": "test-model",
        "gen_ai.usage.input_tokens": reported["input"],
        "gen_ai.usage.output_tokens": reported["output"],
        "gen_ai.response.finish_reasons": ("stop",),
        "http.response.status_code": 200,
        "llm_service.route": "openai",
        "llm_service.attempt": 2,
    }
    assert "error.type" not in answered
    # The wait between them: a retry event on the server span, with the delay the upstream asked for.
    assert server.events("retry") == [{"reason": "rate_limit", "delay_s": 0.037, "route": "openai"}]
    assert attempts[0].raw.end_time_unix_nano <= attempts[1].raw.start_time_unix_nano

    # The RPC's log line names the trace and the server span.
    line = next(r for r in caplog.records if r.getMessage() == "rpc" and getattr(r, "trace_id", "") == trace_id)
    assert line.span_id == server.span_id  # type: ignore[attr-defined]
    # So does every line logged while serving it (the retry's, here).
    (retrying,) = [json.loads(x) for x in lines.getvalue().splitlines() if json.loads(x)["msg"] == "retrying"]
    assert (retrying["trace_id"], retrying["span_id"]) == (trace_id, server.span_id)

    # Nothing recorded holds the prompt, the answer, the provider key or the client's token.
    recorded = repr([(s.attributes, [e.attributes for e in s.raw.events], s.resource) for s in spans])
    for secret in (PROMPT, ANSWER, "PROMPT-SENTINEL", "ANSWER-SENTINEL", SENTINEL_KEY, TOKEN):
        assert secret not in recorded

    # The latency histogram links to the trace: an exemplar in the OpenMetrics exposition.
    assert traced.running is not None
    scrape = urllib.request.Request(
        f"http://127.0.0.1:{traced.running.metrics_port}/metrics", headers={"Accept": "application/openmetrics-text"}
    )
    with urllib.request.urlopen(scrape, timeout=5) as resp:
        families = list(text_string_to_metric_families(resp.read().decode()))
    exemplars = [
        s.exemplar.labels["trace_id"]
        for f in families
        if f.name == "llm_request_duration_seconds"
        for s in f.samples
        if s.exemplar is not None
    ]
    assert trace_id in exemplars


def test_a_call_without_a_traceparent_starts_a_new_trace(
    traced: ServerThread, receiver: OtlpGrpcReceiver, client: LLMClient, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="llm_service.rpc"):
        client.count_tokens("openai", [user_msg()])
    line = next(r for r in reversed(caplog.records) if r.getMessage() == "rpc" and getattr(r, "rpc", "") == "CountTokens")
    server, attempts = _server_and_attempts(_exported(receiver, line.trace_id, "CountTokens"), "CountTokens")  # type: ignore[attr-defined]
    assert server.parent_id == "" and server.span_id == line.span_id and attempts == []  # type: ignore[attr-defined]


def _slow_stream(client: LLMClient, fake: FakeUpstream, timeout_s: float) -> tuple[str, Any]:
    """A traced Stream call whose answer takes 10 s, and its trace id."""
    fake.script(Script(text="word " * 200, chunk_delay_s=0.05))
    trace_id, _, metadata = _caller()
    request = pb.StreamRequest(model="openai", messages=[user_msg()])
    return trace_id, client.stub.Stream(request, metadata=metadata, timeout=timeout_s)


def test_a_cancelled_streams_spans_end_with_their_status_at_once(
    traced: ServerThread, receiver: OtlpGrpcReceiver, client: LLMClient, fake: FakeUpstream
) -> None:
    trace_id, call = _slow_stream(client, fake, timeout_s=10)
    next(call)  # the stream is under way
    cancelled_ns = time.time_ns()
    call.cancel()
    server, attempts = _server_and_attempts(_exported(receiver, trace_id, "Stream"), "Stream")
    assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0]
    assert server.raw.end_time_unix_nano - cancelled_ns < 100_000_000
    (attempt,) = attempts
    assert attempt.attributes["error.type"] == "cancelled" and attempt.raw.status.code == attempt.raw.status.STATUS_CODE_ERROR
    assert attempt.raw.end_time_unix_nano - cancelled_ns < 100_000_000
    # Its first chunk came: an event at that moment, its delay an attribute.
    (first,) = attempt.events("first_token")
    assert first["gen_ai.response.time_to_first_chunk"] == attempt.attributes["gen_ai.response.time_to_first_chunk"] > 0


def test_a_stream_past_its_deadline_ends_its_spans_with_the_deadlines_status(
    traced: ServerThread, receiver: OtlpGrpcReceiver, client: LLMClient, fake: FakeUpstream
) -> None:
    trace_id, call = _slow_stream(client, fake, timeout_s=0.3)
    with pytest.raises(grpc.RpcError) as info:
        list(call)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    server, (attempt,) = _server_and_attempts(_exported(receiver, trace_id, "Stream"), "Stream")
    assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert (server.raw.status.code, server.attributes["error.type"]) == (server.raw.status.STATUS_CODE_ERROR, "DEADLINE_EXCEEDED")
    assert attempt.raw.status.code == attempt.raw.status.STATUS_CODE_ERROR and attempt.attributes["error.type"]
    assert attempt.raw.end_time_unix_nano <= server.raw.end_time_unix_nano


@pytest.mark.parametrize("route", ["forwarding", "forwarding-anthropic"])
def test_the_upstream_request_carries_the_attempts_traceparent_only_where_the_route_says(
    route: str, traced: ServerThread, receiver: OtlpGrpcReceiver, client: LLMClient, fake: FakeUpstream
) -> None:
    """On both transports (the traced server runs once per path), OpenAI's wire and Anthropic's."""
    trace_id, _, metadata = _caller()
    client.stub.Complete(pb.CompleteRequest(model=route, messages=[user_msg()]), metadata=metadata, timeout=10)
    client.stub.Complete(pb.CompleteRequest(model="openai", messages=[user_msg()]), metadata=metadata, timeout=10)
    forwarded, plain = ({k.lower(): v for k, v in r.headers.items()} for r in fake.requests())
    _, attempts = _server_and_attempts(
        [s for s in _exported(receiver, trace_id, "Complete") if s.attributes.get("llm_service.route") != "openai"],
        "Complete",
    )
    (attempt,) = attempts
    assert forwarded["traceparent"] == f"00-{trace_id}-{attempt.span_id}-01"
    assert forwarded["tracestate"] == "caller=1" and "baggage" not in forwarded
    assert not {"traceparent", "tracestate", "baggage"} & set(plain)


def test_fallbacks_and_breaker_refusals_are_events_on_the_server_span(
    traced: ServerThread, receiver: OtlpGrpcReceiver, client: LLMClient, fake: FakeUpstream
) -> None:
    servers = []
    for _ in range(3):
        trace_id, _, metadata = _caller()
        client.stub.Complete(pb.CompleteRequest(model="fragile", messages=[user_msg()]), metadata=metadata, timeout=10)
        servers.append(_server_and_attempts(_exported(receiver, trace_id, "Complete"), "Complete"))
    for server, attempts in servers:
        assert server.events("fallback") == [{"from_route": "fragile", "to_route": "openai"}]
        assert attempts[-1].attributes["llm_service.route"] == "openai" and "error.type" not in attempts[-1].attributes
    # Two attempts refused by the upstream opened the breaker; the third call's attempt it refused.
    assert [[a.attributes.get("error.type") for a in attempts[:-1]] for _, attempts in servers] == [
        ["UPSTREAM_UNAVAILABLE"],
        ["UPSTREAM_UNAVAILABLE"],
        [],
    ]
    assert [len(server.events("breaker_refused")) for server, _ in servers] == [0, 0, 1]
    (refused,) = servers[2][0].events("breaker_refused")
    assert refused["route"] == "fragile" and 0 < refused["retry_after_s"] <= 30


def test_an_embed_calls_batches_are_attempt_spans_side_by_side_under_its_server_span(
    traced: ServerThread, receiver: OtlpGrpcReceiver, client: LLMClient, fake: FakeUpstream
) -> None:
    trace_id, caller_span, metadata = _caller()
    request = pb.EmbedRequest(model="embed", inputs=[pb.EmbedInput(text=f"text {i}") for i in range(5)])
    client.stub.Embed(request, metadata=metadata, timeout=10)
    server, attempts = _server_and_attempts(_exported(receiver, trace_id, "Embed"), "Embed")
    assert server.parent_id == caller_span and len(attempts) == len(fake.requests("/embeddings")) == 3
    billed = sorted(tokens_of(r.body["input"]) for r in fake.requests("/embeddings"))  # what the fake billed each
    assert sorted(s.attributes["gen_ai.usage.input_tokens"] for s in attempts) == billed
    for attempt in attempts:
        a = attempt.attributes
        assert attempt.name == "embeddings text-embedding-3-small" and a["gen_ai.operation.name"] == "embeddings"
        assert (a["gen_ai.response.model"], a["http.response.status_code"]) == ("text-embedding-3-small", 200)
        assert "error.type" not in a and attempt.raw.status.code == attempt.raw.status.STATUS_CODE_UNSET


def test_prompts_and_answers_are_recorded_only_on_a_route_that_opts_in(
    traced: ServerThread, receiver: OtlpGrpcReceiver, client: LLMClient, fake: FakeUpstream
) -> None:
    fake.script(Script(text=ANSWER))
    trace_id, _, metadata = _caller()
    request = pb.CompleteRequest(model="content", messages=[user_msg(PROMPT)], system="SYSTEM-SENTINEL")
    client.stub.Complete(request, metadata=metadata, timeout=10)
    server, (attempt,) = _server_and_attempts(_exported(receiver, trace_id, "Complete"), "Complete")
    a = attempt.attributes
    assert json.loads(a["gen_ai.input.messages"]) == [{"role": "user", "parts": [{"type": "text", "content": PROMPT}]}]
    assert json.loads(a["gen_ai.system_instructions"]) == [{"type": "text", "content": "SYSTEM-SENTINEL"}]
    assert json.loads(a["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": ANSWER}], "finish_reason": "stop"}
    ]
    assert PROMPT not in repr(server.attributes) and SENTINEL_KEY not in repr(a)


def test_spans_go_over_otlp_http_and_the_last_ones_leave_when_the_server_stops(fake: FakeUpstream) -> None:
    """The batch delay is left at the SDK's 5 s: the spans arrive because the drain flushed them."""
    receiver = OtlpHttpReceiver()
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "llm-gateway-test",
    }
    srv = ServerThread(service_config(fake.base_url), TracingSettings.from_environ(environ))
    try:
        trace_id, caller_span, metadata = _caller()
        with LLMClient(srv.target, options=channel_options(retries=False)) as c:
            c.stub.Complete(pb.CompleteRequest(model="anthropic", messages=[user_msg()]), metadata=metadata, timeout=10)
    finally:
        srv.stop()
    spans = [s for s in receiver.spans() if s.trace_id == trace_id]
    receiver.stop()
    server, (attempt,) = _server_and_attempts(spans, "Complete")
    assert server.parent_id == caller_span and server.resource["service.name"] == "llm-gateway-test"
    assert (attempt.name, attempt.attributes["gen_ai.provider.name"]) == ("chat claude-test", "anthropic")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, None),  # nothing names where spans go
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_SDK_DISABLED": "true"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_TRACES_EXPORTER": "none"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, ("grpc", "http://c:4317", "parentbased_always_on", 1.0)),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ("grpc", "http://localhost:4317", "parentbased_always_on", 1.0)),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            ("http/protobuf", "http://c:4318/v1/traces", "parentbased_always_on", 1.0),
        ),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c/t", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"},
            ("http/protobuf", "http://c/t", "parentbased_always_on", 1.0),
        ),
        (
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "0.25",
            },
            ("grpc", "http://localhost:4317", "parentbased_traceidratio", 0.25),
        ),
    ],
)
def test_tracing_is_configured_by_the_standard_otel_variables_and_off_without_them(
    environ: dict[str, str], expected: tuple[str, str, str, float] | None
) -> None:
    settings = TracingSettings.from_environ(environ)
    got = None if settings is None else (settings.protocol, settings.endpoint, settings.sampler, settings.sampler_ratio)
    assert got == expected


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
            "OTEL_TRACES_SAMPLER_ARG",
        ),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_BSP_SCHEDULE_DELAY": "soon"}, "OTEL_BSP_SCHEDULE_DELAY"),
    ],
)
def test_a_bad_otel_variable_is_refused_naming_it(environ: dict[str, str], named: str) -> None:
    with pytest.raises(TracingError, match=f"^{named}: expected"):
        TracingSettings.from_environ(environ)


def test_without_tracing_the_server_never_imports_opentelemetry() -> None:
    """Start-up pays nothing for tracing when it is off: no module of the server imports
    OpenTelemetry at its top level (tracing.py imports the SDK only when tracing starts)."""
    importers = []
    for path in sorted((ROOT / "service/llm_service").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] == "opentelemetry" for n in names):
                importers.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert importers == []
    assert TracingSettings.from_environ({}) is None


@pytest.mark.parametrize("path", PATHS)
def test_a_call_the_sampler_leaves_out_exports_nothing_yet_logs_its_trace_id_and_forwards_its_context(
    path: ServerPath, fake: FakeUpstream, receiver: OtlpGrpcReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    """parentbased_always_on (the default) under a caller's unsampled trace: no span is recorded
    (the call builds none), the log line still names the trace, and a route that forwards the
    trace context sends it on unsampled (flags 00), on both transports."""
    openai = {"model": "openai/test-model", "api_base": f"{fake.base_url}/v1", "key": {"env": "TEST_PROVIDER_KEY"}}
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": BATCH_DELAY_MS}
    settings = TracingSettings.from_environ(environ)
    routes = {"forwarding": {**openai, "forward_traceparent": True}}
    srv = ServerThread(on_path(service_config(fake.base_url, routes=routes), path), settings)
    try:
        with LLMClient(srv.target, options=channel_options(retries=False)) as c:
            unsampled, caller_span = secrets.token_hex(16), secrets.token_hex(8)
            with caplog.at_level(logging.INFO, logger="llm_service.rpc"):
                request = pb.CompleteRequest(model="forwarding", messages=[user_msg()])
                c.stub.Complete(request, metadata=[("traceparent", f"00-{unsampled}-{caller_span}-00")], timeout=10)
            sampled, _, metadata = _caller()
            c.stub.Complete(pb.CompleteRequest(model="openai", messages=[user_msg()]), metadata=metadata, timeout=10)
        _, trace, parent, flags = {k.lower(): v for k, v in fake.requests()[0].headers.items()}["traceparent"].split("-")
        assert (trace, flags) == (unsampled, "00") and parent != caller_span
        line = next(r for r in caplog.records if r.getMessage() == "rpc" and getattr(r, "rpc", "") == "Complete")
        assert line.trace_id == unsampled  # type: ignore[attr-defined]
        _exported(receiver, sampled, "Complete")  # the later, sampled call's spans are in: the first's would be too
        assert not [s for s in receiver.spans() if s.trace_id == unsampled]
    finally:
        srv.stop()
