"""Provider core, diagnostics (PC26–PC28): failed-request dumps, token estimates, LiteLLM work-arounds."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from fake_upstream import FakeUpstream, Script
from llm_client import LLMServiceError, pb
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc
from llm_service.config import parse_config
from tests.support.messages import user_msg
from tests.support.servers import OAUTH_SENTINEL_KEY, SENTINEL_KEY, custom_server


def _dumps(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


# --- PC26 ----------------------------------------------------------------------------------------


def test_pc26_dumps_are_off_by_default() -> None:
    config = parse_config({"routes": {"r": {"model": "openai/gpt-4o-mini"}}}, "<t>", {})
    assert config.debug_dump_dir == ""


@pytest.mark.parametrize("route", ["openai", "claude-subscription"])
def test_pc26_rate_limited_attempts_are_dumped_without_keys_or_headers(fake: FakeUpstream, tmp_path: Path, route: str) -> None:
    fake.script(Script(status=429, times=3))
    with custom_server(fake, debug_dumps={"dir": str(tmp_path)}) as (_, c), pytest.raises(LLMServiceError):
        c.complete(route, [user_msg("What is the weather in Paris?")], max_retries=2, timeout=30)
    dumps = _dumps(tmp_path)
    assert [d["error_type"] for d in dumps] == ["rate_limit"] * 3
    assert [d["attempt"] for d in dumps] == [1, 2, 3]
    assert dumps[0]["route"] == route and dumps[0]["messages"][-1]["content"] == "What is the weather in Paris?"
    assert dumps[0]["estimated_tokens"] > 0 and dumps[0]["max_tokens"] == 4096
    for path in tmp_path.glob("*.json"):
        text = path.read_text()
        assert SENTINEL_KEY not in text and OAUTH_SENTINEL_KEY not in text
        assert "authorization" not in text.lower() and "x-api-key" not in text.lower() and "api_key" not in text
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, "prompts are user data: owner-only"


def test_pc26_a_key_pasted_into_a_prompt_is_masked_in_the_dump(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.script(Script(status=429))
    with custom_server(fake, debug_dumps={"dir": str(tmp_path)}) as (_, c), pytest.raises(LLMServiceError):
        c.complete("openai", [user_msg(f"my key is {SENTINEL_KEY}")], max_retries=0, timeout=30)
    [dump] = _dumps(tmp_path)
    assert dump["messages"][-1]["content"] == "my key is ***"


def test_pc26_empty_responses_and_empty_streams_are_dumped(fake: FakeUpstream, tmp_path: Path) -> None:
    # PC31: each empty whole answer is dumped; an empty stream once, when its retries are spent.
    fake.script(
        Script(text="", times=2), Script(text="ok"), Script(text="", times=1), Script(text="ok"), Script(text="", times=4)
    )
    with custom_server(fake, debug_dumps={"dir": str(tmp_path)}) as (_, c):
        c.complete("openai", [user_msg()], timeout=30)
        list(c.stream("openai", [user_msg()], timeout=30))
        list(c.stream("openai", [user_msg()], timeout=30))
    assert [d["error_type"] for d in _dumps(tmp_path)] == ["empty_response", "empty_response", "empty_stream"]


def test_pc26_only_the_newest_dumps_are_kept(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.script(Script(status=429, times=5))
    with custom_server(fake, debug_dumps={"dir": str(tmp_path), "keep": 3}) as (_, c), pytest.raises(LLMServiceError):
        c.complete("openai", [user_msg()], max_retries=4, timeout=30)
    assert [d["attempt"] for d in _dumps(tmp_path)] == [3, 4, 5]


# --- PC27 ----------------------------------------------------------------------------------------


def test_pc27_count_tokens_uses_litellms_counter(stub: pb_grpc.LLMServiceStub) -> None:
    def count(**fields: Any) -> pb.CountTokensResponse:
        return stub.CountTokens(pb.CountTokensRequest(model="openai", **fields), timeout=10)

    short = count(messages=[user_msg("hi")])
    long = count(messages=[user_msg("hello world " * 50)])
    with_system = count(messages=[user_msg("hi")], system="You are a very careful assistant.")
    with_tools = count(messages=[user_msg("hi")], tools=[pb.Tool(name="lookup", parameters_json='{"type": "object"}')])
    assert short.method == pb.TOKEN_COUNT_METHOD_LITELLM
    assert 0 < short.input_tokens < long.input_tokens
    assert with_system.input_tokens > short.input_tokens and with_tools.input_tokens > short.input_tokens


def test_pc27_counting_never_fetches_an_image_url(stub: pb_grpc.LLMServiceStub, fake: FakeUpstream) -> None:
    image = pb.ContentPart(image_url=pb.ImageUrl(url=f"{fake.base_url}/secret-internal-image.png"))
    msg = pb.Message(role=pb.ROLE_USER, parts=[pb.ContentPart(text="what is this?"), image])
    result = stub.CountTokens(pb.CountTokensRequest(model="openai", messages=[msg]), timeout=10)
    assert result.method == pb.TOKEN_COUNT_METHOD_LITELLM and result.input_tokens > 0
    assert fake.requests() == [], "the caller's URL was not fetched by the server"


def test_pc27_characters_over_four_when_litellms_counter_fails(
    stub: pb_grpc.LLMServiceStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault injection: LiteLLM's counter raising (as it does for inputs it cannot tokenize).
    import litellm

    def broken(**kwargs: Any) -> int:
        raise ValueError("no tokenizer for this model")

    monkeypatch.setattr(litellm, "token_counter", broken)
    result = stub.CountTokens(pb.CountTokensRequest(model="openai", messages=[user_msg("x" * 400)]), timeout=10)
    assert result.method == pb.TOKEN_COUNT_METHOD_ESTIMATE
    assert result.input_tokens == 100
