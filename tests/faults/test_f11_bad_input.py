"""Fault 11: malformed requests each get their documented status, and the server keeps serving."""

from __future__ import annotations

import json
import time
from typing import Any

import grpc
import pytest

from fake_upstream import FakeUpstream
from llm_client import error_from_rpc, pb
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc
from tests.support.messages import user_msg
from tests.support.servers import ServerThread, service_config

INVALID = grpc.StatusCode.INVALID_ARGUMENT
LIMITS = {"max_request_bytes": 64 * 1024, "max_messages": 50, "max_tools": 8, "max_tokens": 32_000}


@pytest.fixture(scope="module")
def limited(fake: FakeUpstream) -> Any:
    srv = ServerThread(service_config(fake.base_url, limits=LIMITS))
    yield srv
    srv.stop()


def _tool(name: str, schema: str = '{"type": "object", "properties": {}}') -> pb.Tool:
    return pb.Tool(name=name, parameters_json=schema)


CASES: list[tuple[str, dict[str, Any], grpc.StatusCode, str, str]] = [
    ("empty request", {"model": ""}, INVALID, "INVALID_REQUEST", "model"),
    ("no messages", {"messages": []}, INVALID, "INVALID_REQUEST", "messages"),
    ("unknown route", {"model": "no-such-route"}, grpc.StatusCode.NOT_FOUND, "ROUTE_NOT_FOUND", ""),
    (
        "schema of the wrong type",
        {"tools": [_tool("t", '{"type": "object", "properties": ["a", "b"]}')]},
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        "tools[0].parameters_json",
    ),
    (
        "schema not JSON",
        {"tools": [_tool("t", "{nope")]},
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        "tools[0].parameters_json",
    ),
    (
        "tool result before any tool call",
        {"messages": [pb.Message(role=pb.ROLE_TOOL, tool_call_id="call_1", parts=[pb.ContentPart(text="42")])]},
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        "messages[0].tool_call_id",
    ),
    ("huge max_tokens", {"max_tokens": 10_000_000}, INVALID, "INVALID_REQUEST", "max_tokens"),
    ("too many messages", {"messages": [user_msg()] * 51}, INVALID, "INVALID_REQUEST", "messages"),
    (
        "too many tools",
        {"tools": [_tool(f"t{i}") for i in range(9)]},
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        "tools",
    ),
    ("oversized", {"messages": [user_msg("x" * 100_000)]}, grpc.StatusCode.RESOURCE_EXHAUSTED, "", ""),
    # Nesting is bounded (limits.max_json_depth) and checked without recursion: 900 and 10,000
    # levels answered INTERNAL (Python's recursion limit) before.
    (
        "tool schema nested 900 deep",
        {"tools": [_tool("t", '{"a":' * 900 + "1" + "}" * 900)]},
        INVALID,
        "INVALID_REQUEST",
        "tools[0].parameters_json",
    ),
    (
        "tool schema nested 10,000 deep",
        {"tools": [_tool("t", "[" * 10_000 + "]" * 10_000)]},
        INVALID,
        "INVALID_REQUEST",
        "tools[0].parameters_json",
    ),
    (
        "tool-call arguments nested 900 deep",
        {
            "messages": [
                user_msg(),
                pb.Message(
                    role=pb.ROLE_ASSISTANT,
                    tool_calls=[pb.ToolCall(id="c1", name="t", arguments_json='{"a":' * 900 + "1" + "}" * 900)],
                ),
            ]
        },
        INVALID,
        "INVALID_REQUEST",
        "messages[1].tool_calls[0].arguments_json",
    ),
    (
        "response schema nested 900 deep",
        {"response_format": pb.ResponseFormat(json_schema='{"a":' * 900 + "1" + "}" * 900)},
        INVALID,
        "INVALID_REQUEST",
        "response_format.json_schema",
    ),
    (
        "schema with NaN",
        {"tools": [_tool("t", '{"type": "object", "properties": {}, "default": NaN}')]},
        INVALID,
        "INVALID_REQUEST",
        "tools[0].parameters_json",
    ),
    ("tool name with a newline", {"tools": [_tool("ok\n")]}, INVALID, "INVALID_REQUEST", "tools[0].name"),
    (
        "too many parts",
        {"messages": [pb.Message(role=pb.ROLE_USER, parts=[pb.ContentPart(text="a")] * 1001)]},
        INVALID,
        "INVALID_REQUEST",
        "messages[0].parts",
    ),
    (
        "too many tool calls",
        {
            "messages": [
                user_msg(),
                pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=[pb.ToolCall(id=f"c{i}", name="t") for i in range(257)]),
            ]
        },
        INVALID,
        "INVALID_REQUEST",
        "messages[1].tool_calls",
    ),
    ("too many stop sequences", {"stop_sequences": ["x"] * 17}, INVALID, "INVALID_REQUEST", "stop_sequences"),
]


