"""The `direct` transport: the service's own HTTP client and decoders, for OpenAI-compatible
chat and Anthropic Messages routes.

LiteLLM's provider configuration still decides the request (`fast_request`); this module
sends it over one pooled aiohttp session and reads the answer (`fast_decode`), SSE line by
line. Failures are described as LiteLLM describes the same answer (through its own
exception mapping), so `classify` makes the same LLMError of them on both transports.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from litellm import exceptions as lx
from litellm.constants import AIOHTTP_CONNECTOR_LIMIT, AIOHTTP_KEEPALIVE_TIMEOUT
from litellm.litellm_core_utils.exception_mapping_utils import exception_type
from litellm.llms.base_llm.chat.transformation import BaseLLMException

from llm_service.core import errors
from llm_service.core.assembly import StreamAssembler
from llm_service.core.classify import upstream_error
from llm_service.core.fast_decode import (
    AnthropicStream,
    UpstreamStreamError,
    anthropic_response,
    estimated_usage,
    openai_chunk,
    openai_response,
    openrouter_chunk,
)
from llm_service.core.fast_request import OPENAI_SDK_PROVIDERS, HttpCall, fast_provider, prepare
from llm_service.core.request import UpstreamRequest
from llm_service.core.retry import Deadline
from llm_service.core.settings import Route
from llm_service.core.types import Chunk, Usage

log = logging.getLogger(__name__)
ERROR_BODY_MAX_BYTES = 64 * 1024


def sdk_error(call: HttpCall, status: int, text: str, headers: Any) -> Exception:
    """What LiteLLM makes of an HTTP error the openai SDK reported: its message and body, then LiteLLM's mapping."""
    text = text.strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        return litellm_error(call, status, text or f"Error code: {status}", headers)
    body = parsed.get("error", parsed) if isinstance(parsed, dict) else None
    original = BaseLLMException(
        status_code=status,
        message=f"Error code: {status} - {parsed}",
        headers=dict(headers or {}),
        body=body if isinstance(body, dict) else None,
    )
    return mapped(call, original)


def litellm_error(call: HttpCall, status: int, message: str, headers: Any = None) -> Exception:
    """The exception LiteLLM's exception mapping makes of this status and message."""
    return mapped(call, BaseLLMException(status_code=status, message=message, headers=dict(headers or {})))


def mapped(call: HttpCall, original: Exception) -> Exception:
    """What LiteLLM's exception mapping makes of an exception on this provider."""
    try:
        exception_type(  # type: ignore[no-untyped-call]
            model=call.model,
            custom_llm_provider=call.provider,
            original_exception=original,
            completion_kwargs={},
            extra_kwargs={},
        )
    except Exception as mapped:
        return mapped
    return original  # pragma: no cover - exception_type always raises


def _timed_out(call: HttpCall) -> Exception:
    return lx.Timeout(message="the upstream timed out", model=call.model, llm_provider=call.provider)


def _connection_error(call: HttpCall, exc: aiohttp.ClientError) -> Exception:
    if call.wire == "anthropic":  # LiteLLM's Anthropic handler wraps it as its own error first
        return lx.APIConnectionError(message=f"AnthropicException - {exc}", llm_provider=call.provider, model=call.model)
    return mapped(call, exc)


class DirectTransport:
    """Carries the requests whose wire it speaks; says once per route when it cannot carry one."""

    def __init__(self) -> None:
        self._http = HttpClient()
        self._declined: set[str] = set()

    def prepare(self, route: Route, req: UpstreamRequest) -> DirectRequest | None:
        """The HTTP request LiteLLM's provider configuration makes of req, or None."""
        provider = fast_provider(req)
        call = None
        if provider is not None:
            try:
                call = prepare(req, provider)
            except Exception as exc:  # LiteLLM's path raises the same failure as its callers expect
                log.debug("direct request not prepared", exc_info=True, extra={"route": route.name})
                self._decline(route, f"preparing its request failed ({type(exc).__name__})")
                return None
        if call is None:
            self._decline(route, "it does not speak this provider's wire format or this request's mode")
            return None
        return DirectRequest(self._http, route, req, call)

    def _decline(self, route: Route, why: str) -> None:
        if route.name not in self._declined:
            self._declined.add(route.name)
            log.warning(f"route sent through LiteLLM: the direct transport cannot carry it: {why}", extra={"route": route.name})

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()


