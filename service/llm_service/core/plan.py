"""The plan of one call on one route, decided once before any attempt.

A plan fixes what every attempt sends and how: the request (built once), the transport
that carries it, whether the upstream call streams underneath, and whether tools go in
OpenRouter's compatibility mode. The provider quirks that change the shape of a call are
decided here and nowhere else:

- MiniMax's streamed chunks break LiteLLM's parser, so a streamed call is sent whole and
  its answer replayed as events (PC24);
- the Codex backend only streams, so a whole-answer call is streamed and collected (PC06),
  as is one on a route with a first_token_timeout_s, which a whole answer has no token for;
- an OpenRouter model known to have no endpoint with native tools gets its tools as an
  instruction and answers in JSON, read back into text and tool calls (PC23).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

from llm_service.core import errors, thinking, tool_compat
from llm_service.core.assembly import StreamAssembler
from llm_service.core.direct_request import direct_provider
from llm_service.core.documents import refuse_what_the_route_cannot_read
from llm_service.core.request import UpstreamRequest, build_request
from llm_service.core.settings import ClaudeCodeConfig, Route
from llm_service.core.tokens import estimate_tokens
from llm_service.core.transport import Prepared, Transport
from llm_service.core.types import CallRequest, Completion, Finish, GatewayInfo, Usage


@dataclass(frozen=True)
class Plan:
    """How every attempt of one call on one route is made."""

    route: Route
    call: CallRequest
    request: UpstreamRequest
    prepared: Prepared
    streamed: bool  # the upstream call streams
    tool_compat: bool  # tools are sent as an instruction, the reply read back (PC23)

    def empty_is_final(self, finish_reason: str | None) -> bool:
        """An empty answer is not retried when the token budget ran out, nor (for a whole answer)
        after an assistant turn, where saying nothing is a valid reply (PC14)."""
        if finish_reason == "length":
            return True
        if self.streamed:
            return False
        last = next((m.get("role") for m in reversed(self.request.kwargs["messages"]) if m.get("role") != "system"), None)
        return last == "assistant"

    def completion(self, asm: StreamAssembler, gateway: GatewayInfo) -> Completion:
        """The answer an attempt assembled, read back from compatibility mode's JSON where it was on."""
        finish = Finish(
            finish_reason=asm.final_finish_reason(),
            usage=asm.usage or Usage(),
            cost_usd=asm.cost_usd,
            provider_model=asm.model or self.request.model,
            gateway=gateway,
            thinking_blocks=tuple(replace(b, provider=thinking.origin(self.route.model)) for b in asm.thinking),
            refusal=asm.refusal,
            citations=tuple(asm.citations),
        )
        if self.tool_compat:
            return tool_compat.read_back(Completion(asm.text, asm.reasoning, (), finish), self.call.tools)
        return Completion(asm.text, asm.reasoning, tuple(asm.tool_calls()), finish)


class Planner:
    """Makes plans: the route's transport (direct where it can carry the request) and the quirks."""

    def __init__(self, direct: Transport, litellm: Transport, cc: ClaudeCodeConfig, hive_api_base: str) -> None:
        self._direct = direct
        self._litellm = litellm
        self._cc = cc
        self._hive_api_base = hive_api_base
        self.compat_models = tool_compat.CompatModels()  # OpenRouter models seen refusing native tools

    def plan(self, route: Route, call: CallRequest, *, streamed: bool, tool_compat_mode: bool = False) -> Plan:
        """The plan for call on route; streamed says what the caller asked for."""
        if not route.ready:
            assert route.key_source is not None
            raise errors.RouteNotReady(
                f"route '{route.name}' has no provider key on the server: set {route.key_source.describe()}"
            )
        req = built = self._build(route, call, streamed, tool_compat_mode)
        if tool_compat_mode or (call.tools and req.is_openrouter and req.model in self.compat_models):
            streamed, tool_compat_mode = False, True
        elif req.is_minimax:
            streamed = False
        elif req.is_codex or route.first_token_timeout_s is not None:
            streamed = True  # Codex only streams; a first-token timeout needs a first token to wait for
        if built.stream != streamed or (tool_compat_mode and "tools" in built.kwargs):
            req = self._build(route, call, streamed, tool_compat_mode)
        _refuse_image_urls_litellm_would_fetch(req, call)
        refuse_what_the_route_cannot_read(route, req.model, call.messages)
        prepared = (self._direct.prepare(route, req) if route.transport == "direct" else None) or self._litellm.prepare(
            route, req
        )
        assert prepared is not None  # LiteLLM's transport carries every request
        return Plan(route, call, req, prepared, streamed, tool_compat_mode)

    async def count_tokens(self, route: Route, call: CallRequest) -> tuple[int, str]:
        """Input tokens of the request this call would send on the route (PC27): LiteLLM's counter
        for the model, else characters / 4; and which of the two counted."""
        return await asyncio.to_thread(self._counted, route, call)  # building a large request is work too

    def _counted(self, route: Route, call: CallRequest) -> tuple[int, str]:
        req = self._build(route, call, False, False)
        return estimate_tokens(req.model, req.kwargs["messages"], req.kwargs.get("tools"))

    def _build(self, route: Route, call: CallRequest, streamed: bool, tool_compat_mode: bool) -> UpstreamRequest:
        return build_request(
            route,
            call,
            stream=streamed,
            cc=self._cc,
            hive_api_base=self._hive_api_base,
            timeout_s=route.timeout_s,
            system_override=tool_compat.instruction(call.system, call.tools) if tool_compat_mode else None,
            tools_override=() if tool_compat_mode else None,
        )


def _refuse_image_urls_litellm_would_fetch(req: UpstreamRequest, call: CallRequest) -> None:
    """Caller image URLs go only to providers that fetch them themselves (OpenAI-compatible chat, the
    Responses API, Anthropic for https). For the others LiteLLM would download the URL itself,
    synchronously on the event loop, from a host the caller chose: such a request is refused."""
    provider = "openai" if req.is_codex else direct_provider(req)
    if provider is not None and provider != "anthropic":
        return
    for i, message in enumerate(call.messages):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            url = str((part.get("image_url") or {}).get("url", "")) if part.get("type") == "image_url" else ""
            if url.startswith("http://") or (url.startswith("https://") and provider is None):
                raise errors.InvalidRequest(
                    f"messages[{i}].parts[{j}].image_url.url",
                    "this route's provider does not take this image URL itself, and the server does not fetch "
                    "caller URLs: send the image as inline_image" + (" or as an https URL" if provider else ""),
                )
