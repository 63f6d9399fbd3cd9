"""Differential tests: the fast path and LiteLLM's full path answer alike (issue 8).

The same scripted upstream transcripts run through a server on the fast path and a
server with every route forced onto LiteLLM (`fast_path: false`). For each route
family the fast path carries (OpenAI-compatible chat and Anthropic Messages), both
must give the same event sequence (or the same failure) and send the same requests
to the upstream. Timings (upstream_duration) are the only fields left out.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.json_format import MessageToDict

from fake_upstream import FakeUpstream, Script, ToolCallSpec, Usage
from llm_client import LLMClient, channel_options, pb
from llm_client.client import error_from_rpc
from llm_service.core.direct_request import direct_provider
from llm_service.core.request import build_request
from llm_service.core.types import CallRequest
from llm_service.interceptors import PARSE_OFF_LOOP_BYTES
from tests.support.messages import user_msg
from tests.support.servers import ServerThread, litellm_path, service_config

# Route families with a fast path, one route each, as the shared test configuration names them.
FAST_ROUTES = (
    "openai", "bare", "openrouter", "openrouter-claude", "minimax", "anthropic", "kimi", "hive", "claude-subscription",
)  # fmt: skip
ANTHROPIC_ROUTES = ("anthropic", "kimi", "hive", "claude-subscription")

TOOLS = [
    pb.Tool(
        name="get_weather", description="Weather", parameters_json=json.dumps({"type": "object", "properties": {"city": {}}})
    ),
    pb.Tool(name="get_time", description="Time", parameters_json=json.dumps({"type": "object", "properties": {"tz": {}}})),
]
PARALLEL = (ToolCallSpec("get_weather", '{"city": "Paris"}', "call_1"), ToolCallSpec("get_time", '{"tz": "UTC"}', "call_2"))

# name -> (scripts queued for the call, request options)
TRANSCRIPTS: dict[str, tuple[tuple[Script, ...], dict[str, Any]]] = {
    "text": ((Script(text="one two three four five"),), {}),
    "text-200-chunks": ((Script(text=" ".join(f"t{i}" for i in range(200)), chunks=200),), {}),
    "unicode": ((Script(text='naïve café — 日本語 🙂 "quoted" \\ back'),), {}),
    "usage-on-finish-chunk": ((Script(usage_mode="finish"),), {}),
    "usage-missing": ((Script(usage_mode="none"),), {}),
    "usage-cached": ((Script(usage=Usage(input=120, output=9, cached=40, cache_creation=10, reasoning=3)),), {}),
    "reasoning": ((Script(text="the answer", reasoning="first this, then that", thinking_signature="sig-1"),), {}),
    "parallel-tools": ((Script(text="", tool_calls=PARALLEL),), {"tools": TOOLS}),
    "whole-tool-calls": ((Script(text="", tool_calls=PARALLEL, fragment_tool_calls=False),), {"tools": TOOLS}),
    "index-zero-reuse": ((Script(text="", tool_calls=PARALLEL, tool_index_zero=True),), {"tools": TOOLS}),
    "text-and-tool": ((Script(text="Let me check.", tool_calls=PARALLEL[:1]),), {"tools": TOOLS}),
    "truncated-arguments": (
        (Script(text="", tool_calls=(ToolCallSpec("get_weather", '{"city": "Par', "call_9"),)),),
        {"tools": TOOLS},
    ),
    "length": ((Script(text="cut", finish_reason="length"),), {}),
    "empty-then-text": ((Script(text=""), Script(text="second time lucky")), {}),
    "always-empty": ((Script(text="", times=4),), {}),
    "rate-limited-then-ok": ((Script(status=429, headers={"retry-after": "0"}, error={"message": "slow down"}), Script()), {}),
    "server-error-then-ok": ((Script(status=500, error={"message": "oops"}), Script()), {}),
    "bad-request": ((Script(status=400, error={"message": "bad field"}),), {}),
    "unauthorized": ((Script(status=401, error={"message": "no such key"}),), {}),
    "context-window": ((Script(status=400, error={"message": "prompt is too long: context length exceeded"}),), {}),
    "garbage-body": ((Script(body_raw="<html>not json</html>", times=4),), {"max_retries": 0}),
    "dropped-mid-stream": ((Script(text="a b c d e f g h", disconnect_after_chunks=3),), {"max_retries": 0}),
}
STREAM_ONLY = {"dropped-mid-stream"}


def _request(route: str, options: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {"model": route, "messages": [user_msg("What is the weather in Paris today?")]}
    fields["system"] = "Be brief."
    if "tools" in options:
        fields["tools"] = options["tools"]
    if "max_retries" in options:
        fields["max_retries"] = options["max_retries"]
    return fields


def _without_timing(event: dict[str, Any]) -> dict[str, Any]:
    gateway = event.get("finish", event).get("gateway")
    if isinstance(gateway, dict):
        gateway.pop("upstreamDuration", None)
    return event


def _failure(err: grpc.RpcError) -> dict[str, Any]:
    e = error_from_rpc(err)
    return {"code": e.code.name, "reason": e.reason, "message": e.message, "metadata": e.metadata, "retry": e.retry_delay_s}


def _outcome(client: LLMClient, rpc: str, route: str, options: dict[str, Any]) -> dict[str, Any]:
    fields = _request(route, options)
    try:
        if rpc == "stream":
            events = [_without_timing(MessageToDict(e)) for e in client.stub.Stream(pb.StreamRequest(**fields), timeout=30)]
            return {"events": events}
        return {"answer": _without_timing(MessageToDict(client.stub.Complete(pb.CompleteRequest(**fields), timeout=30)))}
    except grpc.RpcError as err:
        return {"failure": _failure(err)}


# Transport headers that differ by HTTP library (aiohttp here, httpx/the openai SDK there).
_TRANSPORT_HEADERS = {"host", "content-length", "connection", "accept", "accept-encoding", "user-agent"}


def _sent(fake: FakeUpstream) -> list[dict[str, Any]]:
    out = []
    for r in fake.requests():
        headers = {
            k.lower(): v
            for k, v in r.headers.items()
            if k.lower() not in _TRANSPORT_HEADERS and not k.lower().startswith("x-stainless")
        }
        agent = r.headers.get("User-Agent") or r.headers.get("user-agent") or ""
        if agent.startswith("claude-code/"):
            headers["user-agent"] = agent  # set by the route (PC05), not by the HTTP library
        out.append({"method": r.method, "path": r.path, "headers": headers, "body": r.body})
    return out


@pytest.fixture(scope="module")
def both(fake: FakeUpstream) -> Iterator[dict[str, LLMClient]]:
    config = service_config(fake.base_url)
    servers = {"fast": ServerThread(config), "litellm": ServerThread(litellm_path(config))}
    clients = {name: LLMClient(srv.target, options=channel_options(retries=False)) for name, srv in servers.items()}
    yield clients
    for c in clients.values():
        c.close()
    for srv in servers.values():
        srv.stop()


def _run(fake: FakeUpstream, client: LLMClient, rpc: str, route: str, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    scripts, options = TRANSCRIPTS[name]
    fake.reset()
    fake.script(*scripts)
    outcome = _outcome(client, rpc, route, options)
    return outcome, _sent(fake)


CASES = [
    (route, name, rpc)
    for route in FAST_ROUTES
    for name in sorted(TRANSCRIPTS)
    for rpc in ("stream", "complete")
    if not (rpc == "complete" and name in STREAM_ONLY)  # a mid-stream drop has no unary form
]


@pytest.mark.parametrize(("route", "name", "rpc"), CASES)
def test_direct_and_litellm_transports_give_the_same_events_and_requests(
    fake: FakeUpstream, both: dict[str, LLMClient], route: str, name: str, rpc: str
) -> None:
    fast, fast_sent = _run(fake, both["fast"], rpc, route, name)
    full, full_sent = _run(fake, both["litellm"], rpc, route, name)
    assert fast == full
    assert fast_sent == full_sent
    assert fast_sent, "the upstream saw the call"


MALFORMED = {
    "openai": ('data: {"id": "x", "choices": [{"index": 0, "delta": {"content": "Hel"}}]}', "data: {not json"),
    "anthropic": (
        'event: message_start\ndata: {"type": "message_start", "message": {"model": "claude-test", "usage": {"input_tokens": 3}}}',  # noqa: E501
        'event: content_block_start\ndata: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}',  # noqa: E501
        'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}',  # noqa: E501
        "event: content_block_delta\ndata: {not json",
    ),
}
ERROR_EVENTS = {
    "openai": (
        'data: {"id": "x", "choices": [{"index": 0, "delta": {"content": "Hel"}}]}',
        'data: {"error": {"message": "overloaded", "code": 503}}',
    ),
    "anthropic": (
        'event: message_start\ndata: {"type": "message_start", "message": {"model": "claude-test", "usage": {"input_tokens": 3}}}',  # noqa: E501
        'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}',
    ),
}


@pytest.mark.parametrize("kind", ["malformed", "error-event"])
@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_direct_and_litellm_transports_fail_alike_on_bad_streams(
    fake: FakeUpstream, both: dict[str, LLMClient], route: str, kind: str
) -> None:
    lines = (MALFORMED if kind == "malformed" else ERROR_EVENTS)["anthropic" if route == "anthropic" else "openai"]
    outcomes = {}
    for path, client in both.items():
        fake.reset()
        fake.script(Script(sse_raw=lines, times=4))
        outcomes[path] = _outcome(client, "stream", route, {"max_retries": 0})
    assert outcomes["fast"] == outcomes["litellm"]
    assert "failure" in outcomes["fast"]


@pytest.mark.parametrize("rpc", ["stream", "complete"])
def test_direct_and_litellm_transports_fail_alike_when_the_upstream_refuses_connections(
    fake: FakeUpstream, both: dict[str, LLMClient], rpc: str
) -> None:
    outcomes = {path: _outcome(client, rpc, "refused", {"max_retries": 0}) for path, client in both.items()}
    assert outcomes["fast"] == outcomes["litellm"]
    assert outcomes["fast"]["failure"]["code"] == "UNAVAILABLE"


def test_routes_outside_the_two_wire_formats_keep_litellms_path(fake: FakeUpstream) -> None:
    """Gemini, Ollama and the Codex backend have no fast decoder: LiteLLM carries them."""
    config = service_config(fake.base_url)
    call = CallRequest(messages=[{"role": "user", "content": "hi"}])
    carried = {}
    for name, route in config.routes.items():
        req = build_request(route, call, stream=True, cc=config.claude_code, hive_api_base=config.hive_api_base, timeout_s=1.0)
        carried[name] = direct_provider(req)
    assert carried["gemini"] is None and carried["ollama"] is None and carried["codex"] is None
    assert {carried[r] for r in FAST_ROUTES} == {"openai", "openrouter", "minimax", "anthropic"}


def test_transport_litellm_sends_through_litellm(fake: FakeUpstream, both: dict[str, LLMClient]) -> None:
    """The route setting really switches paths: LiteLLM's openai SDK identifies itself, aiohttp does not."""
    agents = {}
    for path, client in both.items():
        fake.reset()
        client.complete("openai", [user_msg()])
        agents[path] = fake.requests()[0].headers.get("User-Agent", "")
    assert agents["litellm"].startswith("AsyncOpenAI/Python")
    assert not agents["fast"].startswith("AsyncOpenAI")


