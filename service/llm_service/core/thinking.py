"""Thinking that round-trips: the signed (and redacted) blocks an answer came with, sent back with
the assistant turn they belong to.

A block is marked with the provider that signed it: the route's provider prefix as configured
(`anthropic`, `kimi`, `hive`, …; for a bare model name, LiteLLM's provider for it), since a
signature is only valid where it was made. On the way back a block goes to routes of that same
provider whose wire format takes thinking blocks (Anthropic Messages: LiteLLM puts an assistant
message's `thinking_blocks` first in its content, in order, before its text and tool_use
blocks); any other block is dropped with a warning rather than sent where it would be refused.
A block with no provider (built by a caller) is taken as the route's.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import litellm

log = logging.getLogger(__name__)

# LiteLLM providers whose request format carries thinking blocks back.
TAKES_THINKING_BLOCKS = frozenset({"anthropic"})


@functools.lru_cache(maxsize=1024)
def origin(route_model: str) -> str:
    """Who signs the thinking blocks of a route's answers: its model's provider prefix as
    configured, else LiteLLM's provider for a bare model name."""
    if "/" in route_model:
        return route_model.split("/", 1)[0].lower()
    try:
        return str(litellm.get_llm_provider(route_model)[1])
    except Exception:
        return ""


@functools.lru_cache(maxsize=1024)
def takes_blocks(litellm_model: str) -> bool:
    """Whether the wire format LiteLLM sends litellm_model in carries thinking blocks back."""
    try:
        return str(litellm.get_llm_provider(litellm_model)[1]) in TAKES_THINKING_BLOCKS
    except Exception:
        return False


def for_route(message: dict[str, Any], route_model: str, litellm_model: str, route_name: str) -> dict[str, Any]:
    """The message as sent on the route: its thinking blocks kept when this route's provider signed
    them and its wire format takes them, each without its provider mark; dropped (with a warning)
    otherwise."""
    blocks = message.get("thinking_blocks")
    if blocks is None:
        return message
    out = {k: v for k, v in message.items() if k != "thinking_blocks"}
    here = origin(route_model)
    takes = takes_blocks(litellm_model)
    kept = [{k: v for k, v in b.items() if k != "provider"} for b in blocks if takes and b.get("provider", "") in ("", here)]
    if len(kept) < len(blocks):
        others = sorted({str(b.get("provider") or here) for b in blocks} - ({here} if takes else set()))
        log.warning(
            "thinking blocks dropped: this route does not take them back",
            extra={"route": route_name, "dropped": len(blocks) - len(kept), "from_providers": ",".join(others)},
        )
    if kept:
        out["thinking_blocks"] = kept
    return out
