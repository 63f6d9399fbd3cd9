"""Tools the provider runs itself (web search, web fetch, code execution), enabled per route.

They go upstream in the form LiteLLM takes and maps for both transports: Anthropic's hosted tool
types in the request's tools (LiteLLM passes them through with their options), OpenAI's web search
as `web_search_options`. Their activity is never a caller's tool call (`server_tool_use` blocks are
kept out on both paths); their results reach the caller as the answer's text and its citations.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import litellm
from litellm.utils import supports_web_search

from llm_service.core.settings import Route

ANTHROPIC_TOOL_TYPES = {
    "web_search": "web_search_20250305",
    "web_fetch": "web_fetch_20250910",
    "code_execution": "code_execution_20250825",
}
WEB_FETCH_BETA = "web-fetch-2025-09-10"  # Anthropic's web fetch needs its beta; LiteLLM adds it for code execution only
OPENAI_TOOLS = frozenset({"web_search"})  # OpenAI's chat API has web search (web_search_options) only


@functools.lru_cache(maxsize=1024)
def _provider(model: str) -> str:
    try:
        return str(litellm.get_llm_provider(model)[1])
    except Exception:
        return ""


def unsupported(litellm_model: str, name: str) -> bool:
    """Whether the model has no such tool run by its provider: every Anthropic model has all three;
    an OpenAI chat model has web search where LiteLLM's model map says so and maps web_search_options
    for it (else LiteLLM would drop the option silently)."""
    provider = _provider(litellm_model)
    if provider == "anthropic":
        return False
    if provider != "openai" or name not in OPENAI_TOOLS:
        return True
    bare = litellm_model.split("/", 1)[-1]
    params = litellm.get_supported_openai_params(model=bare, custom_llm_provider=provider) or []
    return not (supports_web_search(model=bare, custom_llm_provider=provider) and "web_search_options" in params)


def provider_tool_kwargs(route: Route, litellm_model: str) -> dict[str, Any]:
    """LiteLLM's keyword arguments for the route's provider tools: `tools` entries (Anthropic),
    `web_search_options` (OpenAI), and the beta header web fetch needs; {} for a route with none."""
    if not route.provider_tools:
        return {}
    anthropic = _provider(litellm_model) == "anthropic"
    tools: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {}
    for tool in route.provider_tools:
        options = json.loads(tool.options_json)
        if anthropic:
            tools.append({"type": ANTHROPIC_TOOL_TYPES[tool.name], "name": tool.name, **options})
        else:
            kwargs["web_search_options"] = options
    if tools:
        kwargs["tools"] = tools
    if anthropic and any(t.name == "web_fetch" for t in route.provider_tools):
        kwargs["beta"] = WEB_FETCH_BETA
    return kwargs
