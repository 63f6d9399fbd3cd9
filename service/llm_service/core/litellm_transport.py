"""The `litellm` transport: `litellm.acompletion` for every provider LiteLLM knows.

LiteLLM sends the request and parses the answer; `decode` turns its objects into
Chunks and `classify` its exceptions into LLMErrors. Its own retries are off (the
engine makes every retry), and LiteLLM's stream has no idle timeout of its own, so each
chunk is awaited here with the route's idle_timeout_s, bounded by the caller's deadline.
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
from llm_service.core.fast_request import fast_provider
from llm_service.core.request import UpstreamRequest
from llm_service.core.retry import Deadline
from llm_service.core.settings import Route
from llm_service.core.types import Chunk, Usage

log = logging.getLogger(__name__)


class LiteLLMTransport:
    """Carries any request LiteLLM can send."""

    def prepare(self, route: Route, req: UpstreamRequest) -> LiteLLMRequest:
        """The request as LiteLLM's keyword arguments (it carries every request)."""
        return LiteLLMRequest(route, req)

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


class LiteLLMStream:
    """LiteLLM's streamed answer, chunk by chunk, with the route's idle timeout."""

    def __init__(self, request: LiteLLMRequest, response: Any, deadline: Deadline) -> None:
        self._request = request
        self._response = response
        self._deadline = deadline

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[Chunk]:
        route, req, deadline = self._request.route, self._request.req, self._deadline
        iterator = self._response.__aiter__()
        idle_s = route.idle_timeout_s
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
                raise upstream_error(exc, req, route.name) from None
            yield decode_stream_chunk(raw)
        if fast_provider(req) is not None and getattr(self._response, "received_finish_reason", "") is None:
            # LiteLLM ends an OpenAI-format or Anthropic stream the provider cut cleanly with a
            # "stop" of its own making; its wrapper still knows no finish reason was received.
            # (Gemini's, Ollama's and the Responses API's streams are not judged this way.)
            raise errors.truncated()

    def fallback_usage(self, asm: StreamAssembler, finished: bool) -> Usage | None:
        """Usage rebuilt from the chunks LiteLLM kept, for providers that put none on a chunk (PC21)."""
        return summed_usage(self._response)

    async def aclose(self) -> None:
        """Close LiteLLM's stream so its HTTP connection is released."""
        closer = getattr(self._response, "aclose", None)
        if closer is None:
            return
        try:
            await closer()
        except Exception:
            log.debug("closing the upstream stream failed", exc_info=True)


def summed_usage(response: Any) -> Usage | None:
    """Usage from the stream's chunks LiteLLM kept (it sums them as its own end-of-stream estimate)."""
    chunks = getattr(response, "chunks", None)
    if not chunks:
        return None
    try:
        from litellm.litellm_core_utils.streaming_handler import calculate_total_usage

        return usage_from(calculate_total_usage(chunks=chunks))
    except Exception:
        return None
