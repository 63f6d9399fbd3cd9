"""Plain types the core speaks: the call it is asked for, and the events it answers with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call; parameters is a JSON Schema object."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ReasoningAsk:
    """What a caller asked of a reasoning model: an effort ("none", "minimal", "low", "medium",
    "high"; "" for the route's default) and a thinking budget in tokens (None: the route's default)."""

    effort: str = ""
    budget_tokens: int | None = None


@dataclass(frozen=True)
class CallRequest:
    """A call, provider-neutral. messages are OpenAI chat-format dicts (what LiteLLM takes)."""

    messages: list[dict[str, Any]]
    system: str = ""
    system_dynamic_suffix: str = ""  # the part of the system prompt kept out of the prompt cache (PC33)
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str | dict[str, Any] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    json_mode: bool = False
    response_format: dict[str, Any] | None = None
    max_retries: int | None = None
    reasoning: ReasoningAsk = ReasoningAsk()
    large: bool = False  # the request is large enough that building its upstream request leaves the event loop


@dataclass(frozen=True)
class Usage:
    """Token usage of one call."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0
    provider_cost_usd: float = 0.0  # what the provider itself said the call cost (OpenRouter's usage.cost), 0 if nothing

    def is_empty(self) -> bool:
        """True when no input or output tokens were reported."""
        return self.input_tokens == 0 and self.output_tokens == 0


@dataclass
class ToolFragment:
    """A piece of a streamed tool call, as the upstream sent it."""

    index: int | None
    id: str | None
    name: str | None
    arguments: str


@dataclass
class ThinkingBlock:
    """A signed reasoning block, returned to be sent back unchanged."""

    thinking: str = ""
    signature: str = ""
    redacted_data: str = ""
    provider: str = ""  # who signed it (the route's thinking origin), set when the answer is finished


@dataclass(frozen=True)
class Citation:
    """A source the answer cites, found by a tool the provider ran (web search, web fetch)."""

    url: str
    title: str = ""
    cited_text: str = ""


@dataclass
class Chunk:
    """What one upstream chunk (or a whole non-streamed response) carried, provider-neutral."""

    text: str = ""
    reasoning: str = ""
    tool_fragments: list[ToolFragment] = field(default_factory=list)
    thinking_blocks: list[ThinkingBlock] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str = ""
    refusal: str = ""  # the model declined: OpenAI's delta/message `refusal` text
    citations: list[Citation] = field(default_factory=list)


# --- events the core emits ---------------------------------------------------------------------


@dataclass(frozen=True)
class TextDelta:
    """New answer text."""

    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    """New reasoning text."""

    text: str


@dataclass(frozen=True)
class ToolCall:
    """A complete tool call; arguments_json is a JSON object as text."""

    id: str
    name: str
    arguments_json: str


@dataclass(frozen=True)
class TextEnd:
    """The answer's text is complete."""


@dataclass(frozen=True)
class GatewayInfo:
    """What the gateway did for the call."""

    route: str
    attempts: int
    upstream_s: float
    deployment: str = ""  # the deployment that answered, by its configured name (routes with several)


@dataclass(frozen=True)
class Finish:
    """The end of a successful answer."""

    finish_reason: str
    usage: Usage
    cost_usd: float
    provider_model: str
    gateway: GatewayInfo
    thinking_blocks: tuple[ThinkingBlock, ...] = ()
    refusal: str = ""  # the model's refusal; finish_reason is then "content_filter"
    citations: tuple[Citation, ...] = ()  # sources a provider-run tool found, in the order cited


Event = TextDelta | ReasoningDelta | ToolCall | TextEnd | Finish


@dataclass(frozen=True)
class Completion:
    """A whole answer, as Complete returns it."""

    text: str
    reasoning: str
    tool_calls: tuple[ToolCall, ...]
    finish: Finish

    def events(self) -> list[Event]:
        """The event sequence a stream gives for this answer (PC24: a stream sent whole underneath)."""
        events: list[Event] = []
        if self.reasoning:
            events.append(ReasoningDelta(self.reasoning))
        if self.text:
            events.append(TextDelta(self.text))
        events.extend(self.tool_calls)
        if self.text:
            events.append(TextEnd())
        events.append(self.finish)
        return events
