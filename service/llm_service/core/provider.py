"""The provider core's entry points: stream() and complete() on a route, with retries.

Each attempt is built by `request` and assembled by `assembly`. It is sent one of two
ways: for OpenAI-compatible chat and Anthropic Messages routes, LiteLLM's provider
configuration decides the HTTP request (`fast_request`) and the service sends it and
decodes the answer itself (`fast_transport`, `fast_decode`); every other route, and a
route with `fast_path: false`, goes through `litellm.acompletion` and `decode`. This
module only decides what happens between attempts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import litellm

from llm_service.config import Config, Route
from llm_service.core import errors, tool_compat
from llm_service.core.assembly import StreamAssembler
from llm_service.core.classify import classify, describe, response_headers
from llm_service.core.decode import decode_response, decode_stream_chunk, usage_from
from llm_service.core.dumps import FailedRequestDumps
from llm_service.core.fast_decode import estimated_usage
from llm_service.core.fast_request import HttpCall, fast_provider, prepare
from llm_service.core.fast_transport import FastTransport
from llm_service.core.request import UpstreamRequest, build_messages, build_request
from llm_service.core.resilience import BreakerState, RouteHealth
from llm_service.core.retry import Deadline, RetryLimits, RetryReason, backoff_delay, delay_from_headers
from llm_service.core.tokens import estimate_tokens
from llm_service.core.types import (
    CallRequest,
    Completion,
    Event,
    Finish,
    GatewayInfo,
    ReasoningDelta,
    TextDelta,
    TextEnd,
    ToolCall,
    Usage,
)

log = logging.getLogger(__name__)

RetryHook = Callable[[Route, RetryReason], None]
UsageHook = Callable[[Route, Usage, float], None]
FallbackHook = Callable[[Route, Route], None]
BreakerHook = Callable[[Route, BreakerState], None]


@dataclass
class _CallState:
    """Bookkeeping for one call across its attempts."""

    route: Route
    limits: RetryLimits
    deadline: Deadline
    attempts: int = 0
    upstream_s: float = 0.0
    probe: bool = False  # the attempt in flight is the breaker's half-open probe

    def __post_init__(self) -> None:
        self.retries: dict[RetryReason, int] = {}

    def retries_of(self, reason: RetryReason) -> int:
        return self.retries.get(reason, 0)

    def gateway(self) -> GatewayInfo:
        return GatewayInfo(route=self.route.name, attempts=self.attempts, upstream_s=self.upstream_s)


class Provider:
    """Completes calls on configured routes through LiteLLM."""

    def __init__(
        self,
        config: Config,
        on_retry: RetryHook | None = None,
        on_usage: UsageHook | None = None,
        on_fallback: FallbackHook | None = None,
        on_breaker: BreakerHook | None = None,
    ) -> None:
        self.config = config
        self._on_retry = on_retry
        self._on_usage = on_usage
        self._on_fallback = on_fallback
        self._on_breaker = on_breaker
        self._health: dict[str, RouteHealth] = {}
        self._compat_models = tool_compat.CompatModels()
        self._dumps = FailedRequestDumps(config.debug_dump_dir, config.debug_dump_keep) if config.debug_dump_dir else None
        self._fast = FastTransport()

    async def aclose(self) -> None:
        """Close the fast path's connection pool."""
        await self._fast.aclose()

    def _fast_call(self, route: Route, req: UpstreamRequest) -> HttpCall | None:
        """The request as the fast path sends it, or None when LiteLLM's full path carries it."""
        if not route.fast_path:
            return None
        provider = fast_provider(req)
        if provider is None:
            return None
        try:
            return prepare(req, provider)
        except Exception:  # LiteLLM's own path raises the same failure as its callers expect
            log.debug("fast path not prepared; LiteLLM sends this request", exc_info=True, extra={"route": route.name})
            return None

    # --- route health: retry budget and circuit breaker ------------------------------------

    def health(self, route: Route) -> RouteHealth:
        """The route's retry budget and breaker (created on first use)."""
        found = self._health.get(route.name)
        if found is None:
            found = self._health[route.name] = RouteHealth.new(self.config.resilience)
        return found

    def _admit(self, state: _CallState) -> None:
        """Raise CircuitOpen when the route's breaker refuses another attempt now."""
        breaker = self.health(state.route).breaker
        before = breaker.state
        wait = breaker.admit()
        state.probe = wait is None and breaker.state is BreakerState.HALF_OPEN
        self._breaker_changed(state.route, before)
        if wait is not None:
            err = errors.CircuitOpen(
                f"route '{state.route.name}' failed {breaker.failure_threshold} times in a row; not calling it for now",
                retry_after_s=wait,
            )
            err.attempts = state.attempts
            raise err

    def _attempt_ended(self, state: _CallState) -> None:
        """However an attempt ended (answer, failure, deadline, cancellation, stall), a probe it held is
        given back: after an answer or a failure the breaker has already moved on; otherwise (the
        caller's deadline or cancellation) the next call may probe. Without this a probe ended by the
        caller left the breaker half-open with its one probe taken, refusing every call for ever."""
        if state.probe:
            state.probe = False
            self.health(state.route).breaker.released()

    def _upstream_failed(self, state: _CallState) -> None:
        health = self.health(state.route)
        before = health.breaker.state
        health.budget.failed()
        health.breaker.failed()
        self._breaker_changed(state.route, before)

    def _upstream_answered(self, state: _CallState) -> None:
        health = self.health(state.route)
        before = health.breaker.state
        health.budget.succeeded()
        health.breaker.succeeded()
        self._breaker_changed(state.route, before)

    def _breaker_changed(self, route: Route, before: BreakerState) -> None:
        after = self.health(route).breaker.state
        if after is not before:
            log.warning("circuit breaker", extra={"route": route.name, "state": after.name.lower()})
            if self._on_breaker is not None:
                self._on_breaker(route, after)

    # --- shared ----------------------------------------------------------------------------

    def _state(self, route: Route, call: CallRequest, deadline: Deadline) -> _CallState:
        limits = RetryLimits.for_call(self.config.retry, self.config.server.max_retries_cap, route.max_retries, call.max_retries)
        return _CallState(route, limits, deadline)

    def _request(
        self, route: Route, call: CallRequest, state: _CallState, stream: bool, *, tool_compat_mode: bool = False
    ) -> UpstreamRequest:
        if not route.ready:
            assert route.key_source is not None
            raise errors.RouteNotReady(
                f"route '{route.name}' has no provider key on the server: set {route.key_source.describe()}"
            )
        req = build_request(
            route,
            call,
            stream=stream,
            cc=self.config.claude_code,
            hive_api_base=self.config.hive_api_base,
            timeout_s=route.timeout_s,
            system_override=tool_compat.instruction(call.system, call.tools) if tool_compat_mode else None,
            tools_override=() if tool_compat_mode else None,
        )
        _refuse_image_urls_litellm_would_fetch(req, call)
        return req

    async def _retry_if_allowed(self, state: _CallState, reason: RetryReason, delay_s: float) -> bool:
        """Count, report and sleep for one retry; False when the budget or the deadline forbids it (PC13)."""
        if state.retries_of(reason) >= state.limits.allowed(reason) or not state.deadline.allows_wait(delay_s):
            return False
        if reason in (RetryReason.RATE_LIMIT, RetryReason.TRANSIENT) and not self.health(state.route).budget.allows_retry():
            log.warning("retry budget spent", extra={"route": state.route.name, "reason": reason.value})
            return False
        state.retries[reason] = state.retries_of(reason) + 1
        if self._on_retry is not None:
            self._on_retry(state.route, reason)
        log.info(
            "retrying",
            extra={"route": state.route.name, "reason": reason.value, "delay_s": round(delay_s, 3), "attempt": state.attempts},
        )
        await asyncio.sleep(delay_s)
        return True

    async def _wait_before_retry(self, state: _CallState, reason: RetryReason, delay_s: float, err: errors.LLMError) -> None:
        """Retry after delay_s, or raise err carrying the delay when that is not allowed."""
        exhausted = state.retries_of(reason) >= state.limits.allowed(reason)
        if not await self._retry_if_allowed(state, reason, delay_s):
            err.attempts = state.attempts
            if not exhausted or err.retry_after_s is None:
                err.retry_after_s = delay_s
            raise err

    def _failure_delay(self, state: _CallState, reason: RetryReason, exc: BaseException) -> float:
        cfg = self.config.retry
        asked = delay_from_headers(response_headers(exc), cfg.max_delay_s)
        if asked is not None:
            return asked
        return backoff_delay(state.retries_of(reason), cfg)

    async def _handle_failure(self, state: _CallState, req: UpstreamRequest, exc: Exception) -> None:
        """Retry a failed attempt when its kind is retryable (PC12, PC16); raise it otherwise."""
        err = classify(exc, req.secrets)
        if type(err) is errors.LLMError:
            log.error("unexpected upstream failure", exc_info=exc, extra={"route": state.route.name, **describe(exc)})
        if isinstance(err, errors.CircuitOpen):
            raise err from None
        if _is_upstream_failure(err):
            self._upstream_failed(state)
        elif err.upstream_status is not None:
            self._upstream_answered(state)  # it answered (4xx): the route is up, the request was the problem
        if isinstance(err, errors.RateLimited):
            reason = RetryReason.RATE_LIMIT
            await self._dump(state, req, "rate_limit")
        elif isinstance(err, (errors.UpstreamUnavailable, errors.UpstreamBadResponse)):
            reason = RetryReason.TRANSIENT
        else:
            err.attempts = state.attempts
            raise err from None
        await self._wait_before_retry(state, reason, self._failure_delay(state, reason, exc), err)

    async def _dump(self, state: _CallState, req: UpstreamRequest, error_type: str) -> None:
        """Write a failed-request dump when dumps are configured (PC26)."""
        if self._dumps is not None:
            await asyncio.to_thread(
                self._dumps.write,
                route=state.route.name,
                model=req.model,
                kwargs=req.kwargs,
                error_type=error_type,
                attempt=state.attempts,
                secrets=req.secrets,
            )

    # --- OpenRouter tool compatibility (PC23) ----------------------------------------------

    def _uses_tool_compat(self, req: UpstreamRequest, call: CallRequest) -> bool:
        """Whether this model is known to need compatibility mode for tool calls."""
        return bool(call.tools) and req.is_openrouter and req.model in self._compat_models

    async def _switch_to_tool_compat(self, state: _CallState, req: UpstreamRequest, exc: Exception) -> bool:
        """After OpenRouter refused native tools: remember the model and count the switch as a retry."""
        if not (req.is_openrouter and "tools" in req.kwargs and tool_compat.rejects_native_tools(str(exc))):
            return False
        self._compat_models.remember(req.model)
        log.warning("OpenRouter has no endpoint with native tools: tool compatibility mode", extra={"route": state.route.name})
        return await self._retry_if_allowed(state, RetryReason.TOOL_COMPAT, 0.0)

    async def _complete_tool_compat(self, route: Route, call: CallRequest, state: _CallState) -> Completion:
        """The call without native tools, its JSON-only reply read back into text and tool calls."""
        req = self._request(route, call, state, stream=False, tool_compat_mode=True)
        reply = await self._complete(route, call, state, req)
        text, calls = tool_compat.parse_reply(reply.text, call.tools)
        finish = dataclasses.replace(reply.finish, finish_reason="tool_calls" if calls else reply.finish.finish_reason)
        return Completion(text=text, reasoning=reply.reasoning, tool_calls=tuple(calls), finish=finish)

    def _attempt_answered(self, req: UpstreamRequest, state: _CallState, asm: StreamAssembler) -> None:
        """Price an attempt that got an answer, and report what the upstream billed for it.

        Every answered attempt is reported, including empty ones that are retried: the
        provider bills them too, so token and cost counters must include them.
        """
        self._upstream_answered(state)
        usage = asm.usage or Usage()
        asm.cost_usd = cost_usd(req.model, usage)
        if self._on_usage is not None and not usage.is_empty():
            self._on_usage(state.route, usage, asm.cost_usd)

    def _cancelled_usage(self, req: UpstreamRequest, state: _CallState, asm: StreamAssembler, response: Any) -> None:
        """Record what a cancelled stream had already cost, where the upstream said so (Anthropic sends input first)."""
        usage = asm.usage or (summed_usage(response) if response is not None else None)
        if usage is None or (usage.input_tokens == 0 and usage.output_tokens == 0):
            return
        cost = cost_usd(req.model, usage)
        log.info(
            "cancelled stream usage",
            extra={"route": state.route.name, "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
        )
        if self._on_usage is not None:
            self._on_usage(state.route, usage, cost)

    def _finish(self, req: UpstreamRequest, asm: StreamAssembler, state: _CallState) -> Finish:
        return Finish(
            finish_reason=asm.final_finish_reason(),
            usage=asm.usage or Usage(),
            cost_usd=asm.cost_usd,
            provider_model=asm.model or req.model,
            gateway=state.gateway(),
            thinking_blocks=tuple(asm.thinking),
            refusal=asm.refusal,
        )

    # --- streaming -------------------------------------------------------------------------

    def _candidates(self, route: Route) -> list[Route]:
        """The route, then its fallbacks that have their keys, in order."""
        fallbacks = (self.config.routes[name] for name in route.fallbacks)
        return [route, *(r for r in fallbacks if r.ready)]

    def _fall_back(self, failed: Route, to: Route, err: errors.LLMError, deadline: Deadline) -> bool:
        """Whether to try the next route after this failure (before anything was sent)."""
        if not isinstance(err, errors.FALLBACK_ON) or deadline.remaining() == 0:
            return False
        log.warning("falling back", extra={"route": failed.name, "fallback": to.name, "reason": err.reason})
        if self._on_fallback is not None:
            self._on_fallback(failed, to)
        return True

    async def stream(self, route: Route, call: CallRequest, deadline: Deadline) -> AsyncIterator[Event]:
        """Stream events for the call: deltas as they come, then tool calls, text end and finish.

        A failure before anything was sent moves on to the route's fallbacks, in order; the
        finish event's gateway info names the route that answered. Raises an LLMError on
        failure. Once an event was yielded, nothing is retried (PC17). A call without a
        deadline is bounded by the route's timeout_s, all attempts and fallbacks together.
        """
        deadline = deadline.bounded(route.timeout_s)
        candidates = self._candidates(route)
        for i, candidate in enumerate(candidates):
            sent = False
            try:
                async for event in self._stream_route(candidate, call, deadline):
                    sent = True
                    yield event
                return
            except errors.LLMError as err:
                if sent or i == len(candidates) - 1 or not self._fall_back(candidate, candidates[i + 1], err, deadline):
                    raise

    async def _stream_route(self, route: Route, call: CallRequest, deadline: Deadline) -> AsyncIterator[Event]:
        state = self._state(route, call, deadline)
        req = self._request(route, call, state, stream=True)
        if req.is_minimax:  # their streamed chunks break LiteLLM's parser (PC24)
            completion = await self._complete(route, call, state, self._request(route, call, state, stream=False))
            for event in completion_events(completion):
                yield event
            return
        if self._uses_tool_compat(req, call):
            for event in completion_events(await self._complete_tool_compat(route, call, state)):
                yield event
            return
        http = self._fast_call(route, req)
        while True:
            asm = StreamAssembler()
            sent = False
            try:
                async for event in self._stream_attempt(req, http, state, asm):
                    sent = True
                    yield event
            except Exception as exc:
                if sent:
                    err = classify(exc, req.secrets)
                    if type(err) is errors.LLMError:  # INTERNAL: the traceback goes to the log, as before any event
                        log.error("unexpected upstream failure", exc_info=exc, extra={"route": route.name, **describe(exc)})
                    err.attempts = state.attempts
                    if _is_upstream_failure(err):
                        self._upstream_failed(state)
                    raise err from None
                if await self._switch_to_tool_compat(state, req, exc):
                    for event in completion_events(await self._complete_tool_compat(route, call, state)):
                        yield event
                    return
                await self._handle_failure(state, req, exc)
                continue
            if not asm.has_content and asm.finish_reason != "length":
                await self._dump(state, req, "empty_stream")
                if await self._retry_if_allowed(state, RetryReason.EMPTY_STREAM, self.config.retry.empty_stream_delay_s):
                    continue
            for call_event in asm.tool_calls():
                yield call_event
            if asm.text_parts:
                yield TextEnd()
            yield self._finish(req, asm, state)
            return

    async def _stream_attempt(
        self, req: UpstreamRequest, http: HttpCall | None, state: _CallState, asm: StreamAssembler
    ) -> AsyncIterator[Event]:
        """One upstream streaming request; closes the upstream response however it ends."""
        self._admit(state)
        state.attempts += 1
        started = time.monotonic()
        response: Any = None
        try:
            async with asyncio.timeout(state.deadline.remaining()):
                if http is not None:
                    response = await self._fast.stream(http, state.route.timeout_s, idle_s=state.route.idle_timeout_s)
                else:
                    response = await litellm.acompletion(**req.kwargs)
            iterator = response.__aiter__()
            idle_s = state.route.idle_timeout_s
            while http is not None:  # the fast stream enforces idle_timeout_s itself (its socket read timeout)
                chunk_started = time.monotonic()
                try:
                    chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    state.upstream_s += time.monotonic() - chunk_started
                if state.deadline.at is not None and chunk_started > state.deadline.at:
                    raise TimeoutError
                for event in asm.feed(chunk):
                    yield event
            while http is None:
                chunk_started = time.monotonic()
                remaining = state.deadline.remaining()
                try:
                    async with asyncio.timeout(idle_s if remaining is None else min(idle_s, remaining)):
                        raw = await iterator.__anext__()
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    if remaining is not None and remaining <= idle_s:
                        raise
                    raise errors.UpstreamStalled(
                        f"the upstream sent nothing for {idle_s:g} s (the route's idle_timeout_s)"
                    ) from None
                finally:
                    state.upstream_s += time.monotonic() - chunk_started
                for event in asm.feed(decode_stream_chunk(raw)):
                    yield event
            if http is None and fast_provider(req) is not None and getattr(response, "received_finish_reason", "") is None:
                # LiteLLM ends an OpenAI-format or Anthropic stream the provider cut cleanly with a
                # "stop" of its own making; its wrapper still knows no finish reason was received.
                # (Gemini's, Ollama's and the Responses API's streams are not judged this way.)
                raise errors.truncated()
            if asm.usage is None:
                if http is None:
                    asm.usage = summed_usage(response)
                elif http.wire == "openai" and response.decoded:
                    asm.usage = estimated_usage(req.model, req.kwargs["messages"], asm.text)
            self._attempt_answered(req, state, asm)
        except TimeoutError:
            raise state.deadline.passed() from None
        except (asyncio.CancelledError, GeneratorExit):
            self._cancelled_usage(req, state, asm, response)
            raise
        finally:
            if response is None:
                state.upstream_s += time.monotonic() - started
            else:
                await close_quietly(response)
            self._attempt_ended(state)

    # --- unary -----------------------------------------------------------------------------

    async def complete(self, route: Route, call: CallRequest, deadline: Deadline) -> Completion:
        """The whole answer for the call, from the route or, on failure, its fallbacks. Raises an LLMError.

        A call without a deadline is bounded by the route's timeout_s, all attempts and fallbacks together.
        """
        deadline = deadline.bounded(route.timeout_s)
        candidates = self._candidates(route)
        for i, candidate in enumerate(candidates):
            try:
                return await self._complete_route(candidate, call, deadline)
            except errors.LLMError as err:
                if i == len(candidates) - 1 or not self._fall_back(candidate, candidates[i + 1], err, deadline):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _complete_route(self, route: Route, call: CallRequest, deadline: Deadline) -> Completion:
        state = self._state(route, call, deadline)
        req = self._request(route, call, state, stream=False)
        if req.is_codex:  # the Codex backend only streams (PC06)
            return await collect(self._stream_route(route, call, deadline))
        if self._uses_tool_compat(req, call):
            return await self._complete_tool_compat(route, call, state)
        return await self._complete(route, call, state, req)

    async def _complete(self, route: Route, call: CallRequest, state: _CallState, req: UpstreamRequest) -> Completion:
        http = self._fast_call(route, req)
        while True:
            self._admit(state)
            state.attempts += 1
            started = time.monotonic()
            try:
                async with asyncio.timeout(state.deadline.remaining()):
                    if http is not None:
                        answer = await self._fast.complete(http, route.timeout_s)
                    else:
                        answer = decode_response(await litellm.acompletion(**req.kwargs))
            except TimeoutError:
                raise state.deadline.passed() from None
            except Exception as exc:
                if await self._switch_to_tool_compat(state, req, exc):
                    return await self._complete_tool_compat(route, call, state)
                await self._handle_failure(state, req, exc)
                continue
            finally:
                state.upstream_s += time.monotonic() - started
                self._attempt_ended(state)
            asm = StreamAssembler()
            asm.feed(answer)
            self._attempt_answered(req, state, asm)
            if not asm.has_content and not _empty_is_expected(req, asm):
                await self._dump(state, req, "empty_response")
                delay = backoff_delay(state.retries_of(RetryReason.EMPTY_RESPONSE), self.config.retry)
                if await self._retry_if_allowed(state, RetryReason.EMPTY_RESPONSE, delay):
                    continue
            return Completion(
                text=asm.text,
                reasoning=asm.reasoning,
                tool_calls=tuple(asm.tool_calls()),
                finish=self._finish(req, asm, state),
            )

    # --- tokens ----------------------------------------------------------------------------

    async def count_tokens(self, route: Route, call: CallRequest) -> tuple[int, str]:
        """Input tokens for the call on the route: LiteLLM's counter, else characters / 4 (PC27)."""
        model = build_request(
            route, call, stream=False, cc=self.config.claude_code, hive_api_base=self.config.hive_api_base, timeout_s=1.0
        ).model
        messages = build_messages(call, system=call.system, model=model, oauth=False, codex=False, cc=self.config.claude_code)
        return await asyncio.to_thread(estimate_tokens, model, messages, call.tools)


def _refuse_image_urls_litellm_would_fetch(req: UpstreamRequest, call: CallRequest) -> None:
    """Caller image URLs go only to providers that fetch them themselves (OpenAI-compatible chat, the
    Responses API, Anthropic for https). For the others LiteLLM would download the URL itself,
    synchronously on the event loop, from a host the caller chose: such a request is refused."""
    provider = "openai" if req.is_codex else fast_provider(req)
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


def _is_upstream_failure(err: errors.LLMError) -> bool:
    """Failures that count against a route's retry budget and breaker: the upstream did not answer well."""
    return isinstance(err, (errors.RateLimited, errors.UpstreamUnavailable, errors.UpstreamBadResponse)) and not isinstance(
        err, errors.CircuitOpen
    )


def _empty_is_expected(req: UpstreamRequest, asm: StreamAssembler) -> bool:
    """PC14: an empty answer is final after an assistant turn, or when the token budget ran out."""
    if asm.finish_reason == "length":
        return True
    last_role = next((m.get("role") for m in reversed(req.kwargs["messages"]) if m.get("role") != "system"), None)
    return last_role == "assistant"


def summed_usage(response: Any) -> Usage | None:
    """Usage rebuilt from the stream's chunks LiteLLM kept, for providers that put none on a chunk (PC21)."""
    chunks = getattr(response, "chunks", None)
    if not chunks:
        return None
    try:
        from litellm.litellm_core_utils.streaming_handler import calculate_total_usage

        return usage_from(calculate_total_usage(chunks=chunks))
    except Exception:
        return None


_UNPRICED: set[str] = set()  # models LiteLLM's (local, static) price map does not know


def cost_usd(model: str, usage: Usage) -> float:
    """The call's cost as LiteLLM prices the model; 0.0 when it cannot (PC21)."""
    if usage.is_empty() or model in _UNPRICED:
        return 0.0
    try:
        prompt, completion = litellm.cost_per_token(
            model=model,
            prompt_tokens=usage.input_tokens,
            completion_tokens=usage.output_tokens,
            cache_read_input_tokens=usage.cached_input_tokens,
            cache_creation_input_tokens=usage.cache_creation_tokens,
        )
        return float(prompt) + float(completion)
    except (litellm.exceptions.ModelNotMappedError, litellm.exceptions.BadRequestError):
        _UNPRICED.add(model)  # asking again would only raise again, at ~0.2 ms a time
        return 0.0
    except Exception:
        return 0.0


async def close_quietly(response: Any) -> None:
    """Close an upstream stream so its HTTP connection is released, ignoring errors."""
    closer = getattr(response, "aclose", None)
    if closer is None:
        return
    try:
        await closer()
    except Exception:
        log.debug("closing the upstream stream failed", exc_info=True)


def completion_events(completion: Completion) -> list[Event]:
    """The event sequence a stream would have produced for a whole answer (PC24)."""
    events: list[Event] = []
    if completion.reasoning:
        events.append(ReasoningDelta(completion.reasoning))
    if completion.text:
        events.append(TextDelta(completion.text))
    events.extend(completion.tool_calls)
    if completion.text:
        events.append(TextEnd())
    events.append(completion.finish)
    return events


async def collect(events: AsyncIterator[Event]) -> Completion:
    """A whole answer from a stream of events (PC06)."""
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    async for event in events:
        if isinstance(event, TextDelta):
            text.append(event.text)
        elif isinstance(event, ReasoningDelta):
            reasoning.append(event.text)
        elif isinstance(event, ToolCall):
            calls.append(event)
        elif isinstance(event, Finish):
            return Completion("".join(text), "".join(reasoning), tuple(calls), event)
    raise errors.UpstreamBadResponse("the upstream stream ended without a finish")
