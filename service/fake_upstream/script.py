"""What the fake upstream answers to one request: a Script, and the named scenarios."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Usage:
    """Token usage the fake reports."""

    input: int = 11
    output: int = 7
    cached: int = 0
    cache_creation: int = 0
    reasoning: int = 0


@dataclass(frozen=True)
class ToolCallSpec:
    """One tool call the fake answers with; arguments are sent as raw text, so they may be truncated."""

    name: str
    arguments: str
    id: str = ""


@dataclass(frozen=True)
class Script:
    """One scripted answer.

    status/headers/error make an HTTP error; body_raw sends a raw body (garbage, or a
    recorded answer) as raw_content_type (when unset: text/html for a body starting
    with "<", else application/json), in one piece, or cut into raw_write_bytes-byte
    writes of its UTF-8 bytes (so a write may end inside a character), or with
    raw_write_events in one write per event (after each blank line, or each line
    when the body has no blank line: NDJSON); sse_raw sends raw SSE lines. Otherwise the answer is text (split into
    `chunks` pieces when streamed), reasoning, and tool calls, with finish_reason
    and usage placed per usage_mode ("trailing": own chunk after the finish,
    "finish": on the finish chunk, "none": nowhere). Timing: first_byte_delay_s
    before the headers, chunk_delay_s between chunks, stall_after_chunks then
    stall_s of silence (keepalive_comments sends SSE comments meanwhile),
    disconnect_after_chunks drops the connection. fragment_tool_calls splits
    each call's arguments over several chunks; tool_index_zero gives every
    fragment index 0 (as LiteLLM's Responses bridge does). match_model makes
    the script apply only to requests for that model, match_key only to requests
    sent with that provider key. times repeats it.
    """

    text: str = "Hello from the fake upstream."
    chunks: int = 0
    reasoning: str = ""
    thinking_signature: str = ""
    redacted_thinking: str = ""  # Anthropic: a redacted_thinking block with this data, after the thinking
    tool_calls: tuple[ToolCallSpec, ...] = ()
    fragment_tool_calls: bool = True
    tool_index_zero: bool = False
    finish_reason: str = ""
    usage: Usage | None = field(default_factory=Usage)
    usage_mode: str = "trailing"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    body_raw: str | None = None
    raw_content_type: str = ""
    raw_write_bytes: int = 0
    raw_write_events: bool = False
    sse_raw: tuple[str, ...] | None = None
    first_byte_delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    stall_after_chunks: int | None = None
    stall_s: float = 0.0
    keepalive_comments: bool = False
    disconnect_after_chunks: int | None = None
    match_model: str | None = None
    match_key: str | None = None
    model: str = ""
    times: int = 1

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Script:
        """Build a Script from JSON (the control API's form)."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown script keys: {sorted(unknown)}")
        kwargs = dict(data)
        if "usage" in kwargs and kwargs["usage"] is not None:
            kwargs["usage"] = Usage(**kwargs["usage"])
        if "tool_calls" in kwargs:
            kwargs["tool_calls"] = tuple(ToolCallSpec(**tc) for tc in kwargs["tool_calls"])
        if "sse_raw" in kwargs and kwargs["sse_raw"] is not None:
            kwargs["sse_raw"] = tuple(kwargs["sse_raw"])
        return cls(**kwargs)

    def text_pieces(self) -> list[str]:
        """The text split into the scripted number of stream chunks (by words when unset)."""
        if not self.text:
            return []
        if self.chunks <= 0:
            words = self.text.split(" ")
            return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]
        size = max(1, -(-len(self.text) // self.chunks))
        return [self.text[i : i + size] for i in range(0, len(self.text), size)]

    def raw_writes(self) -> list[bytes]:
        """body_raw's UTF-8 bytes as the writes its delivery options ask for (one write when none)."""
        data = (self.body_raw or "").encode()
        if self.raw_write_bytes > 0:
            return [data[i : i + self.raw_write_bytes] for i in range(0, len(data), self.raw_write_bytes)]
        if self.raw_write_events:
            sep = b"\r\n\r\n" if b"\r\n\r\n" in data else b"\n\n" if b"\n\n" in data else b"\n"
            pieces = [piece + sep for piece in data.split(sep)]
            pieces[-1] = pieces[-1][: -len(sep)]
            return [piece for piece in pieces if piece]
        return [data]

    def effective_finish_reason(self) -> str:
        """The finish reason to send: the scripted one, else tool_calls/stop."""
        if self.finish_reason:
            return self.finish_reason
        return "tool_calls" if self.tool_calls else "stop"


def scenario_for_model(model: str, last_user_text: str) -> Script:
    """The answer for a request that no queued script matched.

    A model name may carry a scenario after a colon or as its last dash part:
    `…:tools`, `…:parallel-tools`, `…:empty`, `…:slow`, `…:long`, `…:fail` (HTTP 500),
    `…:drop` (the connection drops mid-stream). Anything else
    echoes the prompt back, which is what the default `make run` route shows.
    """
    scenario = model.rsplit(":", 1)[1] if ":" in model else ""
    if scenario == "tools":
        return Script(text="", tool_calls=(ToolCallSpec("get_weather", '{"city": "Paris", "days": 3}', "call_1"),))
    if scenario == "parallel-tools":
        return Script(
            text="",
            tool_calls=(
                ToolCallSpec("get_weather", '{"city": "Paris"}', "call_1"),
                ToolCallSpec("get_time", '{"tz": "Europe/Paris"}', "call_2"),
            ),
        )
    if scenario == "empty":
        return Script(text="")
    if scenario == "fail":
        return Script(status=500, error={"message": "scripted failure"})
    if scenario == "drop":
        return Script(text="this answer is cut short after a few words", disconnect_after_chunks=3)
    if scenario == "slow":
        return Script(text="This answer arrives slowly, one word at a time.", chunk_delay_s=0.2)
    if scenario == "long":
        return Script(text=" ".join(f"token{i}" for i in range(200)), chunks=200)
    said = last_user_text.strip() or "nothing"
    if len(said) > 200:
        said = said[:200] + "…"
    return Script(text=f"Hello! This is the fake upstream answering through LiteLLM. You said: {said}")