class DirectRequest:
    """One prepared HTTP request, sent once per attempt."""

    transport = "direct"

    def __init__(self, http: HttpClient, route: Route, req: UpstreamRequest, call: HttpCall) -> None:
        self._http = http
        self.route = route
        self.req = req
        self.call = call

    async def complete(self, deadline: Deadline) -> Chunk:
        """The whole answer."""
        try:
            async with asyncio.timeout(deadline.remaining()):
                return await self._http.complete(self.call, self.route.timeout_s)
        except TimeoutError:
            raise deadline.passed() from None
        except errors.LLMError:
            raise
        except Exception as exc:
            raise upstream_error(exc, self.req, self.route.name) from None

    async def stream(self, deadline: Deadline) -> FastStream:
        """The answer's stream, its idle timeout the route's idle_timeout_s."""
        try:
            async with asyncio.timeout(deadline.remaining()):
                response = await self._http.post(self.call, self.route.timeout_s)
        except TimeoutError:
            raise deadline.passed() from None
        except Exception as exc:
            raise upstream_error(exc, self.req, self.route.name) from None
        return FastStream(self, response, deadline)


class HttpClient:
    """Sends HttpCalls over a pooled aiohttp session, created on first use in the serving loop."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed or self._session.loop is not asyncio.get_running_loop():
            connector = aiohttp.TCPConnector(limit=AIOHTTP_CONNECTOR_LIMIT, keepalive_timeout=AIOHTTP_KEEPALIVE_TIMEOUT)
            self._session = aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",))
        return self._session

    async def aclose(self) -> None:
        """Close the pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, call: HttpCall, timeout_s: float) -> aiohttp.ClientResponse:
        """POST the request; an error status raises what LiteLLM raises for it."""
        timeout = aiohttp.ClientTimeout(total=None, connect=timeout_s, sock_read=timeout_s)
        try:
            response = await self._client().post(call.url, data=call.body, headers=call.headers, timeout=timeout)
        except TimeoutError:
            raise _timed_out(call) from None
        except aiohttp.ClientError as exc:
            if call.provider in OPENAI_SDK_PROVIDERS:  # the openai SDK's words for any failure to connect
                log.info("upstream connection failed", extra={"error": str(exc), "provider": call.provider})
                raise lx.APIConnectionError(
                    message="OpenAIException - Connection error.", llm_provider=call.provider, model=call.model
                ) from None
            raise _connection_error(call, exc) from None
        if response.status >= 400:
            try:
                text = (await response.content.read(ERROR_BODY_MAX_BYTES)).decode("utf-8", "replace")
            except (TimeoutError, aiohttp.ClientError):
                text = ""
            finally:
                response.release()
            failure = (sdk_error if call.provider in OPENAI_SDK_PROVIDERS else litellm_error)(
                call, response.status, text, response.headers
            )
            # The status the upstream answered, for classify: LiteLLM's mapping reports some as others.
            failure.__cause__ = BaseLLMException(status_code=response.status, message="")
            raise failure
        return response

    async def complete(self, call: HttpCall, timeout_s: float) -> Chunk:
        """POST a whole-answer request and decode the answer."""
        response = await self.post(call, timeout_s)
        try:
            body = await response.read()
        except TimeoutError:
            raise _timed_out(call) from None
        except aiohttp.ClientError as exc:
            raise _connection_error(call, exc) from None
        finally:
            response.release()
        try:
            return anthropic_response(body) if call.wire == "anthropic" else openai_response(body)
        except UpstreamStreamError as exc:
            raise litellm_error(call, exc.status_code, exc.message) from None


MAX_EVENT_BYTES = 16 * 1024 * 1024  # one SSE line: a whole tool call's arguments or an image can come in one
_SSE_OTHER_FIELDS = (b"event:", b"id:", b"retry:", b":")


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The body's lines, each up to MAX_EVENT_BYTES (aiohttp's readline stops near 512 KiB and
    raised a bare ValueError on the larger events providers do send)."""
    buffer = bytearray()
    while True:
        data = await content.readany()
        if not data:
            if buffer:
                yield bytes(buffer)
            return
        buffer += data
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            yield bytes(buffer[start : end + 1])
            start = end + 1
        del buffer[:start]
        if len(buffer) > MAX_EVENT_BYTES:
            raise errors.UpstreamBadResponse(
                f"the upstream sent an event larger than {MAX_EVENT_BYTES // (1024 * 1024)} MiB", upstream_status=200
            )


class _Stalled(Exception):
    """Set on the response's reader by the idle watchdog."""


