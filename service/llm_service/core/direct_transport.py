"""The `direct` transport: the service's own HTTP client and decoders, for OpenAI-compatible
chat and Anthropic Messages routes.

LiteLLM's provider configuration still decides the request (`direct_request`); this module
sends it over one pooled aiohttp session and reads the answer (`direct_decode`), SSE line by
line. Failures become LLMErrors here: an error status or an error event by its status and the
provider's own words (`classify.answered`), a timeout or a lost connection as unavailable.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TypeVar

import aiohttp

from llm_service.core import errors
from llm_service.core.assembly import StreamAssembler
from llm_service.core.classify import CONNECTION_FAILED, answered, with_upstream_hints
from llm_service.core.decode import int_or_zero
from llm_service.core.direct_decode import (
    AnthropicStream,
    UpstreamStreamError,
    anthropic_response,
    estimated_usage,
    openai_chunk,
    openai_response,
    openrouter_chunk,
)
from llm_service.core.direct_request import HttpCall, direct_provider, prepare, prepare_embedding
from llm_service.core.embedding import EmbedAnswer, answered_vectors
from llm_service.core.request import UpstreamRequest
from llm_service.core.retry import Deadline
from llm_service.core.settings import Route
from llm_service.core.trace_context import with_trace_headers
from llm_service.core.types import Chunk, Usage

log = logging.getLogger(__name__)
T = TypeVar("T")
ERROR_BODY_MAX_BYTES = 64 * 1024
# The pool: as many connections as LiteLLM's own aiohttp transport keeps, idle ones closed after 2 min.
CONNECTION_LIMIT = 1000
KEEPALIVE_S = 120.0


class _Answered(Exception):
    """The upstream answered an error status; its body (up to ERROR_BODY_MAX_BYTES) and headers."""

    def __init__(self, status: int, body: str, headers: Mapping[str, str]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers


def _timed_out() -> errors.LLMError:
    return errors.UpstreamUnavailable("the upstream timed out")


def _unreachable(call: HttpCall, exc: aiohttp.ClientError) -> errors.LLMError:
    """A failure to connect, or a connection lost mid-answer: the details go to the log, not the caller."""
    log.info("upstream connection failed", extra={"error": str(exc), "provider": call.provider})
    return errors.UpstreamUnavailable(CONNECTION_FAILED)


class DirectTransport:
    """Carries the requests whose wire it speaks; says once per route when it cannot carry one."""

    def __init__(self) -> None:
        self._http = HttpClient()
        self._declined: set[str] = set()

    def prepare(self, route: Route, req: UpstreamRequest) -> DirectRequest | None:
        """The HTTP request LiteLLM's provider configuration makes of req, or None."""
        provider = direct_provider(req)
        call = self._prepared(
            route,
            lambda: prepare(req, provider) if provider is not None else None,
            "it does not speak this provider's wire format or this request's mode",
        )
        return None if call is None else DirectRequest(self._http, route, req, call)

    def prepare_embedding(self, route: Route, req: UpstreamRequest) -> DirectEmbedding | None:
        """The POST /embeddings of an OpenAI embedding request, or None (said once per route)."""
        call = self._prepared(route, lambda: prepare_embedding(req), "it does not speak this provider's embeddings wire format")
        return None if call is None else DirectEmbedding(DirectRequest(self._http, route, req, call))

    def _prepared(self, route: Route, build: Callable[[], HttpCall | None], cannot: str) -> HttpCall | None:
        """What build makes of the request; None, said once per route, when it makes nothing or fails."""
        try:
            call = build()
        except Exception as exc:  # LiteLLM's path raises the same failure as its callers expect
            log.debug("direct request not prepared", exc_info=True, extra={"route": route.name})
            self._decline(route, f"preparing its request failed ({type(exc).__name__})")
            return None
        if call is None:
            self._decline(route, cannot)
        return call

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
        self._http = self.http = http
        self.route = route
        self.req = req
        self.call = call

    async def complete(self, deadline: Deadline) -> Chunk:
        """The whole answer."""
        return await self.whole(deadline, self._http.complete)

    async def whole(self, deadline: Deadline, send: Callable[[HttpCall, float], Awaitable[T]]) -> T:
        """What send makes of this request's answer, within the deadline; an error status as its LLMError."""
        try:
            async with asyncio.timeout(deadline.remaining()):
                return await send(self.call, self.route.timeout_s)
        except TimeoutError:
            raise deadline.passed() from None
        except _Answered as exc:
            raise self.answered(exc.status, exc.body, exc.headers) from None

    async def stream(self, deadline: Deadline) -> FastStream:
        """The answer's stream, its idle timeout the route's idle_timeout_s."""
        try:
            async with asyncio.timeout(deadline.remaining()):
                response = await self._http.post(self.call, self.route.timeout_s)
        except TimeoutError:
            raise deadline.passed() from None
        except _Answered as exc:
            raise self.answered(exc.status, exc.body, exc.headers) from None
        return FastStream(self, response, deadline)

    def answered(self, status: int, body: str, headers: Mapping[str, str] | None = None) -> errors.LLMError:
        """An error the upstream answered, with its retry-after headers and whether it refused tools."""
        return with_upstream_hints(answered(status, body, self.req.secrets), self.req, body, headers or {})


