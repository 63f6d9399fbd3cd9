"""Token estimates (PC27): LiteLLM's counter for the model, else characters / 4."""

from __future__ import annotations

from typing import Any

import litellm

from llm_service.core.types import ToolSpec

CHARS_PER_TOKEN = 4


def _openai_tools(tools: tuple[ToolSpec, ...]) -> list[dict[str, Any]]:
    return [
        {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
        for t in tools
    ]


def estimate_tokens(model: str, messages: list[dict[str, Any]], tools: tuple[ToolSpec, ...] = ()) -> tuple[int, str]:
    """Input tokens for the messages and tools, and which method counted them ("litellm" or "estimate").

    Images count at LiteLLM's default size: the counter would otherwise download an
    image URL the caller gave to measure it, which a gateway must never do on a caller's say.
    """
    try:
        count = litellm.token_counter(
            model=model,
            messages=messages,
            tools=_openai_tools(tools) or None,
            use_default_image_token_count=True,
        )
        return int(count), "litellm"
    except Exception:
        chars = sum(len(str(m.get("content", ""))) for m in messages) + sum(len(str(t)) for t in _openai_tools(tools))
        return chars // CHARS_PER_TOKEN, "estimate"