class FastStream:
    """The chunks of one streamed answer; aclose() releases the connection however it ended.

    No chunk for the route's idle_timeout_s once the answer started (keep-alive comments do
    not count) ends it with UpstreamStalled; a chunk after the caller's deadline ends it with
    the deadline's error. A stream that ends without a finish reason was cut short
    (UpstreamBadResponse), however cleanly its body ended; one that never names its model is
    answered by the model asked for.
    """

    def __init__(self, request: DirectRequest, response: aiohttp.ClientResponse, deadline: Deadline) -> None:
        self._request = request
        self._call = request.call
        self._response = response
        self._deadline = deadline
        self._idle_s = idle_s = request.route.idle_timeout_s
        self._loop = asyncio.get_running_loop()
        self._last_chunk = self._loop.time()
        self._watchdog = self._loop.call_at(self._last_chunk + idle_s, self._watch)
        self._anthropic = AnthropicStream() if self._call.wire == "anthropic" else None
        self.decoded = 0  # chunks the upstream sent (not counting the closing one made here)

    def _watch(self) -> None:
        """The idle watchdog: one timer per idle period rather than one per chunk."""
        due = self._last_chunk + self._idle_s
        if self._loop.time() >= due:
            self._response.content.set_exception(_Stalled())
        else:
            self._watchdog = self._loop.call_at(due, self._watch)

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[Chunk]:
        call = self._call
        if self._anthropic is not None:
            decode = self._anthropic.chunk
        else:
            decode = openrouter_chunk if call.provider == "openrouter" else openai_chunk
        finished = named = False
        due = self._deadline.at
        try:
            async for line in _lines(self._response.content):
                if not line.startswith(b"data:"):
                    if line.strip() and not line.startswith(_SSE_OTHER_FIELDS):
                        raise errors.truncated(self._response.status)  # not SSE: said as LiteLLM's path finds it
                    continue  # event names, ids, comments (keep-alives), blank separators
                data = line[5:].strip()
                if not data:
                    continue
                chunk = decode(data)
                if chunk is None:
                    if self._anthropic is None:
                        break  # [DONE]
                    continue
                self.decoded += 1
                self._last_chunk = self._loop.time()
                if due is not None and time.monotonic() > due:
                    raise self._deadline.passed()
                finished = finished or chunk.finish_reason is not None
                named = named or bool(chunk.model)
                yield chunk
        except UpstreamStreamError as exc:
            raise self._failed(litellm_error(call, exc.status_code, exc.message)) from None
        except _Stalled:
            raise errors.UpstreamStalled(
                f"the upstream sent nothing for {self._idle_s:g} s (the route's idle_timeout_s)"
            ) from None
        except TimeoutError:
            raise self._failed(_timed_out(call)) from None
        except aiohttp.ClientError as exc:
            raise self._failed(_connection_error(call, exc)) from None
        finally:
            self._watchdog.cancel()
        if not finished:
            raise errors.truncated()
        if not named:
            yield Chunk(model=call.model)

    def _failed(self, exc: Exception) -> errors.LLMError:
        """A failure while reading, classified on its own: what was being handled when it was made
        (the decoder's or aiohttp's exception) is not the upstream's answer."""
        exc.__cause__ = None
        exc.__suppress_context__ = True
        return upstream_error(exc, self._request.req, self._request.route.name)

    def fallback_usage(self, asm: StreamAssembler, finished: bool) -> Usage | None:
        """For an OpenAI-format stream read to its end that reported no usage: an estimate (as LiteLLM makes)."""
        if finished and self._call.wire == "openai" and self.decoded:
            return estimated_usage(self._request.req.model, self._request.req.kwargs["messages"], asm.text)
        return None

    async def aclose(self) -> None:
        """Release the connection (closed, not pooled, when the answer was not read to its end)."""
        self._watchdog.cancel()
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()