class DirectEmbedding:
    """One prepared POST /embeddings, sent once per attempt; the answer decoded here (OpenAI's format)."""

    transport = "direct"

    def __init__(self, request: DirectRequest) -> None:
        self._request = request

    async def embed(self, deadline: Deadline) -> EmbedAnswer:
        """The vectors, in input order, and the tokens the upstream billed."""
        request = self._request
        body = await request.whole(deadline, request.http.body)
        try:
            answer = json.loads(body)
        except ValueError:
            raise errors.UpstreamBadResponse("the upstream answered something that is not JSON", upstream_status=200) from None
        if not isinstance(answer, dict):
            raise errors.UpstreamBadResponse("the upstream answered something that is not its wire format", upstream_status=200)
        usage = answer.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        return EmbedAnswer(
            vectors=answered_vectors(answer.get("data"), len(request.req.kwargs["input"])),
            input_tokens=int_or_zero(usage.get("prompt_tokens")),
            model=str(answer.get("model") or ""),
        )


class HttpClient:
    """Sends HttpCalls over a pooled aiohttp session, created on first use in the serving loop."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed or self._session.loop is not asyncio.get_running_loop():
            connector = aiohttp.TCPConnector(limit=CONNECTION_LIMIT, keepalive_timeout=KEEPALIVE_S)
            self._session = aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",))
        return self._session

    async def aclose(self) -> None:
        """Close the pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, call: HttpCall, timeout_s: float) -> aiohttp.ClientResponse:
        """POST the request; an error status raises _Answered with the body's first bytes."""
        timeout = aiohttp.ClientTimeout(total=None, connect=timeout_s, sock_read=timeout_s)
        try:
            headers = with_trace_headers(call.headers)
            response = await self._client().post(call.url, data=call.body, headers=headers, timeout=timeout)
        except TimeoutError:
            raise _timed_out() from None
        except aiohttp.ClientError as exc:
            raise _unreachable(call, exc) from None
        if response.status >= 400:
            try:
                text = (await response.content.read(ERROR_BODY_MAX_BYTES)).decode("utf-8", "replace")
            except (TimeoutError, aiohttp.ClientError):
                text = ""
            finally:
                response.release()
            raise _Answered(response.status, text, {k.lower(): v for k, v in response.headers.items()})
        return response

    async def body(self, call: HttpCall, timeout_s: float) -> bytes:
        """POST a whole-answer request and read its body."""
        response = await self.post(call, timeout_s)
        try:
            return await response.read()
        except TimeoutError:
            raise _timed_out() from None
        except aiohttp.ClientError as exc:
            raise _unreachable(call, exc) from None
        finally:
            response.release()

    async def complete(self, call: HttpCall, timeout_s: float) -> Chunk:
        """POST a whole-answer request and decode the answer."""
        body = await self.body(call, timeout_s)
        try:
            return anthropic_response(body) if call.wire == "anthropic" else openai_response(body)
        except UpstreamStreamError as exc:
            raise _Answered(exc.status_code, exc.message, {}) from None


MAX_EVENT_BYTES = 16 * 1024 * 1024  # one SSE line: a whole tool call's arguments or an image can come in one
_SSE_OTHER_FIELDS = (b"event:", b"id:", b"retry:", b":")


