"""Token estimates (PC27): LiteLLM's counter for the model, else characters / 4."""

from __future__ import annotations

from typing import Any

import litellm

CHARS_PER_TOKEN = 4


def estimate_tokens(model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> tuple[int, str]:
    """Input tokens for the messages and tools (in the OpenAI format the request sends them in),
    and which method counted them ("litellm" or "estimate").

    Images count at LiteLLM's default size: the counter would otherwise download an
    image URL the caller gave to measure it, which a gateway must never do on a caller's say.
    """
    try:
        count = litellm.token_counter(
            model=model,
            messages=messages,
            tools=tools or None,
            use_default_image_token_count=True,
        )
        return int(count), "litellm"
    except Exception:
        return chars_estimate(messages, tools), "estimate"


def chars_estimate(messages: list[dict[str, Any]], tools: Any = None, system: str = "") -> int:
    """Input tokens as characters / 4: what costs nothing to count (a quota's reservation, or when
    LiteLLM's counter fails)."""
    chars = len(system) + sum(_chars(m.get("content", "")) for m in messages) + sum(_chars(t) for t in tools or ())
    return chars // CHARS_PER_TOKEN


def _chars(value: Any) -> int:
    """The characters of a message's content or a tool: the lengths of its keys and strings, however
    nested (parts, images, schemas), walked without recursion. Rendering it with str() first made a
    copy of it all, escaped: 100 ms on the event loop for the quota reservation of a 10 MiB document."""
    if isinstance(value, str):
        return len(value)
    total = 0
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
        elif item is not None:
            total += len(str(item))  # numbers and booleans: short
    return total