@pytest.mark.parametrize(("case", "fields", "code", "reason", "field"), CASES, ids=[c[0] for c in CASES])
def test_f11_bad_input_gets_its_documented_status(
    limited: ServerThread, fake: FakeUpstream, case: str, fields: dict[str, Any], code: grpc.StatusCode, reason: str, field: str
) -> None:
    request = {"model": "openai", "messages": [user_msg()], **fields}
    with grpc.insecure_channel(limited.target) as channel:
        stub = pb_grpc.LLMServiceStub(channel)
        for rpc in (stub.Complete, stub.Stream):
            message = (pb.CompleteRequest if rpc is stub.Complete else pb.StreamRequest)(**request)
            with pytest.raises(grpc.RpcError) as info:
                result = rpc(message, timeout=10)
                if rpc is stub.Stream:
                    list(result)
            err = error_from_rpc(info.value)
            assert err.code == code, (case, err)
            assert err.reason == reason
            if field:
                assert err.field_violations[0][0] == field
            if case in ("huge max_tokens", "too many messages", "too many tools", "too many parts", "too many stop sequences"):
                assert "limits." in err.message, "the message names the limit"
            if case == "oversized":
                assert "larger than max" in err.message.lower()
        # The server keeps serving after each.
        assert stub.Complete(pb.CompleteRequest(model="openai", messages=[user_msg()]), timeout=10).text
    assert all(r.extra.get("status") == 200 for r in fake.requests()), "nothing malformed reached the upstream"