class SseEvents:
    """The event-stream rules over a body read in pieces: each piece gives the data of the events
    it completed (an event's `data:` lines joined by a newline, up to the blank line that ends
    it), CRLF or LF line ends, comments and other fields skipped. Only a piece's complete lines
    are parsed, and a line still open may grow to MAX_EVENT_BYTES (aiohttp's readline stopped near
    512 KiB and raised a bare ValueError on the larger events providers do send). Parsing a piece
    at a time rather than a line at a time keeps a burst of events to one pass of plain loops,
    with no coroutine step per line.

    A line that is none of these is not SSE, and an open line past the limit is too large: the
    events before either are still given, and `failure` is then the error to raise."""

    def __init__(self, status: int) -> None:
        self._status = status
        self._open = bytearray()  # the piece of a line whose end has not arrived
        self._pending: bytes | None = None  # the data of the event being read
        self.failure: errors.UpstreamBadResponse | None = None

    def feed(self, piece: bytes) -> list[bytes]:
        cut = piece.rfind(b"\n")
        if cut < 0:  # no line ended in this piece (a large event arriving): only the new bytes searched
            self._open += piece
            self._check_open()
            return []
        if self._open:
            self._open += piece[:cut]
            block, self._open = bytes(self._open), bytearray(piece[cut + 1 :])
        else:
            block, self._open = piece[:cut], bytearray(piece[cut + 1 :])
        events = self._parse(block.split(b"\n"))
        self._check_open()
        return events

    def end(self) -> list[bytes]:
        """The events the body completed by ending: its last line, if open, and a blank line, so
        an event the body ends without its blank line after is still complete."""
        lines = [bytes(self._open), b""] if self._open else [b""]
        self._open = bytearray()
        return self._parse(lines)

    def _check_open(self) -> None:
        if len(self._open) > MAX_EVENT_BYTES and self.failure is None:
            self.failure = errors.UpstreamBadResponse(
                f"the upstream sent an event larger than {MAX_EVENT_BYTES // (1024 * 1024)} MiB", upstream_status=200
            )

    def _parse(self, lines: list[bytes]) -> list[bytes]:
        events: list[bytes] = []
        pending = self._pending
        for line in lines:
            if line.startswith(b"data:"):
                data = line[5:].strip()
                pending = data if pending is None else pending + b"\n" + data
            elif line.strip():  # a field line: event names, ids, retry, comments (keep-alives)
                if not line.startswith(_SSE_OTHER_FIELDS):
                    self.failure = errors.truncated(self._status)  # not SSE: said as LiteLLM's path finds it
                    break
            elif pending:  # a blank line ends an event; one without data is nothing
                events.append(pending)
                pending = None
            else:
                pending = None
        self._pending = pending
        return events


class _Stalled(Exception):
    """Set on the response's reader by the idle watchdog."""


class FastStream:
    """The chunks of one streamed answer; aclose() releases the connection however it ended.

    Events are read as the event-stream rules say: an event's `data:` lines joined by a newline
    up to the blank line that ends it, CRLF or LF line ends, comments and other fields skipped.
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
            events = SseEvents(self._response.status)
            content = self._response.content
            done = False
            while not done:
                piece = await content.readany()
                for data in events.feed(piece) if piece else events.end():
                    chunk = decode(data)
                    if chunk is None:
                        if self._anthropic is None:
                            done = True  # [DONE]
                            break
                        continue
                    self.decoded += 1
                    self._last_chunk = self._loop.time()
                    if due is not None and time.monotonic() > due:
                        raise self._deadline.passed()
                    finished = finished or chunk.finish_reason is not None
                    named = named or bool(chunk.model)
                    yield chunk
                if events.failure is not None and not done:
                    raise events.failure
                done = done or not piece
        except UpstreamStreamError as exc:
            raise self._request.answered(exc.status_code, exc.message) from None
        except _Stalled:
            raise errors.UpstreamStalled(
                f"the upstream sent nothing for {self._idle_s:g} s (the route's idle_timeout_s)"
            ) from None
        except TimeoutError:
            raise _timed_out() from None
        except aiohttp.ClientError as exc:
            raise _unreachable(call, exc) from None
        finally:
            self._watchdog.cancel()
        if not finished:
            raise errors.truncated()
        if not named:
            yield Chunk(model=call.model)

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
