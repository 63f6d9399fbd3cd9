"""Token estimates (PC27): LiteLLM's counter for the model, else characters / 4."""

from __future__ import annotations

from typing import Any

import litellm

from llm_service.core.types import ToolSpec

CHARS_PER_TOKEN = 4


def estimate_tokens(model: str, messages: list[dict[str, Any]], tools: tuple[ToolSpec, ...] = ()) -> tuple[int, str]:
    """Input tokens for the messages and tools, and which method counted them ("litellm" or "estimate")."""
    tool_text = str([t.parameters | {"name": t.name, "description": t.description} for t in tools]) if tools else ""
    try:
        count = litellm.token_counter(model=model, messages=messages)
        if tool_text:
            count += litellm.token_counter(model=model, text=tool_text)
        return int(count), "litellm"
    except Exception:
        chars = sum(len(str(m.get("content", ""))) for m in messages) + len(tool_text)
        return chars // CHARS_PER_TOKEN, "estimate"
