"""The `litellm` transport: `litellm.acompletion` for every provider LiteLLM knows.

LiteLLM sends the request and parses the answer; `decode` turns its objects into
Chunks and `classify` its exceptions into LLMErrors. Its own retries are off (the
engine makes every retry), and LiteLLM's stream has no idle timeout of its own, so each
chunk is awaited here with the route's idle_timeout_s, bounded by the caller's deadline.

LiteLLM's stream wrapper keeps every chunk it makes (about 3.5 KB each) until the stream
ends, for its own end-of-stream usage. Here its list is replaced by a `ChunkLog` that sums
the usage as chunks pass and keeps only the few chunks LiteLLM still reads, so a stream's
memory does not grow with its length; the usage is then made here, never read from the
summary chunk LiteLLM builds at the end out of the chunks it kept.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import litellm

from llm_service.core import errors
from llm_service.core.assembly import StreamAssembler
from llm_service.core.classify import upstream_error
from llm_service.core.decode import decode_response, decode_stream_chunk, usage_from
from llm_service.core.direct_decode import estimated_usage
from llm_service.core.direct_request import direct_provider
from llm_service.core.embedding import EmbedAnswer, answered_vectors
from llm_service.core.request import UpstreamRequest
from llm_service.core.retry import Deadline
from llm_service.core.settings import Route
from llm_service.core.types import Chunk, Usage

log = logging.getLogger(__name__)

# LiteLLM reads its first chunk (the id and model it logs) and its last two (its check for a
# model repeating one chunk); a few more are kept for whatever else it looks back at.
CHUNKS_KEPT = 8


class LiteLLMTransport:
    """Carries any request LiteLLM can send."""

    def prepare(self, route: Route, req: UpstreamRequest) -> LiteLLMRequest:
        """The request as LiteLLM's keyword arguments (it carries every request)."""
        return LiteLLMRequest(route, req)

    def prepare_embedding(self, route: Route, req: UpstreamRequest) -> LiteLLMEmbedding:
        """The embedding request as `litellm.aembedding`'s keyword arguments (it carries every one)."""
        return LiteLLMEmbedding(route, req)

    async def aclose(self) -> None:
        """LiteLLM keeps its own clients for the life of the process."""


class LiteLLMRequest:
    """One request, sent through `litellm.acompletion` once per attempt."""

    transport = "litellm"

    def __init__(self, route: Route, req: UpstreamRequest) -> None:
        self.route = route
        self.req = req

    async def complete(self, deadline: Deadline) -> Chunk:
        """The whole answer."""
        try:
            async with asyncio.timeout(deadline.remaining()):
                return decode_response(await litellm.acompletion(**self.req.kwargs))
        except TimeoutError:
            raise deadline.passed() from None
        except errors.LLMError:
            raise
        except Exception as exc:
            raise upstream_error(exc, self.req, self.route.name) from None

    async def stream(self, deadline: Deadline) -> LiteLLMStream:
        """The stream LiteLLM opened."""
        try:
            async with asyncio.timeout(deadline.remaining()):
                response = await litellm.acompletion(**self.req.kwargs)
        except TimeoutError:
            raise deadline.passed() from None
        except Exception as exc:
            raise upstream_error(exc, self.req, self.route.name) from None
        return LiteLLMStream(self, response, deadline)


class LiteLLMEmbedding:
    """One embedding request, sent through `litellm.aembedding` once per attempt."""

    transport = "litellm"

    def __init__(self, route: Route, req: UpstreamRequest) -> None:
        self.route = route
        self.req = req

    async def embed(self, deadline: Deadline) -> EmbedAnswer:
        """The vectors LiteLLM decoded, in input order, and the tokens it billed."""
        try:
            async with asyncio.timeout(deadline.remaining()):
                response = await litellm.aembedding(**self.req.kwargs)
        except TimeoutError:
            raise deadline.passed() from None
        except Exception as exc:
            raise upstream_error(exc, self.req, self.route.name) from None
        usage = usage_from(getattr(response, "usage", None))
        return EmbedAnswer(
            vectors=answered_vectors(getattr(response, "data", None), len(self.req.kwargs["input"])),
            input_tokens=usage.input_tokens if usage is not None else 0,
            model=str(getattr(response, "model", "") or ""),
        )


