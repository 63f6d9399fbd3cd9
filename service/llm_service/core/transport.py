"""The seam between the engine and the wire: what a transport does for one attempt.

A transport prepares a request once per call plan and sends it once per attempt, whole
or streamed. It owns everything about the wire: the connection, the caller's deadline
and the route's idle timeout while it waits, decoding the answer into `Chunk`s, and
turning every failure into an `LLMError` (so the engine decides only what happens
between attempts). Two transports exist: `direct` (the service's own HTTP client and
decoders, for OpenAI-compatible chat and Anthropic Messages) and `litellm`
(`litellm.acompletion`, for every provider LiteLLM knows).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol

from llm_service.core.assembly import StreamAssembler
from llm_service.core.request import UpstreamRequest
from llm_service.core.retry import Deadline
from llm_service.core.settings import Route
from llm_service.core.types import Chunk, Usage

if TYPE_CHECKING:
    from llm_service.core.embedding import EmbedAnswer


class UpstreamStream(Protocol):
    """One streamed answer. Iterating raises LLMError on failure; aclose releases the connection."""

    def __aiter__(self) -> AsyncIterator[Chunk]: ...

    def fallback_usage(self, asm: StreamAssembler, finished: bool) -> Usage | None:
        """The usage to report when the stream carried none (finished: it was read to its end)."""
        ...

    async def aclose(self) -> None: ...


class Prepared(Protocol):
    """A request ready to send, as many times as the attempts need."""

    transport: str  # the transport's name, for logs

    async def complete(self, deadline: Deadline) -> Chunk:
        """The whole answer; raises LLMError."""
        ...

    async def stream(self, deadline: Deadline) -> UpstreamStream:
        """The answer's stream once its headers arrived; raises LLMError."""
        ...


class PreparedEmbedding(Protocol):
    """An embedding request ready to send, as many times as the attempts need."""

    transport: str  # the transport's name, for logs

    async def embed(self, deadline: Deadline) -> EmbedAnswer:
        """A vector per input, in order; raises LLMError."""
        ...


class Transport(Protocol):
    """Prepares requests for the wire it speaks."""

    def prepare(self, route: Route, req: UpstreamRequest) -> Prepared | None:
        """The request ready to send, or None when this transport cannot carry it."""
        ...

    def prepare_embedding(self, route: Route, req: UpstreamRequest) -> PreparedEmbedding | None:
        """The embedding request ready to send, or None when this transport cannot carry it."""
        ...

    async def aclose(self) -> None:
        """Release pooled connections."""
        ...
