"""Provider core, routing and request building (PC01–PC11).

Each test calls the real server over gRPC; LiteLLM sends real HTTP to the fake
upstream, and the test reads what arrived there: URL path, headers, JSON body.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from fake_upstream import FakeUpstream, RecordedRequest, Script, ToolCallSpec
from llm_client import LLMClient, pb
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc
from llm_service.config import parse_config
from llm_service.core.request import resolve_api_base, supports_cache_control
from tests.support.messages import user_msg
from tests.support.servers import OAUTH_SENTINEL_KEY, SENTINEL_KEY

JSON_MODE_INSTRUCTION = "Please respond with a valid JSON object."


def _only_request(fake: FakeUpstream) -> RecordedRequest:
    [req] = fake.requests()
    return req


def _system_text(body: dict[str, Any]) -> list[str]:
    """The system texts of an OpenAI or Anthropic request body, in order."""
    if "system" in body:
        system = body["system"]
        return [system] if isinstance(system, str) else [block["text"] for block in system]
    texts = []
    for msg in body["messages"]:
        if msg["role"] == "system":
            content = msg["content"]
            texts.append(content if isinstance(content, str) else "".join(p["text"] for p in content))
    return texts


# --- PC01 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "path"),
    [
        ("openai", "/v1/chat/completions"),
        ("bare", "/v1/chat/completions"),
        ("anthropic", "/v1/messages"),
        ("gemini", "/models/gemini-2.0-flash:generateContent"),
        ("ollama", "/api/chat"),
        ("openrouter", "/api/v1/chat/completions"),
    ],
)
def test_pc01_any_litellm_model_string_works(client: LLMClient, fake: FakeUpstream, route: str, path: str) -> None:
    fake.script(Script(text="Answer from the provider's own wire format"))
    result = client.complete(route, [user_msg("hello")], timeout=10)
    assert result.text == "Answer from the provider's own wire format"
    assert result.finish_reason == "FINISH_REASON_STOP"
    assert _only_request(fake).path == path


@pytest.mark.parametrize("route", ["bare", "gemini", "ollama", "openrouter"])
def test_pc01_any_litellm_model_string_streams(client: LLMClient, fake: FakeUpstream, route: str) -> None:
    fake.script(Script(text="one two three"))
    events = list(client.stream(route, [user_msg("hello")], timeout=10))
    assert [e.delta for e in events if e.kind == "text_delta"] == ["one ", "two ", "three"]
    assert [e.kind for e in events][-2:] == ["text_end", "finish"]


# --- PC02–PC04 -----------------------------------------------------------------------------------


def test_pc02_ollama_is_sent_as_ollama_chat(client: LLMClient, fake: FakeUpstream) -> None:
    client.complete("ollama", [user_msg("hello")], timeout=10)
    req = _only_request(fake)
    assert req.path == "/api/chat", "ollama_chat/ speaks /api/chat; plain ollama/ would use /api/generate"
    assert req.body["model"] == "llama3" and req.body["messages"][-1]["content"] == "hello"


def test_pc03_kimi_is_sent_as_anthropic_with_v1_stripped(client: LLMClient, fake: FakeUpstream) -> None:
    result = client.complete("kimi", [user_msg("hello")], timeout=10)
    req = _only_request(fake)
    assert req.path == "/v1/messages", "the route's api_base ends in /v1; LiteLLM appends /v1/messages"
    assert req.body["model"] == "kimi-k2"
    assert req.headers["x-api-key"] == SENTINEL_KEY
    assert result.text


def test_pc03_hive_is_sent_as_anthropic_with_bearer_key(client: LLMClient, fake: FakeUpstream) -> None:
    client.complete("hive", [user_msg("hello")], timeout=10)
    req = _only_request(fake)
    assert req.path == "/v1/messages" and req.body["model"] == "hive-coder"
    assert req.headers["Authorization"] == f"Bearer {SENTINEL_KEY}"


def test_pc04_hive_default_api_base_is_the_configured_hive_endpoint(client: LLMClient, fake: FakeUpstream) -> None:
    # The hive route configures no api_base: the request reaches the configured hive_api_base.
    client.complete("hive", [user_msg("hello")], timeout=10)
    assert _only_request(fake).path == "/v1/messages"


def test_pc04_configured_api_base_wins_over_the_default(client: LLMClient, fake: FakeUpstream) -> None:
    for route in ("minimax", "openrouter", "kimi"):
        client.complete(route, [user_msg("hello")], timeout=10)
    assert len(fake.requests()) == 3, "every route with an api_base reached the fake, not its public default"


def test_pc04_default_api_base_by_model_prefix() -> None:
    # In addition to the HTTP tests above: the public defaults, which a test here cannot reach.
    config = parse_config(
        {
            "hive_api_base": "https://hive.example/v1",
            "routes": {
                "a": {"model": "minimax/MiniMax-M2"},
                "b": {"model": "MiniMax-M2"},
                "c": {"model": "openrouter/x/y"},
                "d": {"model": "kimi/kimi-k2"},
                "e": {"model": "hive/h"},
                "f": {"model": "openai/gpt-4o"},
                "g": {"model": "minimax/MiniMax-M2", "api_base": "https://mine.example/v1"},
            },
        },
        "<t>",
        {},
    )
    bases = {name: resolve_api_base(route, config.hive_api_base) for name, route in config.routes.items()}
    assert bases == {
        "a": "https://api.minimax.io/v1",
        "b": "https://api.minimax.io/v1",
        "c": "https://openrouter.ai/api/v1",
        "d": "https://api.kimi.com/coding",
        "e": "https://hive.example",
        "f": "",
        "g": "https://mine.example/v1",
    }


# --- PC05 ----------------------------------------------------------------------------------------


def test_pc05_claude_subscription_key_goes_in_bearer_with_oauth_beta_and_user_agent(
    client: LLMClient, fake: FakeUpstream
) -> None:
    client.complete("claude-subscription", [user_msg("hello")], timeout=10)
    req = _only_request(fake)
    headers = {k.lower(): v for k, v in req.headers.items()}
    assert headers["authorization"] == f"Bearer {OAUTH_SENTINEL_KEY}"
    assert "x-api-key" not in headers, "an OAuth token is never sent as an API key"
    betas = [b.strip() for b in headers["anthropic-beta"].split(",")]
    assert betas.count("oauth-2025-04-20") == 1
    assert headers["user-agent"] == "claude-code/2.1.76"


def test_pc05_oauth_beta_flag_is_merged_without_duplicates(fake: FakeUpstream) -> None:
    from tests.support.servers import ServerThread, service_config

    routes = {
        "sub": {
            "model": "anthropic/claude-sonnet-4-5",
            "api_base": fake.base_url,
            "key": {"env": "TEST_OAUTH_KEY"},
            "headers": {"anthropic-beta": "interleaved-thinking-2025-05-14,oauth-2025-04-20"},
        }
    }
    srv = ServerThread(service_config(fake.base_url, routes=routes))
    try:
        with LLMClient(srv.target) as c:
            c.complete("sub", [user_msg("hello")], timeout=10)
    finally:
        srv.stop()
    headers = {k.lower(): v for k, v in _only_request(fake).headers.items()}
    betas = [b.strip() for b in headers["anthropic-beta"].split(",")]
    assert betas.count("oauth-2025-04-20") == 1 and "interleaved-thinking-2025-05-14" in betas


# The expected hashes were computed with Node's crypto on JavaScript strings (text[i] is a UTF-16
# code unit), the way Claude Code computes them: sha256(salt + text[4] + text[7] + text[20] + version).
@pytest.mark.parametrize(
    ("text", "expected_hash"),
    [
        ("What is the weather in Paris today?", "60b"),
        ("hi", "4dc"),  # shorter than every position: "000"
        ("Hey 😀 wonderful world of tests", "e77"),  # position 4 is half a surrogate pair
    ],
)
def test_pc05_billing_block_is_prepended_on_every_call(
    client: LLMClient, fake: FakeUpstream, text: str, expected_hash: str
) -> None:
    client.complete("claude-subscription", [user_msg(text)], system="You are terse.", timeout=10)
    systems = _system_text(_only_request(fake).body)
    assert systems[0] == f"x-anthropic-billing-header: cc_version=2.1.76.{expected_hash}; cc_entrypoint=cli; cch=00000;"
    assert systems[1] == "You are terse."


def test_pc05_billing_version_salt_and_entrypoint_come_from_configuration(fake: FakeUpstream) -> None:
    from tests.support.servers import ServerThread, service_config

    config = service_config(fake.base_url, claude_code={"version": "9.9.9", "billing_salt": "test-salt", "entrypoint": "sdk-py"})
    srv = ServerThread(config)
    try:
        with LLMClient(srv.target) as c:
            assert list(c.stream("claude-subscription", [user_msg("hi")], timeout=10))
    finally:
        srv.stop()
    req = _only_request(fake)
    assert _system_text(req.body)[0] == "x-anthropic-billing-header: cc_version=9.9.9.4f4; cc_entrypoint=sdk-py; cch=00000;"
    assert {k.lower(): v for k, v in req.headers.items()}["user-agent"] == "claude-code/9.9.9"


def test_pc05_api_keys_are_not_oauth(client: LLMClient, fake: FakeUpstream) -> None:
    client.complete("anthropic", [user_msg("hello")], timeout=10)
    req = _only_request(fake)
    assert req.headers["x-api-key"] == SENTINEL_KEY
    assert not any("billing-header" in s for s in _system_text(req.body))


# --- PC06 ----------------------------------------------------------------------------------------


def test_pc06_codex_backend_parameters(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(text="codex says hi"))
    result = client.complete("codex", [user_msg("hello")], max_tokens=100, timeout=10)
    req = _only_request(fake)
    assert req.path == "/chatgpt.com/backend-api/codex/responses"
    body = req.body
    assert body["store"] is False
    assert "max_output_tokens" not in body and "max_tokens" not in body
    assert "stream_options" not in body
    assert body["instructions"] == "You are a helpful assistant.", "a system message is inserted when there is none"
    assert body["stream"] is True, "a unary call is served by collecting the stream"
    assert result.text == "codex says hi" and result.finish_reason == "FINISH_REASON_STOP"


def test_pc06_codex_keeps_the_callers_system_and_streams(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(text="a b c"))
    events = list(client.stream("codex", [user_msg("hello")], system="Be brief.", timeout=10))
    assert [e.delta for e in events if e.kind == "text_delta"] == ["a ", "b ", "c"]
    assert _only_request(fake).body["instructions"] == "Be brief."


# --- PC07 ----------------------------------------------------------------------------------------


def test_pc07_cache_control_on_the_system_message_of_allow_listed_models(client: LLMClient, fake: FakeUpstream) -> None:
    client.complete("anthropic", [user_msg()], system="Long stable system prompt", timeout=10)
    client.complete("openrouter-claude", [user_msg()], system="Long stable system prompt", timeout=10)
    anthropic_req, openrouter_req = fake.requests()
    assert anthropic_req.body["system"][-1]["cache_control"] == {"type": "ephemeral"}
    system_msg = openrouter_req.body["messages"][0]
    assert system_msg["role"] == "system"
    content = system_msg["content"]
    marked = content[-1] if isinstance(content, list) else system_msg
    assert marked["cache_control"] == {"type": "ephemeral"}


@pytest.mark.parametrize("route", ["openai", "openrouter", "gemini", "bare"])
def test_pc07_other_models_never_get_cache_control(client: LLMClient, fake: FakeUpstream, route: str) -> None:
    client.complete(route, [user_msg()], system="Long stable system prompt", timeout=10)
    assert "cache_control" not in json.dumps(_only_request(fake).body)


def test_pc07_cache_allow_list() -> None:
    yes = ["anthropic/claude-x", "claude-3", "minimax/m", "minimax-m2", "MiniMax-M2", "zai-glm-4", "glm-4.6"]
    yes += ["openrouter/anthropic/claude", "openrouter/google/gemini-2.5", "openrouter/z-ai/glm-4.6", "openrouter/minimax/m2"]
    no = ["openai/gpt-4o", "gpt-4o-mini", "gemini/gemini-2.0", "openrouter/meta-llama/llama-3", "ollama_chat/llama3"]
    assert all(supports_cache_control(m) for m in yes)
    assert not any(supports_cache_control(m) for m in no)


# --- PC08 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("system", "expected"), [("", JSON_MODE_INSTRUCTION), ("Be brief.", f"Be brief.\n\n{JSON_MODE_INSTRUCTION}")]
)
def test_pc08_json_mode_is_an_instruction_not_response_format(
    client: LLMClient, fake: FakeUpstream, system: str, expected: str
) -> None:
    client.complete("openai", [user_msg()], system=system, json_mode=True, timeout=10)
    body = _only_request(fake).body
    assert _system_text(body) == [expected]
    assert "response_format" not in body


def test_pc08_callers_response_format_is_passed_through(stub: pb_grpc.LLMServiceStub, fake: FakeUpstream) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False}
    request = pb.CompleteRequest(
        model="openai",
        messages=[user_msg()],
        response_format=pb.ResponseFormat(name="count", json_schema=json.dumps(schema), strict=True),
    )
    stub.Complete(request, timeout=10)
    sent = _only_request(fake).body["response_format"]
    assert sent == {"type": "json_schema", "json_schema": {"name": "count", "schema": schema, "strict": True}}


# --- PC09 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_pc09_tools_are_sent_in_function_format_and_round_trip_exactly(client: LLMClient, fake: FakeUpstream, route: str) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "maximum": 10}},
        "required": ["city"],
    }
    tool = pb.Tool(name="get_weather", description="Weather by city", parameters_json=json.dumps(schema))
    args = '{"city": "Paris", "days": 3, "ratio": 0.5, "big": 12345678901234}'
    fake.script(Script(text="", tool_calls=(ToolCallSpec("get_weather", args, "call_9"),)))
    result = client.complete(route, [user_msg("Weather?")], tools=[tool], timeout=10)
    body = _only_request(fake).body
    if route == "openai":
        assert body["tools"] == [
            {
                "type": "function",
                "function": {"name": "get_weather", "description": "Weather by city", "parameters": schema},
            }
        ]
    else:
        assert (
            body["tools"][0]["name"] == "get_weather" and body["tools"][0]["input_schema"]["properties"] == schema["properties"]
        )
    [call] = result.tool_calls
    assert (call.id, call.name, result.finish_reason) == ("call_9", "get_weather", "FINISH_REASON_TOOL_CALLS")
    decoded = json.loads(call.arguments_json)
    assert decoded == {"city": "Paris", "days": 3, "ratio": 0.5, "big": 12345678901234}
    assert isinstance(decoded["days"], int) and isinstance(decoded["big"], int)


# --- PC10, PC11 ----------------------------------------------------------------------------------


def test_pc10_empty_assistant_messages_are_dropped(client: LLMClient, fake: FakeUpstream) -> None:
    messages = [user_msg("first"), pb.Message(role=pb.ROLE_ASSISTANT), user_msg("second")]
    client.complete("openai", messages, timeout=10)
    sent = _only_request(fake).body["messages"]
    assert [(m["role"], m.get("content")) for m in sent] == [("user", "first"), ("user", "second")]


def test_pc11_stream_options_only_for_providers_that_accept_them(client: LLMClient, fake: FakeUpstream) -> None:
    list(client.stream("openai", [user_msg()], timeout=10))
    list(client.stream("anthropic", [user_msg()], timeout=10))
    openai_req, anthropic_req = fake.requests()
    assert openai_req.body["stream_options"] == {"include_usage": True}
    assert "stream_options" not in anthropic_req.body


def test_pc11_unsupported_parameters_are_dropped(stub: pb_grpc.LLMServiceStub, fake: FakeUpstream) -> None:
    # Anthropic's Messages API has no seed: LiteLLM's drop_params removes it instead of failing the call.
    stub.Complete(pb.CompleteRequest(model="anthropic", messages=[user_msg()], seed=7, temperature=0.5), timeout=10)
    body = _only_request(fake).body
    assert "seed" not in body and body["temperature"] == 0.5
