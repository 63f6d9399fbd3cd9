"""Tools the provider runs itself, through the real server on both transports: what a route's
provider_tools send upstream per wire format, and what recorded real answers of those tools give
the caller (text and citations, never a tool call of the caller's)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fake_upstream import FakeUpstream, Script
from llm_client import LLMClient, channel_options, pb
from llm_service.config import ConfigError, parse_config
from tests.support.messages import user_msg
from tests.support.servers import PATHS, ServerPath, ServerThread, on_path, service_config

CORPUS = Path(__file__).resolve().parent / "corpus"
SSE = "text/event-stream; charset=utf-8"
WEATHER = pb.Tool(name="get_weather", parameters_json='{"type": "object", "properties": {"city": {"type": "string"}}}')
SEARCH = {"name": "web_search", "max_uses": 3, "allowed_domains": ["example.com"]}


@pytest.fixture(scope="module", params=PATHS)
def tclient(fake: FakeUpstream, request: pytest.FixtureRequest) -> Iterator[LLMClient]:
    """A client of a server per path with provider tools on its routes."""
    path: ServerPath = request.param
    key = {"env": "TEST_PROVIDER_KEY"}
    routes = {
        "claude-tools": {
            "model": "anthropic/claude-sonnet-4-5",
            "api_base": fake.base_url,
            "key": key,
            "provider_tools": [SEARCH, {"name": "web_fetch", "max_uses": 2}, {"name": "code_execution"}],
        },
        "openai-search": {
            "model": "openai/gpt-4o-mini-search-preview",
            "api_base": f"{fake.base_url}/v1",
            "key": key,
            "provider_tools": [{"name": "web_search", "search_context_size": "low"}],
        },
    }
    srv = ServerThread(on_path(service_config(fake.base_url, routes=routes), path))
    with LLMClient(srv.target, options=channel_options(retries=False)) as c:
        yield c
    srv.stop()


def test_anthropic_gets_its_hosted_tools_after_the_callers(tclient: LLMClient, fake: FakeUpstream) -> None:
    tclient.complete("claude-tools", [user_msg()], tools=[WEATHER], timeout=10)
    [req] = fake.requests()
    assert [t.get("type") for t in req.body["tools"]] == [
        "custom",
        "web_search_20250305",
        "web_fetch_20250910",
        "code_execution_20250825",
    ]
    assert req.body["tools"][1] == {
        "type": "web_search_20250305",
        "name": "web_search",
        "max_uses": 3,
        "allowed_domains": ["example.com"],
    }
    assert req.body["tools"][2] == {"type": "web_fetch_20250910", "name": "web_fetch", "max_uses": 2}
    betas = req.headers["anthropic-beta"].split(",")
    assert "web-fetch-2025-09-10" in betas and "code-execution-2025-08-25" in betas


def test_openai_gets_web_search_options(tclient: LLMClient, fake: FakeUpstream) -> None:
    list(tclient.stream("openai-search", [user_msg()], timeout=10))
    [req] = fake.requests()
    assert req.body["web_search_options"] == {"search_context_size": "low"}
    assert "tools" not in req.body


def _anthropic_citations(blocks: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    cited = [(c["url"], c.get("title") or "", c.get("cited_text") or "") for b in blocks for c in b.get("citations") or ()]
    return list(dict.fromkeys(cited))


def _recorded_stream(name: str) -> tuple[str, list[dict[str, Any]]]:
    body = (CORPUS / "anthropic" / name).read_text()
    events = [json.loads(line[5:]) for line in body.splitlines() if line.startswith("data:")]
    return body, events


def test_recorded_anthropic_web_search_answers_give_text_and_citations(tclient: LLMClient, fake: FakeUpstream) -> None:
    whole = json.loads((CORPUS / "anthropic/anthropic-whole-web-search.json").read_text())
    fake.script(Script(body_raw=json.dumps(whole)))
    result = tclient.complete("claude-tools", [user_msg("Weather in San Francisco?")], timeout=10)
    assert result.text == "".join(b["text"] for b in whole["content"] if b["type"] == "text")
    assert result.tool_calls == [], "the provider's web search is never the caller's tool call"
    expected = _anthropic_citations(whole["content"])
    assert len(expected) >= 5
    assert [(c.url, c.title, c.cited_text) for c in result.citations] == expected

    body, events = _recorded_stream("anthropic-stream-web-search.sse")
    fake.reset()
    fake.script(Script(body_raw=body, raw_content_type=SSE))
    got = list(tclient.stream("claude-tools", [user_msg("News?")], timeout=10))
    assert not [e for e in got if e.kind == "tool_call"]
    deltas = [e["delta"] for e in events if e.get("type") == "content_block_delta"]
    assert "".join(e.delta for e in got if e.kind == "text_delta") == "".join(
        d["text"] for d in deltas if d["type"] == "text_delta"
    )
    cited = [d["citation"] for d in deltas if d["type"] == "citations_delta"]
    assert len(cited) >= 5
    finish = got[-1].finish
    assert finish is not None
    assert [(c.url, c.title, c.cited_text) for c in finish.citations] == _anthropic_citations([{"citations": cited}])


def _url_citations(annotations: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return list(dict.fromkeys((a["url_citation"]["url"], a["url_citation"].get("title") or "", "") for a in annotations))


def test_recorded_openai_format_url_citations_become_citations(tclient: LLMClient, fake: FakeUpstream) -> None:
    """OpenRouter's web search answers in OpenAI's chat format: `annotations` of type url_citation."""
    whole = json.loads((CORPUS / "openai-chat/openrouter-whole-web-search-annotations.json").read_text())
    fake.script(Script(body_raw=json.dumps(whole)))
    result = tclient.complete("openrouter", [user_msg()], timeout=10)
    annotations = whole["choices"][0]["message"]["annotations"]
    assert len(annotations) >= 2 and result.text == whole["choices"][0]["message"]["content"]
    assert [(c.url, c.title, c.cited_text) for c in result.citations] == _url_citations(annotations)

    body = (CORPUS / "openai-chat/openrouter-stream-web-search-annotations.sse").read_text()
    chunks = [json.loads(line[5:]) for line in body.splitlines() if line.startswith("data:") and line[5:].strip() != "[DONE]"]
    streamed = [a for c in chunks for ch in c.get("choices") or () for a in (ch.get("delta") or {}).get("annotations") or ()]
    fake.reset()
    fake.script(Script(body_raw=body, raw_content_type=SSE))
    finish = list(tclient.stream("openrouter", [user_msg()], timeout=10))[-1].finish
    assert finish is not None and streamed
    assert [(c.url, c.title, c.cited_text) for c in finish.citations] == _url_citations(streamed)


@pytest.mark.parametrize(
    ("model", "tool", "message"),
    [
        ("openai/gpt-4o-mini", {"name": "web_search"}, r"provider_tools\[0\]\.name: expected a tool this route's provider runs"),
        ("openai/gpt-4o-search-preview", {"name": "code_execution"}, r"provider_tools\[0\]\.name: expected a tool"),
        ("gemini/gemini-2.5-flash", {"name": "web_search"}, r"provider_tools\[0\]\.name: expected a tool"),
        ("anthropic/claude-sonnet-4-5", {"name": "browser"}, r"provider_tools\[0\]\.name: expected web_search or web_fetch"),
    ],
)
def test_a_tool_the_provider_does_not_run_fails_the_configuration(model: str, tool: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"routes": {"r": {"model": model, "provider_tools": [tool]}}}, "<t>", {})
