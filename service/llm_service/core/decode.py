"""Decoding what LiteLLM returns into provider-neutral Chunks.

The only module that reads LiteLLM's response objects; a lean decoder for the hot
wire formats can replace it without touching assembly or retries.
"""

from __future__ import annotations

from typing import Any

from llm_service.core.types import Chunk, Citation, ThinkingBlock, ToolFragment, Usage


def int_or_zero(value: Any) -> int:
    """A token count as an int; 0 for anything that is not a number."""
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def usage_from(obj: Any) -> Usage | None:
    """Usage from a LiteLLM/OpenAI usage object or dict, with the provider's own cost (PC21, PC34); None when all zero."""
    if obj is None:
        return None

    def get(o: Any, name: str) -> Any:
        return o.get(name) if isinstance(o, dict) else getattr(o, name, None)

    details = get(obj, "prompt_tokens_details")
    cached = int_or_zero(get(details, "cached_tokens")) if details is not None else 0
    if not cached:
        cached = int_or_zero(get(obj, "cache_read_input_tokens"))
    creation = int_or_zero(get(obj, "cache_creation_input_tokens"))
    if not creation and details is not None:  # LiteLLM's usage summed over a stream keeps it here
        creation = int_or_zero(get(details, "cache_creation_tokens")) or int_or_zero(get(details, "cache_write_tokens"))
    out_details = get(obj, "completion_tokens_details")
    reasoning = int_or_zero(get(out_details, "reasoning_tokens")) if out_details is not None else 0
    usage = Usage(
        input_tokens=int_or_zero(get(obj, "prompt_tokens")),
        output_tokens=int_or_zero(get(obj, "completion_tokens")),
        cached_input_tokens=cached,
        cache_creation_tokens=creation,
        reasoning_tokens=reasoning,
        provider_cost_usd=provider_cost_usd(get(obj, "cost")),
    )
    return None if usage == Usage() else usage


def provider_cost_usd(value: Any) -> float:
    """The provider's own figure for what a call cost (OpenRouter's `usage.cost`, PC34); 0.0 when absent."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return 0.0


def content_parts(content: Any) -> tuple[str, str]:
    """(text, reasoning) of a message's content: a string, or a list of typed parts as Mistral's
    reasoning models send (`{"type": "text", "text": …}`, `{"type": "thinking", "thinking": [parts]}`)."""
    if isinstance(content, str):
        return content, ""
    if not isinstance(content, list):
        return "", ""
    text: list[str] = []
    reasoning: list[str] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            text.append(part["text"])
        elif part.get("type") == "thinking":
            inner = part.get("thinking")
            if isinstance(inner, str):
                reasoning.append(inner)
            elif isinstance(inner, list):
                reasoning.extend(p["text"] for p in inner if isinstance(p, dict) and isinstance(p.get("text"), str))
    return "".join(text), "".join(reasoning)


def citations_from(raw: Any) -> list[Citation]:
    """The sources in Anthropic citations or OpenAI `url_citation` annotations (dicts or LiteLLM's
    objects); entries with neither a URL nor a title are left out."""
    found: list[Citation] = []
    for item in raw if isinstance(raw, list | tuple) else ():
        entry = item if isinstance(item, dict) else getattr(item, "__dict__", {})
        inner = entry.get("url_citation") if entry.get("type") == "url_citation" else entry
        if not isinstance(inner, dict):
            inner = getattr(inner, "__dict__", {})
        url, title = inner.get("url") or "", inner.get("title") or inner.get("document_title") or ""
        if url or title:
            found.append(Citation(str(url), str(title), str(entry.get("cited_text") or "")))
    return found


def _litellm_citations(message: Any, anthropic_key: str) -> list[Citation]:
    """A LiteLLM message's or delta's sources: OpenAI's `annotations`, and Anthropic's citations that
    LiteLLM keeps in provider_specific_fields (`citations`, one list per text block; `citation` in a delta)."""
    found = citations_from(getattr(message, "annotations", None))
    extra = getattr(message, "provider_specific_fields", None)
    anthropic = extra.get(anthropic_key) if isinstance(extra, dict) else None
    if anthropic_key == "citation" and anthropic is not None:
        found += citations_from([anthropic])
    elif isinstance(anthropic, list):
        for per_block in anthropic:
            found += citations_from(per_block)
    return found


def _thinking_blocks(raw: Any) -> list[ThinkingBlock]:
    blocks: list[ThinkingBlock] = []
    for b in raw or []:
        get = b.get if isinstance(b, dict) else (lambda k, _b=b: getattr(_b, k, None))
        if get("type") == "redacted_thinking":
            blocks.append(ThinkingBlock(redacted_data=str(get("data") or "")))
        else:
            blocks.append(ThinkingBlock(thinking=str(get("thinking") or ""), signature=str(get("signature") or "")))
    return blocks


def _refusal(message: Any) -> str:
    """OpenAI's refusal text: LiteLLM keeps it in provider_specific_fields (or as an attribute)."""
    refusal = getattr(message, "refusal", None)
    if not isinstance(refusal, str):
        extra = getattr(message, "provider_specific_fields", None)
        refusal = extra.get("refusal") if isinstance(extra, dict) else None
    return refusal if isinstance(refusal, str) else ""


