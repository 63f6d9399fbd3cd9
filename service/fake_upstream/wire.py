"""The providers' wire formats: OpenAI chat completions and Anthropic Messages, JSON and SSE."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from fake_upstream.script import Script, ToolCallSpec

_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _call_id(tc: ToolCallSpec, i: int, prefix: str) -> str:
    return tc.id or f"{prefix}{i + 1}"


def _fragments(arguments: str, fragment: bool) -> list[str]:
    if not fragment or len(arguments) < 4:
        return [arguments]
    step = max(1, len(arguments) // 3)
    return [arguments[i : i + step] for i in range(0, len(arguments), step)]


def error_body(script: Script, anthropic: bool) -> dict[str, Any]:
    """The JSON error body for an HTTP error status, in the provider's format."""
    err = dict(script.error or {})
    message = err.pop("message", f"fake upstream error {script.status}")
    if anthropic:
        etype = err.pop("type", _ANTHROPIC_ERROR_TYPES.get(script.status, "api_error"))
        return {"type": "error", "error": {"type": etype, "message": message, **err}}
    etype = err.pop("type", "rate_limit_exceeded" if script.status == 429 else "invalid_request_error")
    return {"error": {"message": message, "type": etype, "param": None, "code": err.pop("code", None), **err}}


# --- OpenAI chat completions ---------------------------------------------------------------


def _openai_usage(script: Script) -> dict[str, Any] | None:
    u = script.usage
    if u is None:
        return None
    return {
        "prompt_tokens": u.input,
        "completion_tokens": u.output,
        "total_tokens": u.input + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cached},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning},
    }


def openai_json(script: Script, model: str) -> dict[str, Any]:
    """A non-streamed chat completion."""
    message: dict[str, Any] = {"role": "assistant", "content": script.text or None}
    if script.reasoning:
        message["reasoning_content"] = script.reasoning
    if script.tool_calls:
        message["tool_calls"] = [
            {"id": _call_id(tc, i, "call_"), "type": "function", "function": {"name": tc.name, "arguments": tc.arguments}}
            for i, tc in enumerate(script.tool_calls)
        ]
    body: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": script.model or model,
        "choices": [{"index": 0, "message": message, "finish_reason": script.effective_finish_reason()}],
    }
    if script.usage_mode != "none":
        body["usage"] = _openai_usage(script)
    return body


def openai_sse(script: Script, model: str) -> Iterator[bytes]:
    """The SSE events of a streamed chat completion, one chunk each."""
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": script.model or model}

    def chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, Any] | None = None) -> bytes:
        obj: dict[str, Any] = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if usage is not None:
            obj["usage"] = usage
        return f"data: {_dumps(obj)}\n\n".encode()

    yield chunk({"role": "assistant", "content": ""})
    for piece in _split(script.reasoning):
        yield chunk({"reasoning_content": piece})
    for piece in script.text_pieces():
        yield chunk({"content": piece})
    for i, tc in enumerate(script.tool_calls):
        index = 0 if script.tool_index_zero else i
        frags = _fragments(tc.arguments, script.fragment_tool_calls)
        first = {
            "index": index,
            "id": _call_id(tc, i, "call_"),
            "type": "function",
            "function": {"name": tc.name, "arguments": frags[0]},
        }
        yield chunk({"tool_calls": [first]})
        for frag in frags[1:]:
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": frag}}]})
    usage = _openai_usage(script)
    finish = script.effective_finish_reason()
    yield chunk({}, finish, usage if script.usage_mode == "finish" else None)
    if script.usage_mode == "trailing" and usage is not None:
        yield f"data: {_dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode()
    yield b"data: [DONE]\n\n"


def _split(text: str) -> list[str]:
    if not text:
        return []
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


# --- Anthropic Messages --------------------------------------------------------------------