class LiteLLMStream:
    """LiteLLM's streamed answer, chunk by chunk, with the route's idle timeout."""

    def __init__(self, request: LiteLLMRequest, response: Any, deadline: Deadline) -> None:
        self._request = request
        self._response = response
        self._deadline = deadline
        self._log = ChunkLog.install(response)

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[Chunk]:
        route, req, deadline = self._request.route, self._request.req, self._deadline
        iterator = self._response.__aiter__()
        idle_s = route.idle_timeout_s
        content = finished = False  # what the chunks so far carried (PC35)
        while True:
            remaining = deadline.remaining()
            try:
                async with asyncio.timeout(idle_s if remaining is None else min(idle_s, remaining)):
                    raw = await iterator.__anext__()
            except StopAsyncIteration:
                break
            except TimeoutError:
                if remaining is not None and remaining <= idle_s:
                    raise deadline.passed() from None
                raise errors.UpstreamStalled(f"the upstream sent nothing for {idle_s:g} s (the route's idle_timeout_s)") from None
            except Exception as exc:
                if content and finished and finish_reason_rejected(exc):
                    log.warning("LiteLLM failed after the answer was complete; it is delivered", extra={"route": route.name})
                    return
                raise upstream_error(exc, req, route.name) from None
            chunk = decode_stream_chunk(raw)
            content = content or bool(chunk.text or chunk.tool_fragments)
            finished = finished or chunk.finish_reason is not None
            chunk.usage = None  # the provider's usage went through the ChunkLog; this is LiteLLM's summary
            yield chunk
        if direct_provider(req) is not None and getattr(self._response, "received_finish_reason", "") is None:
            # LiteLLM ends an OpenAI-format or Anthropic stream the provider cut cleanly with a
            # "stop" of its own making; its wrapper still knows no finish reason was received.
            # (Gemini's, Ollama's and the Responses API's streams are not judged this way.)
            raise errors.truncated()

    def fallback_usage(self, asm: StreamAssembler, finished: bool) -> Usage | None:
        """The usage the provider reported, summed over the stream's chunks as LiteLLM sums them (PC21).

        A stream read to its end that asked for usage (stream_options) and got none is
        estimated with LiteLLM's token counter, as LiteLLM and the direct transport do.
        """
        if self._log is None:
            return None
        usage = self._log.usage()
        if usage is None and finished and self._log.seen and "stream_options" in self._request.req.kwargs:
            req = self._request.req
            return estimated_usage(req.model, req.kwargs["messages"], asm.text)
        return usage

    async def aclose(self) -> None:
        """Close LiteLLM's stream so its HTTP connection is released."""
        closer = getattr(self._response, "aclose", None)
        if closer is None:
            return
        try:
            await closer()
        except Exception:
            log.debug("closing the upstream stream failed", exc_info=True)


def finish_reason_rejected(exc: BaseException) -> bool:
    """LiteLLM refusing a non-standard finish reason once the stream is over (Kimi sends such values):
    its validation error names finish_reason, or it reports failing at "building chunks" (PC35)."""
    said = f"{exc} {exc.__cause__}" if exc.__cause__ is not None else str(exc)
    return ("finish_reason" in said and "validation error" in said.lower()) or "building chunks" in str(exc).lower()


class ChunkLog(list[Any]):
    """Stands in for LiteLLM's `CustomStreamWrapper.chunks`: the usage of every chunk appended,
    summed as they pass (with LiteLLM's `calculate_total_usage`), and only the first chunk and
    the last CHUNKS_KEPT kept."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0
        self._summed: Any = None  # LiteLLM's Usage over the chunks so far that carried one

    @classmethod
    def install(cls, response: Any) -> ChunkLog | None:
        """Put a ChunkLog in place of the wrapper's list (with what it holds already)."""
        chunks = getattr(response, "chunks", None)
        if not isinstance(chunks, list):
            return None
        log_ = cls()
        for chunk in chunks:
            log_.append(chunk)
        response.chunks = log_
        return log_

    def append(self, chunk: Any) -> None:
        """Sum the chunk's usage, keep it, and drop the oldest but the first past twice the bound."""
        self.seen += 1
        if _carries_usage(chunk):
            from litellm.litellm_core_utils.streaming_handler import calculate_total_usage

            previous: list[Any] = [] if self._summed is None else [{"usage": self._summed}]
            self._summed = calculate_total_usage(chunks=[*previous, chunk])
        super().append(chunk)
        if len(self) > 2 * CHUNKS_KEPT + 1:
            del self[1 : len(self) - CHUNKS_KEPT]

    def usage(self) -> Usage | None:
        """The usage the chunks so far reported (None when none did)."""
        return usage_from(self._summed)


def _carries_usage(chunk: Any) -> bool:
    try:
        return "usage" in chunk and chunk["usage"] is not None
    except Exception:
        return False
