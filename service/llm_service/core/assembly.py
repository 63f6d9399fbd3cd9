"""Assembling chunks into events: text as it comes, then tool calls, text end and finish.

Tool-call fragments are joined by index, with a new id opening a new call even
when the upstream reuses index 0 for every call (PC19); truncated arguments are
repaired (PC20); usage is taken from whichever chunk carried it (PC21).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from llm_service.core.errors import ToolArgumentsInvalid
from llm_service.core.types import Chunk, ReasoningDelta, TextDelta, ThinkingBlock, ToolCall, Usage

REPAIR_MAX_TRIM_CHARS = 256


def _close_fragment(fragment: str) -> str:
    """Balance a truncated JSON fragment: drop a dangling , : { [, close the string and brackets."""
    text = fragment.rstrip()
    while text and text[-1] in ",:{[":
        text = text[:-1].rstrip()
    stack: list[str] = []
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append(ch)
        elif ch in "}]" and stack and stack[-1] == ("{" if ch == "}" else "["):
            stack.pop()
    if in_string:
        if escaped:
            text = text[:-1]
        text += '"'
    return text + "".join("}" if opener == "{" else "]" for opener in reversed(stack))


def repair_json_object(raw: str) -> dict[str, Any] | None:
    """Recover a JSON object from truncated text, trimming up to 256 characters from the end (PC20)."""
    stripped = raw.strip()
    if not stripped.startswith("{"):
        return None
    for trim in range(min(len(stripped), REPAIR_MAX_TRIM_CHARS) + 1):
        candidate = stripped[: len(stripped) - trim].rstrip()
        if not candidate:
            break
        try:
            parsed = json.loads(_close_fragment(candidate))
        except json.JSONDecodeError:
            continue
        if isinstance(parsed, dict):
            return parsed
    return None


def parse_tool_arguments(raw: str, tool_name: str) -> str:
    """The call's arguments as JSON object text: as sent when valid, repaired when truncated.

    Raises ToolArgumentsInvalid naming the tool when nothing can be recovered; never `{}` for garbage.
    """
    if not raw.strip():
        return "{}"
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        return raw
    repaired = repair_json_object(raw)
    if repaired is None:
        raise ToolArgumentsInvalid(tool_name)
    return json.dumps(repaired, ensure_ascii=False)


@dataclass
class _Slot:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


def normalise_finish_reason(raw: str | None, has_tool_calls: bool) -> str:
    """Kimi's pause_turn becomes tool_calls or stop (PC25); others pass through.

    LiteLLM 1.106 already turns an unknown finish reason such as pause_turn into
    "stop", so a stop (or no reason) with tool calls collected is reported as
    tool_calls too: the caller has calls to run either way. Some OpenAI-compatible
    servers also say "stop" after tool calls.
    """
    if raw == "pause_turn":
        return "tool_calls" if has_tool_calls else "stop"
    if has_tool_calls and raw in (None, "", "stop"):
        return "tool_calls"
    return raw or ""


class StreamAssembler:
    """Consumes one attempt's chunks; emits deltas at once and the tail when asked."""

    def __init__(self) -> None:
        self.text_parts: list[str] = []
        self.reasoning_parts: list[str] = []
        self._slots: dict[int, _Slot] = {}
        self._last_slot = 0
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.cost_usd = 0.0
        self.model = ""
        self.thinking: list[ThinkingBlock] = []
        self.refusal_parts: list[str] = []

    def feed(self, chunk: Chunk) -> list[TextDelta | ReasoningDelta]:
        """Take one chunk; return the events to send now."""
        out: list[TextDelta | ReasoningDelta] = []
        if chunk.reasoning:
            self.reasoning_parts.append(chunk.reasoning)
            out.append(ReasoningDelta(chunk.reasoning))
        if chunk.text:
            self.text_parts.append(chunk.text)
            out.append(TextDelta(chunk.text))
        for frag in chunk.tool_fragments:
            self._add_fragment(frag.index, frag.id, frag.name, frag.arguments)
        if chunk.thinking_blocks:
            self._merge_thinking(chunk.thinking_blocks)
        if chunk.refusal:
            self.refusal_parts.append(chunk.refusal)
        if chunk.finish_reason:
            self.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.model:
            self.model = chunk.model
        return out

    def _add_fragment(self, index: int | None, call_id: str | None, name: str | None, arguments: str) -> None:
        idx = index if index is not None else 0
        if call_id:
            existing = next((k for k, s in self._slots.items() if s.id == call_id), None)
            if existing is not None:
                idx = existing
            elif idx in self._slots and self._slots[idx].id not in ("", call_id):
                idx = max(self._slots) + 1
            self._last_slot = idx
        else:
            idx = self._last_slot if self._slots else idx
        slot = self._slots.setdefault(idx, _Slot())
        if call_id:
            slot.id = call_id
        if name:
            slot.name = name
        if arguments:
            slot.arguments.append(arguments)

    def _merge_thinking(self, blocks: list[ThinkingBlock]) -> None:
        for b in blocks:
            if b.redacted_data:
                self.thinking.append(b)
                continue
            if self.thinking and not self.thinking[-1].signature and not self.thinking[-1].redacted_data:
                last = self.thinking[-1]
                last.thinking += b.thinking
                last.signature = b.signature or last.signature
            else:
                self.thinking.append(ThinkingBlock(b.thinking, b.signature))

    @property
    def text(self) -> str:
        """All text so far."""
        return "".join(self.text_parts)

    @property
    def reasoning(self) -> str:
        """All reasoning so far."""
        return "".join(self.reasoning_parts)

    @property
    def has_tool_calls(self) -> bool:
        """Whether any tool-call fragment arrived."""
        return bool(self._slots)

    @property
    def has_content(self) -> bool:
        """Text, tool calls or a refusal: an answer with none is an empty response (PC14) or empty stream (PC15)."""
        return bool(self.text_parts) or self.has_tool_calls or self.refused

    @property
    def refusal(self) -> str:
        """The model's refusal text, if it declined."""
        return "".join(self.refusal_parts)

    @property
    def refused(self) -> bool:
        """The model declined: refusal text, or a finish that says so (Anthropic's "refusal")."""
        return bool(self.refusal_parts) or self.finish_reason in ("refusal", "content_filter")

    def tool_calls(self) -> list[ToolCall]:
        """The assembled calls in order, arguments parsed or repaired (raises ToolArgumentsInvalid)."""
        calls = []
        for _, slot in sorted(self._slots.items()):
            calls.append(ToolCall(slot.id, slot.name, parse_tool_arguments("".join(slot.arguments), slot.name)))
        return calls

    def final_finish_reason(self) -> str:
        """The raw finish reason, pause_turn and a stop after tool calls normalised (PC25); a refusal is content_filter."""
        if self.refusal_parts and not self.text_parts and not self.has_tool_calls:
            return "content_filter"
        return normalise_finish_reason(self.finish_reason, self.has_tool_calls)