def _anthropic_usage(script: Script, output: bool = True) -> dict[str, Any]:
    u = script.usage
    if u is None or script.usage_mode == "none":
        return {"input_tokens": 0, "output_tokens": 0}
    return {  # Anthropic counts cache reads and writes apart from input_tokens; Usage.input is the total
        "input_tokens": max(0, u.input - u.cached - u.cache_creation),
        "output_tokens": u.output if output else 1,
        "cache_read_input_tokens": u.cached,
        "cache_creation_input_tokens": u.cache_creation,
    }


def anthropic_json(script: Script, model: str) -> dict[str, Any]:
    """A non-streamed Messages response."""
    content: list[dict[str, Any]] = []
    if script.reasoning:
        content.append({"type": "thinking", "thinking": script.reasoning, "signature": script.thinking_signature or "sig"})
    if script.redacted_thinking:
        content.append({"type": "redacted_thinking", "data": script.redacted_thinking})
    if script.text:
        content.append({"type": "text", "text": script.text})
    for i, tc in enumerate(script.tool_calls):
        try:
            args = json.loads(tc.arguments)
        except json.JSONDecodeError:
            args = {}
        content.append({"type": "tool_use", "id": _call_id(tc, i, "toolu_"), "name": tc.name, "input": args})
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": script.model or model,
        "content": content,
        "stop_reason": _anthropic_stop(script),
        "stop_sequence": None,
        "usage": _anthropic_usage(script),
    }


def anthropic_thinking_error(body: dict[str, Any]) -> str | None:
    """Anthropic's refusal of a request with thinking on whose last assistant turn made tool calls
    without the thinking blocks it came with; None when the request is acceptable."""
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "adaptive"):
        return None
    messages = body.get("messages") or []
    last = max((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"), default=None)
    if last is None:
        return None
    content = messages[last].get("content")
    blocks = content if isinstance(content, list) else []
    if not any(isinstance(b, dict) and b.get("type") == "tool_use" for b in blocks):
        return None
    first = blocks[0].get("type") if isinstance(blocks[0], dict) else None
    if first in ("thinking", "redacted_thinking"):
        return None
    return (
        f"messages.{last}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{first}`. When `thinking` "
        "is enabled, a final `assistant` message must start with a thinking block (preceeding the lastmost set of "
        "`tool_use` and `tool_result` blocks)."
    )


def _anthropic_stop(script: Script) -> str:
    reason = script.effective_finish_reason()
    return _ANTHROPIC_STOP.get(reason, reason)


def anthropic_sse(script: Script, model: str) -> Iterator[bytes]:
    """The SSE events of a streamed Messages response."""

    def event(name: str, data: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {_dumps({'type': name, **data})}\n\n".encode()

    message: dict[str, Any] = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": script.model or model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _anthropic_usage(script, output=False),
    }
    yield event("message_start", {"message": message})
    index = 0
    if script.reasoning:
        yield event("content_block_start", {"index": index, "content_block": {"type": "thinking", "thinking": ""}})
        for piece in _split(script.reasoning):
            yield event("content_block_delta", {"index": index, "delta": {"type": "thinking_delta", "thinking": piece}})
        yield event(
            "content_block_delta",
            {"index": index, "delta": {"type": "signature_delta", "signature": script.thinking_signature or "sig"}},
        )
        yield event("content_block_stop", {"index": index})
        index += 1
    if script.redacted_thinking:
        block = {"type": "redacted_thinking", "data": script.redacted_thinking}
        yield event("content_block_start", {"index": index, "content_block": block})
        yield event("content_block_stop", {"index": index})
        index += 1
    pieces = script.text_pieces()
    if pieces:
        yield event("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}})
        for piece in pieces:
            yield event("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": piece}})
        yield event("content_block_stop", {"index": index})
        index += 1
    for i, tc in enumerate(script.tool_calls):
        tool_block: dict[str, Any] = {"type": "tool_use", "id": _call_id(tc, i, "toolu_"), "name": tc.name, "input": {}}
        yield event("content_block_start", {"index": index, "content_block": tool_block})
        for frag in _fragments(tc.arguments, script.fragment_tool_calls):
            yield event("content_block_delta", {"index": index, "delta": {"type": "input_json_delta", "partial_json": frag}})
        yield event("content_block_stop", {"index": index})
        index += 1
    out = script.usage.output if script.usage is not None and script.usage_mode != "none" else 0
    yield event(
        "message_delta",
        {"delta": {"stop_reason": _anthropic_stop(script), "stop_sequence": None}, "usage": {"output_tokens": out}},
    )
    yield event("message_stop", {})


# --- Ollama /api/chat ------------------------------------------------------------------------

_OLLAMA_DONE = {"tool_calls": "stop"}


def _ollama_message(script: Script, text: str, with_tools: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if with_tools and script.tool_calls:
        message["tool_calls"] = [
            {"function": {"name": tc.name, "arguments": json.loads(tc.arguments)}} for tc in script.tool_calls
        ]
    return message


def _ollama_final(script: Script, model: str, message: dict[str, Any]) -> dict[str, Any]:
    u = script.usage
    reason = script.effective_finish_reason()
    body: dict[str, Any] = {
        "model": script.model or model,
        "created_at": "2026-01-01T00:00:00Z",
        "message": message,
        "done": True,
        "done_reason": _OLLAMA_DONE.get(reason, reason),
    }
    if u is not None and script.usage_mode != "none":
        body.update(prompt_eval_count=u.input, eval_count=u.output)
    return body


def ollama_json(script: Script, model: str) -> dict[str, Any]:
    """A non-streamed /api/chat answer."""
    return _ollama_final(script, model, _ollama_message(script, script.text, with_tools=True))


def ollama_ndjson(script: Script, model: str) -> Iterator[bytes]:
    """A streamed /api/chat answer: one JSON object per line, the last with done=true."""
    for piece in script.text_pieces():
        line = {
            "model": script.model or model,
            "created_at": "2026-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": piece},
            "done": False,
        }
        yield (_dumps(line) + "\n").encode()
    yield (_dumps(_ollama_final(script, model, _ollama_message(script, "", with_tools=True))) + "\n").encode()


# --- Gemini generateContent ------------------------------------------------------------------

_GEMINI_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "content_filter": "SAFETY"}


