"""The provider core as the servicer sees it: the engine, its planner and both transports, built once.

Layout of the core: `plan` decides each call once (request, transport, quirks);
`engine` runs its attempts, retries and fallbacks by the `policy` table; a `transport`
carries each attempt (`direct_transport` with the service's own decoders, or
`litellm_transport`); `assembly` turns chunks into events; `resilience` keeps each
route's retry budget and circuit breaker.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from llm_service.core.direct_transport import DirectTransport
from llm_service.core.dumps import FailedRequestDumps
from llm_service.core.embedding import EmbedCall, Embedding, EmbedPlanner, route_kind
from llm_service.core.engine import Engine
from llm_service.core.litellm_transport import LiteLLMTransport
from llm_service.core.observer import Observer
from llm_service.core.plan import Planner
from llm_service.core.resilience import RouteHealthBook
from llm_service.core.retry import Deadline
from llm_service.core.settings import CoreSettings, Route
from llm_service.core.types import CallRequest, Completion, Event


class Provider:
    """Completes, streams and counts calls on the configured routes."""

    def __init__(self, settings: CoreSettings, observer: Observer) -> None:
        self._transports = (DirectTransport(), LiteLLMTransport())
        self._planner = Planner(*self._transports, settings.claude_code, settings.hive_api_base)
        dumps = FailedRequestDumps(settings.debug_dump_dir, settings.debug_dump_keep) if settings.debug_dump_dir else None
        health = RouteHealthBook(settings.resilience, observer.breaker_changed)
        self.engine = Engine(settings, self._planner, health, observer, dumps, EmbedPlanner(*self._transports))

    def stream(self, route: Route, call: CallRequest, deadline: Deadline) -> AsyncGenerator[Event, None]:
        """See Engine.stream."""
        return self.engine.stream(route, call, deadline)

    async def complete(self, route: Route, call: CallRequest, deadline: Deadline) -> Completion:
        """See Engine.complete."""
        return await self.engine.complete(route, call, deadline)

    async def embed(self, route: Route, call: EmbedCall, deadline: Deadline) -> Embedding:
        """See Engine.embed."""
        return await self.engine.embed(route, call, deadline)

    def kind(self, route: Route) -> str:
        """The route's kind: "chat" or "embedding" (see embedding.route_kind)."""
        return route_kind(route)

    async def count_tokens(self, route: Route, call: CallRequest) -> tuple[int, str]:
        """See Planner.count_tokens."""
        return await self._planner.count_tokens(route, call)

    async def aclose(self) -> None:
        """Close the transports' connection pools."""
        for transport in self._transports:
            await transport.aclose()
