"""Assembling chunks into events: text as it comes, then tool calls, text end and finish.

Tool-call fragments are joined by index, with a new id opening a new call even
when the upstream reuses index 0 for every call (PC19); truncated arguments are
repaired (PC20); usage is taken from whichever chunk carried it (PC21). Tool calls a model
wrote as `<tool_code>` text (Gemini does) become tool calls, the blocks kept out of the text (PC32).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from llm_service.core.errors import ToolArgumentsInvalid
from llm_service.core.types import Chunk, Citation, ReasoningDelta, TextDelta, ThinkingBlock, ToolCall, Usage

log = logging.getLogger(__name__)

REPAIR_MAX_TRIM_CHARS = 256
TOOL_CODE_OPEN = "<tool_code>"
TOOL_CODE_CLOSE = "</tool_code>"


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


def synthetic_call_id(name: str, arguments: Any) -> str:
    """The id of a tool call written as text: `synth_` and 12 hex digits of md5(name:arguments, keys sorted) (PC32)."""
    return "synth_" + hashlib.md5(f"{name}:{json.dumps(arguments, sort_keys=True)}".encode()).hexdigest()[:12]


class ToolCodeFilter:
    """Takes `<tool_code>{"name": {args}}</tool_code>` blocks out of streamed text as tool calls (PC32).

    Text is passed on as it comes, except what may be the start of a block (a trailing
    `<tool_…`) or an open block, which is held until it is closed (or the answer ends);
    whitespace right after a block is dropped with it.
    """

    def __init__(self) -> None:
        self.calls: list[ToolCall] = []
        self._held = ""
        self._after_block = False

    def text(self, piece: str) -> str:
        """The part of the new text to send now."""
        if not self._held and not self._after_block and "<" not in piece:
            return piece
        rest, self._held = self._held + piece, ""
        out: list[str] = []
        while rest:
            if self._after_block:
                rest = rest.lstrip()
                if not rest:
                    break
                self._after_block = False
            start = rest.find(TOOL_CODE_OPEN)
            if start < 0:
                keep = _open_tag_prefix(rest)
                out.append(rest[: len(rest) - keep])
                self._held = rest[len(rest) - keep :]
                break
            out.append(rest[:start])
            end = rest.find(TOOL_CODE_CLOSE, start + len(TOOL_CODE_OPEN))
            if end < 0:
                self._held = rest[start:]
                break
            self._read_block(rest[start + len(TOOL_CODE_OPEN) : end])
            self._after_block = True
            rest = rest[end + len(TOOL_CODE_CLOSE) :]
        return "".join(out)

    def flush(self) -> str:
        """The text held at the answer's end (an unclosed block is text)."""
        held, self._held = self._held, ""
        return held

    def _read_block(self, raw: str) -> None:
        body = raw.strip()
        try:
            payload = json.loads(body)
        except json.JSONDecodeError:
            log.warning("a <tool_code> block that is not JSON was dropped", extra={"block": body[:200]})
            return
        if not isinstance(payload, dict):
            log.warning("a <tool_code> block that is not a JSON object was dropped", extra={"block": body[:200]})
            return
        for name, arguments in payload.items():
            args = arguments if isinstance(arguments, dict) else {}
            self.calls.append(ToolCall(synthetic_call_id(name, arguments), name, json.dumps(args, ensure_ascii=False)))


def _open_tag_prefix(text: str) -> int:
    """How many characters at the end of text may begin `<tool_code>`."""
    for size in range(min(len(TOOL_CODE_OPEN) - 1, len(text)), 0, -1):
        if text.endswith(TOOL_CODE_OPEN[:size]):
            return size
    return 0


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
        self.citations: list[Citation] = []
        self._tool_code = ToolCodeFilter()

    def feed(self, chunk: Chunk) -> list[TextDelta | ReasoningDelta]:
        """Take one chunk; return the events to send now."""
        out: list[TextDelta | ReasoningDelta] = []
        if chunk.reasoning:
            self.reasoning_parts.append(chunk.reasoning)
            out.append(ReasoningDelta(chunk.reasoning))
        if chunk.text and (text := self._tool_code.text(chunk.text)):
            self.text_parts.append(text)
            out.append(TextDelta(text))
        for frag in chunk.tool_fragments:
            self._add_fragment(frag.index, frag.id, frag.name, frag.arguments)
        if chunk.thinking_blocks:
            self._merge_thinking(chunk.thinking_blocks)
        if chunk.refusal:
            self.refusal_parts.append(chunk.refusal)
        self.citations.extend(c for c in chunk.citations if c not in self.citations)  # a source cited twice once
        if chunk.finish_reason:
            self.finish_reason = chunk.finish_reason
            if held := self._tool_code.flush():
                self.text_parts.append(held)
                out.append(TextDelta(held))
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
        """Whether any tool-call fragment arrived (calls written as text are not counted)."""
        return bool(self._slots)

    @property
    def has_content(self) -> bool:
        """Text, tool calls or a refusal: an answer with none is an empty response (PC14) or empty stream (PC15)."""
        return bool(self.text_parts) or self.has_tool_calls or bool(self._tool_code.calls) or self.refused

    @property
    def refusal(self) -> str:
        """The model's refusal text, if it declined."""
        return "".join(self.refusal_parts)

    @property
    def refused(self) -> bool:
        """The model declined: refusal text, or a finish that says so (Anthropic's "refusal")."""
        return bool(self.refusal_parts) or self.finish_reason in ("refusal", "content_filter")

    def tool_calls(self) -> list[ToolCall]:
        """The assembled calls in order, arguments parsed or repaired (raises ToolArgumentsInvalid), then
        the calls written as text (PC32)."""
        calls = []
        for _, slot in sorted(self._slots.items()):
            calls.append(ToolCall(slot.id, slot.name, parse_tool_arguments("".join(slot.arguments), slot.name)))
        return calls + self._tool_code.calls

    def final_finish_reason(self) -> str:
        """The raw finish reason, pause_turn and a stop after tool calls normalised (PC25); a refusal is content_filter.
        Calls written as text leave it as the provider sent it (PC32)."""
        if self.refusal_parts and not self.text_parts and not self.has_tool_calls:
            return "content_filter"
        return normalise_finish_reason(self.finish_reason, self.has_tool_calls)
