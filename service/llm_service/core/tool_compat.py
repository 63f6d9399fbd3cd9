"""OpenRouter tool compatibility (PC23): tool calling by instruction when no endpoint has native tools.

When OpenRouter answers that no endpoint for the model supports tool use, the
call is made again without native tools, with a system instruction asking for
one JSON object. The reply is read as that JSON object, else as
`<|tool_call_start|>…<|tool_call_end|>` markers, else as plain `tool(arg, key=value)`
lines, else as plain text. The model is remembered for an hour, so later calls go
straight to compatibility mode.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import time
from collections.abc import Callable
from typing import Any

from llm_service.core.types import Completion, ToolCall, ToolSpec

ERROR_SNIPPETS = (
    "no endpoints found that support tool use",
    "no endpoints available that support tool use",
    "provider routing",
)
CACHE_TTL_S = 3600.0
_MARKER_RE = re.compile(r"<\|tool_call_start\|>\s*(.*?)\s*<\|tool_call_end\|>", re.DOTALL)
_TEXT_KEYS = ("assistant_response", "content", "response")
_ARGUMENT_KEYS = ("arguments", "tool_input", "input")


def rejects_native_tools(error_text: str) -> bool:
    """Whether an OpenRouter error says it has no endpoint with tool use for the model."""
    lowered = error_text.lower()
    return any(snippet in lowered for snippet in ERROR_SNIPPETS)


class CompatModels:
    """Models known to need compatibility mode, each for CACHE_TTL_S (OpenRouter's routing changes)."""

    def __init__(self, ttl_s: float = CACHE_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._expires: dict[str, float] = {}

    def remember(self, model: str) -> None:
        """Send this model's tool calls through compatibility mode for the next ttl_s."""
        self._expires[model] = self._clock() + self._ttl_s

    def __contains__(self, model: object) -> bool:
        expires = self._expires.get(str(model))
        if expires is None:
            return False
        if expires <= self._clock():
            del self._expires[str(model)]
            return False
        return True


def instruction(system: str, tools: tuple[ToolSpec, ...]) -> str:
    """The caller's system prompt followed by the JSON-only tool instruction."""
    specs = [{"name": t.name, "description": t.description, "parameters": t.parameters} for t in tools]
    text = (
        "Tool compatibility mode is active because this OpenRouter model does not support "
        "native function calling on the routed provider.\n"
        "Return exactly one JSON object and nothing else.\n"
        'Schema: {"assistant_response": string, "tool_calls": [{"name": string, "arguments": object}]}\n'
        "Rules:\n"
        "- If a tool is required, put one or more entries in tool_calls and do not invent tool results.\n"
        "- If no tool is required, set tool_calls to [] and put the full answer in assistant_response.\n"
        "- Only use tool names from the allowed tool list.\n"
        "- arguments must always be valid JSON objects.\n"
        f"Allowed tools:\n{json.dumps(specs, ensure_ascii=True)}"
    )
    return f"{system}\n\n{text}" if system else text


def parse_reply(content: str, tools: tuple[ToolSpec, ...]) -> tuple[str, list[ToolCall]]:
    """The answer text and the tool calls in a compatibility-mode reply. Unknown tools are dropped."""
    payload = _json_object(content)
    if payload is None:
        return _text_tool_calls(content, tools)
    text = next((payload[k] for k in _TEXT_KEYS if isinstance(payload.get(k), str)), "")
    raw_calls: Any = payload.get("tool_calls")
    if not raw_calls and {"name", "arguments"} <= payload.keys():
        raw_calls = [payload]
    elif isinstance(payload.get("tool_call"), dict):
        raw_calls = [payload["tool_call"]]
    if not isinstance(raw_calls, list):
        raw_calls = []
    allowed = {t.name for t in tools}
    calls: list[ToolCall] = []
    for raw in raw_calls:
        if not isinstance(raw, dict):
            continue
        function: dict[str, Any] = raw["function"] if isinstance(raw.get("function"), dict) else {}
        name = raw.get("name") or raw.get("tool_name") or function.get("name")
        if not isinstance(name, str) or name not in allowed:
            continue
        arguments = next((raw[k] for k in _ARGUMENT_KEYS if raw.get(k) is not None), function.get("arguments"))
        calls.append(ToolCall(_call_id(len(calls)), name, json.dumps(_as_object(arguments), ensure_ascii=False)))
    return text.strip(), calls


def _call_id(n: int) -> str:
    return f"openrouter_compat_{time.time_ns()}_{n}"


def _as_object(arguments: Any) -> dict[str, Any]:
    if arguments is None:
        return {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return {"_raw": arguments}
    return arguments if isinstance(arguments, dict) else {"value": arguments}


def _json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in the text: the whole text, a fenced block, or embedded."""
    stripped = text.strip()
    candidates = [stripped]
    lines = stripped.splitlines()
    if stripped.startswith("```") and len(lines) >= 3:
        candidates.append("\n".join(lines[1:-1]).strip())
    decoder = json.JSONDecoder()
    for candidate in candidates:
        try:
            parsed = json.loads(candidate)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
        for start, ch in enumerate(candidate):
            if ch != "{":
                continue
            try:
                parsed, _ = decoder.raw_decode(candidate[start:])
            except json.JSONDecodeError:
                continue
            if isinstance(parsed, dict):
                return parsed
    return None


def _text_tool_calls(content: str, tools: tuple[ToolSpec, ...]) -> tuple[str, list[ToolCall]]:
    """Calls written as `<|tool_call_start|>…<|tool_call_end|>` blocks or as `tool(...)` lines."""
    by_name = {t.name: t for t in tools}
    calls: list[ToolCall] = []
    for match in _MARKER_RE.finditer(content):
        calls.extend(_call_expressions(match.group(1), by_name, len(calls)))
    kept: list[str] = []
    for line in _MARKER_RE.sub("", content).splitlines():
        candidate = line.strip()
        if len(candidate) > 1 and candidate.startswith("`") and candidate.endswith("`"):
            candidate = candidate[1:-1].strip()
        found = _call_expressions(candidate, by_name, len(calls)) if candidate else []
        if found:
            calls.extend(found)
        else:
            kept.append(line)
    return "\n".join(kept).strip(), calls


def _call_expressions(block: str, by_name: dict[str, ToolSpec], first_index: int) -> list[ToolCall]:
    """`tool(a, k=v)` or `[tool(...), other(...)]` with literal arguments only."""
    try:
        node = ast.parse(block.strip(), mode="eval").body
    except SyntaxError:
        return []
    calls: list[ToolCall] = []
    for call in node.elts if isinstance(node, ast.List) else [node]:
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name) or call.func.id not in by_name:
            continue
        try:
            arguments = _literal_arguments(call, by_name[call.func.id])
        except (ValueError, SyntaxError, TypeError):
            continue
        calls.append(ToolCall(_call_id(first_index + len(calls)), call.func.id, json.dumps(arguments, ensure_ascii=False)))
    return calls


def _literal_arguments(call: ast.Call, tool: ToolSpec) -> dict[str, Any]:
    """Positional arguments in schema order, then keywords; literals only."""
    order = list(tool.parameters.get("properties", {}))
    if len(call.args) > len(order):
        raise ValueError("more positional arguments than the schema has properties")
    arguments: dict[str, Any] = {}
    for name, value in zip(order, call.args, strict=False):
        arguments[name] = ast.literal_eval(value)
    for keyword in call.keywords:
        if keyword.arg is None:
            raise ValueError("** arguments are not literals")
        arguments[keyword.arg] = ast.literal_eval(keyword.value)
    return arguments


def read_back(reply: Completion, tools: tuple[ToolSpec, ...]) -> Completion:
    """A compatibility-mode reply (JSON only) as the answer it stands for: text and tool calls,
    finishing with tool_calls when it made any."""
    text, calls = parse_reply(reply.text, tools)
    finish = dataclasses.replace(reply.finish, finish_reason="tool_calls") if calls else reply.finish
    return Completion(text, reply.reasoning, tuple(calls), finish)