def _reasoning(message: Any) -> str:
    """Reasoning text: `reasoning_content`, else `reasoning` (LiteLLM leaves Groq's whole answers' there)."""
    for name in ("reasoning_content", "reasoning"):
        value = getattr(message, name, None)
        if isinstance(value, str) and value:
            return value
    return ""


def _upstream_model(chunk: Any) -> str:
    """The model the upstream named in its stream; "" when this chunk does not say.

    LiteLLM sets every stream chunk's `model` to the model the route asked for and keeps the
    upstream's in the chunk's hidden params (not on the chunks it makes itself at the end).
    """
    hidden = getattr(chunk, "_hidden_params", None)
    named = hidden.get("provider_response_model") if isinstance(hidden, dict) else None
    return named if isinstance(named, str) else ""


def decode_stream_chunk(chunk: Any) -> Chunk:
    """One LiteLLM ModelResponseStream into a Chunk."""
    out = Chunk(model=_upstream_model(chunk), usage=usage_from(getattr(chunk, "usage", None)))
    choices = getattr(chunk, "choices", None)
    if not choices:
        return out
    choice = choices[0]
    delta = getattr(choice, "delta", None)
    if delta is not None:
        out.text = getattr(delta, "content", None) or ""
        out.reasoning = _reasoning(delta)
        out.refusal = _refusal(delta)
        for tc in getattr(delta, "tool_calls", None) or []:
            fn = getattr(tc, "function", None)
            out.tool_fragments.append(
                ToolFragment(
                    index=getattr(tc, "index", None),
                    id=getattr(tc, "id", None) or None,
                    name=(getattr(fn, "name", None) or None) if fn is not None else None,
                    arguments=(getattr(fn, "arguments", None) or "") if fn is not None else "",
                )
            )
        out.thinking_blocks = _thinking_blocks(getattr(delta, "thinking_blocks", None))
        out.citations = _litellm_citations(delta, "citation")
    out.finish_reason = getattr(choice, "finish_reason", None) or None
    return out


def decode_response(response: Any) -> Chunk:
    """A whole LiteLLM ModelResponse into one Chunk (tool calls as whole fragments)."""
    out = Chunk(model=getattr(response, "model", "") or "", usage=usage_from(getattr(response, "usage", None)))
    choices = getattr(response, "choices", None)
    if not choices:
        return out
    choice = choices[0]
    msg = getattr(choice, "message", None)
    if msg is not None:
        out.text = getattr(msg, "content", None) or ""
        out.reasoning = _reasoning(msg)
        out.refusal = _refusal(msg)
        for i, tc in enumerate(getattr(msg, "tool_calls", None) or []):
            fn = getattr(tc, "function", None)
            out.tool_fragments.append(
                ToolFragment(
                    index=i,
                    id=getattr(tc, "id", None) or f"call_{i}",
                    name=getattr(fn, "name", None) or "",
                    arguments=getattr(fn, "arguments", None) or "",
                )
            )
        out.thinking_blocks = _thinking_blocks(getattr(msg, "thinking_blocks", None))
        out.citations = _litellm_citations(msg, "citations")
    out.finish_reason = getattr(choice, "finish_reason", None) or None
    return out