def test_request_bodies_are_json_objects(fake: FakeUpstream, both: dict[str, LLMClient]) -> None:
    fake.reset()
    both["fast"].complete("anthropic", [user_msg()], tools=TOOLS)
    body = fake.requests()[0].body
    assert isinstance(body, dict) and body["tools"][0]["name"] == "get_weather"
    json.dumps(body)


@pytest.mark.parametrize("rpc", ["stream", "complete"])
@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_a_large_request_sends_the_same_request_on_both_paths(
    fake: FakeUpstream, both: dict[str, LLMClient], route: str, rpc: str
) -> None:
    """Over the off-loop threshold the direct path converts, plans and encodes the request in a
    worker thread, its body in bounded pieces (tests/test_json_pieces.py): still LiteLLM's request."""
    text = 'naïve "café" — 日本語 🙂 \\ line\n' * (PARSE_OFF_LOOP_BYTES // 30)
    messages = [user_msg(text), pb.Message(role=pb.ROLE_ASSISTANT, parts=[pb.ContentPart(text="ok")]), user_msg(text)]
    assert pb.CompleteRequest(model=route, messages=messages).ByteSize() > PARSE_OFF_LOOP_BYTES
    sent = {}
    for path, client in both.items():
        fake.reset()
        fake.script(Script(text="fine"))
        request: dict[str, Any] = {"model": route, "messages": messages, "system": "Be brief.", "tools": TOOLS}
        if rpc == "stream":
            list(client.stub.Stream(pb.StreamRequest(**request), timeout=30))
        else:
            client.stub.Complete(pb.CompleteRequest(**request), timeout=30)
        sent[path] = _sent(fake)
    assert sent["fast"] == sent["litellm"]
    assert len(json.dumps(sent["fast"][0]["body"], ensure_ascii=False)) > 2 * len(text), "both texts went upstream"
