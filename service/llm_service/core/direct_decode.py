"""The direct transport's decoders: OpenAI chat and Anthropic Messages answers into Chunks.

Plain dicts from json.loads, read once into the provider-neutral Chunk that
`assembly` consumes; no SDK or LiteLLM response objects. What LiteLLM's own path
reports for the same bytes (finish-reason mapping, usage arithmetic, thinking
blocks) is reproduced here, and `tests/test_direct_vs_litellm.py` checks both paths give
the same events.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

import orjson
from litellm import token_counter
from litellm.litellm_core_utils.core_helpers import map_finish_reason

from llm_service.core import errors
from llm_service.core.decode import citations_from, content_parts, int_or_zero, usage_from
from llm_service.core.types import Chunk, ThinkingBlock, ToolFragment, Usage

log = logging.getLogger(__name__)

# Anthropic error types in an SSE error event, as the HTTP status the same error would have had.
_ANTHROPIC_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


def anthropic_error_status(err: Any) -> int:
    """The HTTP status an Anthropic error object's type stands for (500 for an unknown one)."""
    return _ANTHROPIC_ERROR_STATUS.get(str(err.get("type")) if isinstance(err, dict) else "", 500)


class UpstreamStreamError(Exception):
    """An error the upstream reported inside a 200 stream, with the status it stands for."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def bad_response(detail: str) -> errors.UpstreamBadResponse:
    """The error for bytes that are not the wire format (what LiteLLM's JSON decode failure is classified as).

    The detail goes to the server log only: callers see the same words on both paths.
    """
    log.info("undecodable upstream answer", extra={"detail": detail})
    return errors.UpstreamBadResponse("the upstream answered with something that is not its wire format", upstream_status=200)


def _finish(raw: Any) -> str | None:
    return map_finish_reason(raw) if isinstance(raw, str) and raw else None


def estimated_usage(model: str, messages: list[dict[str, Any]], text: str) -> Usage | None:
    """LiteLLM's estimate for an OpenAI-format stream that reported no usage: its token counter (PC21)."""
    try:
        prompt = token_counter(model=model, messages=messages)
    except Exception:
        prompt = 0
    usage = Usage(input_tokens=prompt, output_tokens=token_counter(model=model, text=text, count_response_tokens=True))
    return None if usage == Usage() else usage


def _reasoning(delta: dict[str, Any]) -> str:
    value = delta.get("reasoning_content")
    if value is None:
        value = delta.get("reasoning")
    return value if isinstance(value, str) else ""


def _load(data: str | bytes) -> Any:
    """JSON, as json.loads reads it. orjson reads the strict JSON providers send in about a fifth of
    the time (a cost paid per streamed chunk); what it refuses and json takes (NaN, a byte-order
    mark, lone surrogate escapes) is read again by json, so the same bytes are accepted. One value
    differs: an integer past 64 bits is a float here (no field the decoders read holds one)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(data)
    except ValueError:
        raise bad_response("undecodable JSON") from None


_IN_BAND_TYPES = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "overloaded_error": 529,
}


def in_band_status(err: dict[str, Any]) -> int:
    """The HTTP status an error sent inside a stream stands for: its own status_code (Groq) or
    numeric code, else its type's, else 500. It is then mapped like an HTTP error of that status."""
    for key in ("status_code", "status", "code"):
        value = err.get(key)
        if isinstance(value, int) and 400 <= value <= 599:
            return value
        if isinstance(value, str) and value.isdigit() and 400 <= int(value) <= 599:
            return int(value)
    return _IN_BAND_TYPES.get(str(err.get("type") or ""), 500)


def openrouter_chunk(data: bytes) -> Chunk | None:
    """An OpenRouter stream payload: its reasoning is in `reasoning` only (LiteLLM ignores `reasoning_content` there)."""
    return openai_chunk(data, reasoning_key="reasoning")


def openai_chunk(data: bytes, reasoning_key: str = "") -> Chunk | None:
    """One `data:` payload of an OpenAI chat stream; None for [DONE]."""
    if data == b"[DONE]":
        return None
    obj = _load(data)
    if not isinstance(obj, dict):
        raise bad_response("a stream event that is not an object")
    if obj.get("error"):  # an error sent inside the 200 stream, with or without choices beside it
        err = obj["error"] if isinstance(obj["error"], dict) else {"message": str(obj["error"])}
        raise UpstreamStreamError(in_band_status(err), str(err.get("message") or "stream error"))
    out = Chunk(model=obj.get("model") or "", usage=usage_from(obj.get("usage")))
    choices = obj.get("choices")
    if not choices:
        return out
    choice = choices[0]
    delta = choice.get("delta") or {}
    out.text, listed_reasoning = content_parts(delta.get("content"))
    out.reasoning = (delta.get(reasoning_key) or "") if reasoning_key else _reasoning(delta)
    out.reasoning += listed_reasoning
    out.refusal = delta["refusal"] if isinstance(delta.get("refusal"), str) else ""
    out.citations = citations_from(delta.get("annotations"))
    for tc in delta.get("tool_calls") or ():
        fn = tc.get("function") or {}
        out.tool_fragments.append(
            ToolFragment(
                index=tc.get("index"),
                id=tc.get("id") or None,
                name=fn.get("name") or None,
                arguments=fn.get("arguments") or "",
            )
        )
    out.finish_reason = _finish(choice.get("finish_reason"))
    return out


def openai_response(body: bytes) -> Chunk:
    """A whole OpenAI chat completion."""
    obj = _load(body)
    if not isinstance(obj, dict):
        raise bad_response("a response that is not an object")
    out = Chunk(model=obj.get("model") or "", usage=usage_from(obj.get("usage")))
    choices = obj.get("choices")
    if not choices:
        return out
    choice = choices[0]
    msg = choice.get("message") or {}
    out.text, listed_reasoning = content_parts(msg.get("content"))
    out.reasoning = _reasoning(msg) + listed_reasoning
    out.refusal = msg["refusal"] if isinstance(msg.get("refusal"), str) else ""
    out.citations = citations_from(msg.get("annotations"))
    for i, tc in enumerate(msg.get("tool_calls") or ()):
        fn = tc.get("function") or {}
        out.tool_fragments.append(
            ToolFragment(index=i, id=tc.get("id") or f"call_{i}", name=fn.get("name") or "", arguments=fn.get("arguments") or "")
        )
    out.finish_reason = _finish(choice.get("finish_reason"))
    return out


def _anthropic_reasoning_tokens(raw: dict[str, Any], reasoning: str, output_tokens: int) -> int:
    """Thinking tokens as LiteLLM reports them: the upstream's count, else its estimate of the thinking text."""
    details = raw.get("output_tokens_details")
    if isinstance(details, dict) and isinstance(details.get("thinking_tokens"), int):
        return min(max(0, int_or_zero(details["thinking_tokens"])), output_tokens)
    if reasoning:
        return max(0, min(int_or_zero(token_counter(text=reasoning, count_response_tokens=True)), output_tokens))
    return 0


def own_iterations_usage(iterations: Any) -> Usage | None:
    """Anthropic's usage summed over `usage.iterations` (compaction runs as an iteration of its own,
    left out of the top-level counts), leaving out iterations that name another model (an
    advisor's). Input tokens include cache reads and writes. None when there are no iterations."""
    if not isinstance(iterations, list | tuple) or not iterations:
        return None
    own = [it for it in iterations if isinstance(it, dict) and not it.get("model")]
    if not own:
        return None
    read = sum(int_or_zero(it.get("cache_read_input_tokens")) for it in own)
    written = sum(int_or_zero(it.get("cache_creation_input_tokens")) for it in own)
    return Usage(
        input_tokens=sum(int_or_zero(it.get("input_tokens")) for it in own) + read + written,
        output_tokens=sum(int_or_zero(it.get("output_tokens")) for it in own),
        cached_input_tokens=read,
        cache_creation_tokens=written,
    )


def anthropic_usage(raw: Any, input_from: dict[str, Any] | None = None, reasoning: str = "") -> Usage | None:
    """Usage as LiteLLM reports Anthropic's: input tokens include cache reads and writes."""
    if not isinstance(raw, dict):
        return None
    summed = own_iterations_usage(raw.get("iterations"))
    if summed is not None:  # compaction: the top-level counts leave its iteration out
        return replace(summed, reasoning_tokens=_anthropic_reasoning_tokens(raw, reasoning, summed.output_tokens))
    base = input_from if input_from is not None else raw
    cache_read = int_or_zero(base.get("cache_read_input_tokens"))
    cache_creation = int_or_zero(base.get("cache_creation_input_tokens"))
    output = int_or_zero(raw.get("output_tokens"))
    usage = Usage(
        input_tokens=int_or_zero(base.get("input_tokens")) + cache_read + cache_creation,
        output_tokens=output,
        cached_input_tokens=cache_read,
        cache_creation_tokens=cache_creation,
        reasoning_tokens=_anthropic_reasoning_tokens(raw, reasoning, output),
    )
    return None if usage == Usage() else usage


_ANTHROPIC_INPUT_KEYS = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


class AnthropicStream:
    """Anthropic Messages SSE events into Chunks, keeping what spans events (blocks, input usage)."""

    def __init__(self) -> None:
        self.model = ""
        self._input: dict[str, Any] = {}
        self._blocks: dict[int, str] = {}  # content block index -> type
        self._tool_index: dict[int, int] = {}  # content block index -> tool-call index
        self._tools = 0
        self._reasoning: list[str] = []

    def chunk(self, data: bytes) -> Chunk | None:
        """One `data:` payload; None for events that carry nothing (ping, block stop, message stop)."""
        obj = _load(data)
        if not isinstance(obj, dict):
            raise bad_response("a stream event that is not an object")
        kind = obj.get("type")
        if kind == "content_block_delta":
            return self._delta(obj)
        if kind == "message_start":
            message = obj.get("message") or {}
            self.model = message.get("model") or ""
            usage = message.get("usage")
            self._input = usage if isinstance(usage, dict) else {}
            return Chunk(model=self.model, usage=anthropic_usage(self._input))
        if kind == "content_block_start":
            return self._block_start(obj)
        if kind == "message_delta":
            delta = obj.get("delta") or {}
            raw_usage = obj.get("usage") or {}
            # message_delta repeats the cumulative input and cache counts (they grow when server
            # tools run, and some Anthropic-compatible upstreams fill them only here): they win.
            if isinstance(raw_usage, dict):
                self._input = {**self._input, **{k: raw_usage[k] for k in _ANTHROPIC_INPUT_KEYS if raw_usage.get(k) is not None}}
            usage = anthropic_usage(raw_usage, self._input, "".join(self._reasoning))
            return Chunk(model=self.model, usage=usage, finish_reason=_finish(delta.get("stop_reason")))
        if kind == "error":
            err = obj.get("error") or {}
            raise UpstreamStreamError(anthropic_error_status(err), str(err.get("message") or "stream error"))
        return None

    def _block_start(self, obj: dict[str, Any]) -> Chunk | None:
        index = int_or_zero(obj.get("index"))
        block = obj.get("content_block") or {}
        kind = str(block.get("type") or "")
        self._blocks[index] = kind
        if kind == "tool_use":
            self._tool_index[index] = self._tools
            self._tools += 1
            fragment = ToolFragment(
                index=self._tool_index[index], id=block.get("id") or None, name=block.get("name") or None, arguments=""
            )
            return Chunk(model=self.model, tool_fragments=[fragment])
        if kind == "redacted_thinking":
            return Chunk(model=self.model, thinking_blocks=[ThinkingBlock(redacted_data=str(block.get("data") or ""))])
        if kind == "text" and block.get("text"):
            return Chunk(model=self.model, text=str(block["text"]))
        return None

    def _delta(self, obj: dict[str, Any]) -> Chunk | None:
        delta = obj.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            return Chunk(model=self.model, text=delta.get("text") or "")
        if kind == "input_json_delta":
            block = int_or_zero(obj.get("index"))
            if self._blocks.get(block, "tool_use") != "tool_use":
                return None  # a server tool's input (server_tool_use, mcp_tool_use): the provider runs it, not the caller
            index = self._tool_index.get(block, max(self._tools - 1, 0))
            return Chunk(model=self.model, tool_fragments=[ToolFragment(index, None, None, delta.get("partial_json") or "")])
        if kind == "thinking_delta":
            text = delta.get("thinking") or ""
            self._reasoning.append(text)
            return Chunk(model=self.model, reasoning=text, thinking_blocks=[ThinkingBlock(thinking=text)])
        if kind == "signature_delta":
            return Chunk(model=self.model, thinking_blocks=[ThinkingBlock(signature=delta.get("signature") or "")])
        if kind == "citations_delta":
            return Chunk(model=self.model, citations=citations_from([delta.get("citation")]))
        return None


def anthropic_response(body: bytes) -> Chunk:
    """A whole Anthropic Messages response."""
    obj = _load(body)
    if not isinstance(obj, dict):
        raise bad_response("a response that is not an object")
    if obj.get("type") == "error":
        err = obj.get("error") or {}
        raise UpstreamStreamError(anthropic_error_status(err), str(err.get("message") or "error"))
    out = Chunk(model=obj.get("model") or "")
    text: list[str] = []
    reasoning: list[str] = []
    tools = 0
    for block in obj.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            text.append(block.get("text") or "")
            out.citations += citations_from(block.get("citations"))
        elif kind == "tool_use":
            arguments = json.dumps(block.get("input") or {})
            out.tool_fragments.append(ToolFragment(tools, block.get("id") or f"call_{tools}", block.get("name") or "", arguments))
            tools += 1
        elif kind == "thinking":
            reasoning.append(block.get("thinking") or "")
            out.thinking_blocks.append(
                ThinkingBlock(thinking=block.get("thinking") or "", signature=block.get("signature") or "")
            )
        elif kind == "redacted_thinking":
            out.thinking_blocks.append(ThinkingBlock(redacted_data=block.get("data") or ""))
    out.text = "".join(text)
    out.reasoning = "".join(reasoning)
    out.usage = anthropic_usage(obj.get("usage"), reasoning=out.reasoning)
    out.finish_reason = _finish(obj.get("stop_reason"))
    return out