def _gemini_usage(script: Script) -> dict[str, Any] | None:
    u = script.usage
    if u is None or script.usage_mode == "none":
        return None
    return {
        "promptTokenCount": u.input,
        "candidatesTokenCount": u.output - u.reasoning,  # Gemini counts thoughts apart
        "totalTokenCount": u.input + u.output,
        "cachedContentTokenCount": u.cached,
        **({"thoughtsTokenCount": u.reasoning} if u.reasoning else {}),
    }


def _gemini_chunk(script: Script, model: str, parts: list[dict[str, Any]], finish: bool) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    body: dict[str, Any] = {"candidates": [candidate], "modelVersion": script.model or model, "responseId": "fake-gemini"}
    if finish:
        reason = script.effective_finish_reason()
        candidate["finishReason"] = _GEMINI_FINISH.get(reason, "OTHER")
        usage = _gemini_usage(script)
        if usage is not None:
            body["usageMetadata"] = usage
    return body


def _gemini_call_parts(script: Script) -> list[dict[str, Any]]:
    return [{"functionCall": {"name": tc.name, "args": json.loads(tc.arguments)}} for tc in script.tool_calls]


def gemini_json(script: Script, model: str) -> dict[str, Any]:
    """A non-streamed generateContent answer."""
    parts = ([{"text": script.text}] if script.text else []) + _gemini_call_parts(script)
    return _gemini_chunk(script, model, parts, finish=True)