CORRUPT = [b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x12\x80\x80\x80\x80\x10", b"\x0a\x02\xc3\x28"]


@pytest.mark.parametrize("method", ["Complete", "Stream", "CountTokens"])
@pytest.mark.parametrize("data", CORRUPT, ids=["garbage", "truncated", "huge-length", "bad-utf8"])
def test_f11_undecodable_request_bytes_are_invalid_argument_in_plain_words(
    server: ServerThread, method: str, data: bytes
) -> None:
    with grpc.insecure_channel(server.target) as channel:
        kind = channel.unary_stream if method == "Stream" else channel.unary_unary
        call = kind(f"/llm.v1.LLMService/{method}", request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as info:
            result = call(data, timeout=10)
            if method == "Stream":
                list(result)
    err = error_from_rpc(info.value)
    assert err.code == INVALID and err.reason == "INVALID_REQUEST", err
    assert "not a valid message" in err.message
    for word in ("DecodeError", "class", "protobuf", "Traceback"):
        assert word not in err.message


def test_f11_a_large_request_is_decoded_off_the_loop_and_served(server: ServerThread, fake: FakeUpstream) -> None:
    from fake_upstream import Script

    fake.script(Script(text="read it all"))
    text = "x" * (1024 * 1024)  # over the size parsed in a worker thread
    with grpc.insecure_channel(server.target) as channel:
        answer = pb_grpc.LLMServiceStub(channel).Complete(
            pb.CompleteRequest(model="openai", messages=[user_msg(text)]), timeout=30
        )
        corrupt = b"\x0a\x06openai\x12" + b"\xff" * (1024 * 1024)
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/llm.v1.LLMService/Complete")(corrupt, timeout=10)
    assert answer.text == "read it all"
    assert fake.requests()[0].body["messages"][0]["content"] == text
    assert info.value.code() == INVALID


COUNT_CASES = [
    ("too many messages", {"messages": [user_msg()] * 51}, "messages"),
    ("too many tools", {"tools": [_tool(f"t{i}") for i in range(9)]}, "tools"),
    ("tool schema nested 10,000 deep", {"tools": [_tool("t", "[" * 10_000 + "]" * 10_000)]}, "tools[0].parameters_json"),
    ("tool name with a newline", {"tools": [_tool("ok\n")]}, "tools[0].name"),
]


@pytest.mark.parametrize(("case", "fields", "field"), COUNT_CASES, ids=[c[0] for c in COUNT_CASES])
def test_f11_count_tokens_is_under_the_same_limits_as_complete(
    limited: ServerThread, case: str, fields: dict[str, Any], field: str
) -> None:
    request = pb.CountTokensRequest(**{"model": "openai", "messages": [user_msg()], **fields})
    with grpc.insecure_channel(limited.target) as channel, pytest.raises(grpc.RpcError) as info:
        pb_grpc.LLMServiceStub(channel).CountTokens(request, timeout=10)
    err = error_from_rpc(info.value)
    assert (err.code, err.reason, err.field_violations[0][0]) == (INVALID, "INVALID_REQUEST", field), (case, err)


def test_f11_concurrent_large_requests_stay_within_the_memory_budget(fake: FakeUpstream, tmp_path: Any) -> None:
    """8 concurrent 12 MiB requests against a 40 MiB budget: three are held (36 MiB), the rest are
    refused at once with RESOURCE_EXHAUSTED naming the limit; the server's RSS growth is printed."""
    import threading

    from fake_upstream import Script
    from tests.support.servers import ServerProcess

    routes = {"openai": {"model": "openai/test-model", "api_base": f"{fake.base_url}/v1", "key": {"env": "TEST_PROVIDER_KEY"}}}
    limits = {"max_request_bytes": 16 * 1024 * 1024, "max_inflight_request_bytes": 40 * 1024 * 1024}
    fake.script(Script(text="held", first_byte_delay_s=3, times=8))
    server = ServerProcess({"routes": routes, "limits": limits}, tmp_path)
    rss = lambda: int(open(f"/proc/{server.pid}/statm").read().split()[1]) * 4096  # noqa: E731
    before = rss()
    outcomes: list[str] = []
    request = pb.CompleteRequest(model="openai", messages=[user_msg("x" * (12 * 1024 * 1024))])

    def call() -> None:
        with grpc.insecure_channel(server.target, options=[("grpc.max_send_message_length", 32 << 20)]) as channel:
            try:
                pb_grpc.LLMServiceStub(channel).Complete(request, timeout=60)
                outcomes.append("OK")
            except grpc.RpcError as err:
                e = error_from_rpc(err)
                outcomes.append(f"{e.code.name} {e.reason} {'limits.max_inflight_request_bytes' in e.message}")

    try:
        threads = [threading.Thread(target=call) for _ in range(8)]
        for t in threads:
            t.start()
        peak = before
        while any(t.is_alive() for t in threads):
            peak = max(peak, rss())
            time.sleep(0.05)
    finally:
        server.stop()
    assert sorted(outcomes) == ["OK"] * 3 + ["RESOURCE_EXHAUSTED SERVER_OVERLOADED True"] * 5, outcomes
    print(f"8 concurrent 12 MiB requests, 40 MiB budget: RSS +{(peak - before) / 2**20:.0f} MB at peak")


def _with_image(url: str) -> list[pb.Message]:
    parts = [pb.ContentPart(text="what is this?"), pb.ContentPart(image_url=pb.ImageUrl(url=url))]
    return [pb.Message(role=pb.ROLE_USER, parts=parts)]


@pytest.mark.parametrize(
    ("route", "scheme", "passes"),
    [
        ("openai", "http", True),  # the provider fetches it itself
        ("anthropic", "https", True),  # sent as Anthropic's URL image source
        ("anthropic", "http", False),  # LiteLLM would download and base64 it, on the event loop
        ("gemini", "https", False),
        ("ollama", "https", False),
    ],
)
def test_f11_caller_image_urls_are_never_fetched_by_the_server(
    server: ServerThread, fake: FakeUpstream, route: str, scheme: str, passes: bool
) -> None:
    from fake_upstream import Script

    url = f"{fake.base_url.replace('http', scheme, 1)}/caller-chosen.png"
    fake.script(Script(text="a cat"))
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.LLMServiceStub(channel)
        request = pb.CompleteRequest(model=route, messages=_with_image(url))
        if passes:
            stub.Complete(request, timeout=30)
            body = json.dumps(fake.requests()[0].body)
            assert url in body, "the URL went to the provider as it was"
        else:
            with pytest.raises(grpc.RpcError) as info:
                stub.Complete(request, timeout=30)
            err = error_from_rpc(info.value)
            assert (err.code, err.reason) == (INVALID, "INVALID_REQUEST")
            assert err.field_violations[0][0] == "messages[0].parts[1].image_url.url" and "inline_image" in err.message
            assert not fake.requests(), "nothing was sent upstream"
    assert not any(r.path.endswith("caller-chosen.png") for r in fake.requests()), "the server never fetched the URL"