def gemini_sse(script: Script, model: str) -> Iterator[bytes]:
    """A streamGenerateContent?alt=sse answer: text pieces, then tool calls with the finish."""
    pieces = script.text_pieces()
    for piece in pieces[:-1] if not script.tool_calls else pieces:
        yield f"data: {_dumps(_gemini_chunk(script, model, [{'text': piece}], finish=False))}\r\n\r\n".encode()
    last = _gemini_call_parts(script) if script.tool_calls else ([{"text": pieces[-1]}] if pieces else [])
    yield f"data: {_dumps(_gemini_chunk(script, model, last, finish=True))}\r\n\r\n".encode()


# --- OpenAI Responses API (the Codex backend) -----------------------------------------------


def _responses_usage(script: Script) -> dict[str, Any] | None:
    u = script.usage
    if u is None or script.usage_mode == "none":
        return None
    return {
        "input_tokens": u.input,
        "input_tokens_details": {"cached_tokens": u.cached},
        "output_tokens": u.output,
        "output_tokens_details": {"reasoning_tokens": u.reasoning},
        "total_tokens": u.input + u.output,
    }


def _responses_output(script: Script) -> list[dict[str, Any]]:
    output: list[dict[str, Any]] = []
    if script.text:
        output.append(
            {
                "id": "msg_fake",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": script.text, "annotations": []}],
            }
        )
    for i, tc in enumerate(script.tool_calls):
        output.append(
            {
                "id": f"fc_fake_{i + 1}",
                "type": "function_call",
                "status": "completed",
                "call_id": _call_id(tc, i, "call_"),
                "name": tc.name,
                "arguments": tc.arguments,
            }
        )
    return output


def _responses_object(script: Script, model: str, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "resp_fake",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": script.model or model,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "store": False,
    }
    if status == "completed":
        body["usage"] = _responses_usage(script)
    if script.effective_finish_reason() == "length" and status == "completed":
        body["status"] = "incomplete"
        body["incomplete_details"] = {"reason": "max_output_tokens"}
    return body


def responses_json(script: Script, model: str) -> dict[str, Any]:
    """A non-streamed Responses API answer."""
    return _responses_object(script, model, "completed", _responses_output(script))


def responses_sse(script: Script, model: str) -> Iterator[bytes]:
    """A streamed Responses API answer: output items with their deltas, then response.completed."""
    seq = 0

    def event(name: str, data: dict[str, Any]) -> bytes:
        nonlocal seq
        seq += 1
        return f"event: {name}\ndata: {_dumps({'type': name, 'sequence_number': seq, **data})}\n\n".encode()

    yield event("response.created", {"response": _responses_object(script, model, "in_progress", [])})
    output = _responses_output(script)
    for index, item in enumerate(output):
        if item["type"] == "message":
            yield event(
                "response.output_item.added", {"output_index": index, "item": {**item, "status": "in_progress", "content": []}}
            )
            for piece in script.text_pieces():
                yield event(
                    "response.output_text.delta",
                    {"item_id": item["id"], "output_index": index, "content_index": 0, "delta": piece, "logprobs": []},
                )
            yield event(
                "response.output_text.done",
                {"item_id": item["id"], "output_index": index, "content_index": 0, "text": script.text, "logprobs": []},
            )
        else:
            yield event(
                "response.output_item.added", {"output_index": index, "item": {**item, "status": "in_progress", "arguments": ""}}
            )
            for frag in _fragments(item["arguments"], script.fragment_tool_calls):
                yield event(
                    "response.function_call_arguments.delta", {"item_id": item["id"], "output_index": index, "delta": frag}
                )
            yield event(
                "response.function_call_arguments.done",
                {"item_id": item["id"], "output_index": index, "arguments": item["arguments"]},
            )
        yield event("response.output_item.done", {"output_index": index, "item": item})
    final = _responses_object(script, model, "completed", output)
    yield event("response.incomplete" if final["status"] == "incomplete" else "response.completed", {"response": final})
