"""The engine: a call's fallback routes, and one attempt loop over a plan's transport.

Per route, the call is planned once (`plan`), then attempted until an answer or a final
failure. After a failure the policy table (`policy`) says whether it is retried, counts
against the route's health, or may move to the next fallback; retry limits and waits
come from `retry`, and every wait is bounded by the caller's deadline (PC13). An empty
answer is retried too (PC14, PC15). Once a stream sent the caller an event nothing is
retried or moved (PC17). What happens is reported to one `Observer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from llm_service.core import errors
from llm_service.core.assembly import StreamAssembler
from llm_service.core.deployments import DeploymentPool
from llm_service.core.dumps import FailedRequestDumps
from llm_service.core.embedding import EmbedAnswer, EmbedCall, Embedding, EmbedPlan, EmbedPlanner, batch_size, batches
from llm_service.core.observer import AttemptedPlan as _Attempted
from llm_service.core.observer import Observer, Observers, Watcher
from llm_service.core.off_loop import when_large
from llm_service.core.plan import Plan, Planner
from llm_service.core.policy import policy_of
from llm_service.core.pricing import cost_usd
from llm_service.core.resilience import RouteHealthBook
from llm_service.core.retry import CallRetries, Deadline, RetryLimits, RetryReason
from llm_service.core.settings import CoreSettings, Route
from llm_service.core.transport import UpstreamStream
from llm_service.core.types import CallRequest, Completion, Event, GatewayInfo, TextEnd, Usage

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class _Call:
    """One call's bookkeeping on one route, across its attempts."""

    route: Route
    retries: CallRetries
    deadline: Deadline
    attempts: int = 0
    upstream_s: float = 0.0

    def gateway(self, deployment: str) -> GatewayInfo:
        return GatewayInfo(self.route.name, self.attempts, self.upstream_s, deployment)


class Engine:
    """Answers calls on routes: plans, attempts, retries and fallbacks."""

    def __init__(
        self,
        settings: CoreSettings,
        planner: Planner,
        health: RouteHealthBook,
        observer: Observer,
        dumps: FailedRequestDumps | None,
        embed_planner: EmbedPlanner | None = None,
    ) -> None:
        self._routes = settings.routes
        self._retry = settings.retry
        self._cap = settings.max_retries_cap
        self._planner = planner
        self.health = health
        self._observer: Watcher = Observers(observer)  # hooks the observer has not are nothing
        self._dumps = dumps
        self._embed_planner = embed_planner
        self._pools = {r.name: DeploymentPool(r, observer.deployment_changed) for r in settings.routes.values() if r.deployments}

    async def stream(self, route: Route, call: CallRequest, deadline: Deadline) -> AsyncGenerator[Event, None]:
        """Deltas as they come, then tool calls, text end and the finish; raises LLMError. A call
        without a deadline is bounded by the route's timeout_s, all attempts and fallbacks together."""
        async for event in self._answer(route, call, deadline.bounded(route.timeout_s), live=True):
            assert not isinstance(event, Completion)
            yield event

    async def complete(self, route: Route, call: CallRequest, deadline: Deadline) -> Completion:
        """The whole answer; raises LLMError."""
        async with contextlib.aclosing(self._answer(route, call, deadline.bounded(route.timeout_s), live=False)) as answer:
            async for completion in answer:
                assert isinstance(completion, Completion)
                return completion
        raise AssertionError("unreachable")  # pragma: no cover

    async def embed(self, route: Route, call: EmbedCall, deadline: Deadline) -> Embedding:
        """The vectors of the call's inputs, in order; raises LLMError. Bounded like complete()."""
        attempts = functools.partial(self._embedded, call)
        async with contextlib.aclosing(
            self._on_routes(route, call.max_retries, deadline.bounded(route.timeout_s), attempts)
        ) as answer:
            async for embedding in answer:
                return embedding
        raise AssertionError("unreachable")  # pragma: no cover

    def _answer(
        self, route: Route, call: CallRequest, deadline: Deadline, live: bool
    ) -> AsyncGenerator[Event | Completion, None]:
        """From the route, or after a failure before anything was sent, from its fallbacks in order."""
        return self._on_routes(route, call.max_retries, deadline, lambda state: self._attempts(call, state, live))

    async def _on_routes(
        self, route: Route, max_retries: int | None, deadline: Deadline, attempts: Callable[[_Call], AsyncGenerator[T, None]]
    ) -> AsyncGenerator[T, None]:
        """What attempts yields on the route, or after a failure before it yielded anything, on its
        fallbacks in order (chat answers and embeddings alike)."""
        candidates = [route, *(r for r in (self._routes[name] for name in route.fallbacks) if r.ready)]
        for i, candidate in enumerate(candidates):
            sent = False
            try:
                limits = RetryLimits.for_call(self._retry, self._cap, candidate.max_retries, max_retries)
                state = _Call(candidate, CallRetries(limits, deadline, self._retry), deadline)
                async for item in attempts(state):
                    sent = True
                    yield item
                return
            except errors.LLMError as err:
                last = i == len(candidates) - 1
                if sent or last or not policy_of(err).fall_back or deadline.remaining() == 0:
                    raise
                log.warning(
                    "falling back", extra={"route": candidate.name, "fallback": candidates[i + 1].name, "reason": err.reason}
                )
                self._observer.fell_back(candidate, candidates[i + 1])

    async def _attempts(self, call: CallRequest, state: _Call, live: bool) -> AsyncGenerator[Event | Completion, None]:
        """Attempts on one route until an answer (events when live, else one Completion) or a final failure;
        on a route of several deployments each attempt goes to the one its pool chooses."""
        pool = self._pools.get(state.route.name)
        plan: Plan | None = None
        compat = False
        tried: set[str] = set()
        while True:
            target = state.route if pool is None else await pool.next(tried, state.deadline, state.attempts)
            if plan is None or plan.route is not target or plan.tool_compat != compat:
                plan = await self._plan(target, call, live, compat)
            tried.add(target.deployment)
            asm = StreamAssembler()
            sent = False
            try:
                if plan.streamed:
                    async for delta in self._streamed_attempt(plan, state, asm):
                        if live:
                            sent = True
                            yield delta
                else:
                    await self._whole_attempt(plan, state, asm)
            except errors.LLMError as err:
                if sent:
                    if (failed := policy_of(err)).route_failure:
                        self.health.failed(plan.route, failed.trips_breaker)
                    err.attempts = state.attempts
                    raise
                if err.native_tools_rejected and not plan.tool_compat:  # PC23: retried in compatibility mode
                    self._planner.compat_models.remember(plan.request.model)
                    log.warning("OpenRouter has no endpoint with native tools", extra={"route": state.route.name})
                    if await self._retry_allowed(plan, state, RetryReason.TOOL_COMPAT, 0.0):
                        compat = True
                        continue
                if pool is not None and await self._failed_over(pool, plan, state, err):
                    continue
                await self._after_failure(plan, state, err)
                continue
            if not asm.has_content and not plan.empty_is_final(asm.finish_reason):
                reason = RetryReason.EMPTY_STREAM if plan.streamed else RetryReason.EMPTY_RESPONSE
                if not plan.streamed:
                    await self._dump(plan, state, reason.value)
                if await self._retry_allowed(plan, state, reason, state.retries.delay(reason, state.attempts)):
                    continue
                if plan.streamed:  # PC31: an empty stream is dumped once, when its retries are spent
                    await self._dump(plan, state, reason.value)
            completion = plan.completion(asm, state.gateway(plan.route.deployment))
            if not live:
                yield completion
            elif plan.streamed:
                for tool_call in completion.tool_calls:
                    yield tool_call
                if asm.text_parts:
                    yield TextEnd()
                yield completion.finish
            else:
                for event in completion.events():
                    yield event
            return

    async def _plan(self, route: Route, call: CallRequest, live: bool, compat: bool) -> Plan:
        """The plan; a large call's (its request built and encoded) in a worker thread, off the loop."""
        return await when_large(call.large, self._planner.plan, route, call, streamed=live, tool_compat_mode=compat)

    async def _whole_attempt(self, plan: Plan, state: _Call, asm: StreamAssembler) -> None:
        async def answered(deadline: Deadline) -> None:
            asm.feed(await plan.prepared.complete(deadline))
            self._answered(plan, state, asm)  # within the attempt: what observes it sees the answer

        await self._unary_attempt(plan, state, answered)

    async def _unary_attempt(self, plan: _Attempted, state: _Call, send: Callable[[Deadline], Awaitable[T]]) -> T:
        """One unary upstream request (a whole answer, or a batch of embeddings): admitted by the
        breaker, counted, and timed, however it ends."""
        probe = self._attempt_started(plan, state)
        started = time.monotonic()
        answered_s: float | None = None
        failure: BaseException | None = None
        try:
            answer = await send(state.deadline)
            answered_s = time.monotonic() - started
        except BaseException as exc:
            failure = exc
            raise
        finally:
            state.upstream_s += time.monotonic() - started
            self._attempt_ended(plan, state, probe, started, answered_s, failure)
        return answer

    async def _streamed_attempt(self, plan: Plan, state: _Call, asm: StreamAssembler) -> AsyncIterator[Event]:
        """One streamed attempt; its upstream stream is closed however the attempt ends."""
        probe = self._attempt_started(plan, state)
        started = time.monotonic()
        first_s: float | None = None
        upstream: UpstreamStream | None = None
        first_token_s = plan.route.first_token_timeout_s
        failure: BaseException | None = None
        try:
            async with asyncio.timeout(first_token_s) as first_token:  # off once the first chunk is in
                upstream = await plan.prepared.stream(state.deadline)
                state.upstream_s += time.monotonic() - started
                chunks = aiter(upstream)
                while True:
                    waited = time.monotonic()
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                    finally:
                        state.upstream_s += time.monotonic() - waited
                    if first_s is None:
                        first_s = time.monotonic() - started
                        first_token.reschedule(None)
                    for event in asm.feed(chunk):
                        yield event
            if asm.usage is None:
                # A large call's estimate (LiteLLM's counter over its whole prompt: a second for 15 MiB) off the loop.
                asm.usage = await when_large(plan.call.large, upstream.fallback_usage, asm, True)
            self._answered(plan, state, asm)
        except TimeoutError as exc:
            failure = exc
            if first_token_s is None or not first_token.expired():
                raise
            failure = errors.FirstTokenTimeout(
                f"the upstream sent nothing within {first_token_s:g} s (the route's first_token_timeout_s)"
            )
            raise failure from None
        except (asyncio.CancelledError, GeneratorExit) as exc:
            failure = exc
            self._bill_cancelled(plan, state, asm, upstream)
            raise
        except BaseException as exc:
            failure = exc
            raise
        finally:
            if upstream is None:
                state.upstream_s += time.monotonic() - started
            else:
                await upstream.aclose()
            self._attempt_ended(plan, state, probe, started, first_s, failure)

    def _attempt_started(self, plan: _Attempted, state: _Call) -> bool:
        """Admit an attempt (or raise CircuitOpen) and count it; True when it is the breaker's probe."""
        try:
            probe = self.health.admit(plan.route)
        except errors.CircuitOpen as refused:
            self._observer.breaker_refused(plan.route, refused.retry_after_s)
            raise
        state.attempts += 1
        if plan.route.deployment:
            self._pools[state.route.name].started(plan.route.deployment)
        self._observer.attempt_started(plan, state.attempts)
        return probe

    def _attempt_ended(
        self, plan: _Attempted, state: _Call, probe: bool, started: float, first_s: float | None, failure: BaseException | None
    ) -> None:
        """However an attempt ended: a half-open probe it held is given back (after an answer or a failure
        the breaker has moved on already; this covers the caller's deadline and cancellation)."""
        if probe:
            self.health.released(plan.route)
        if plan.route.deployment:
            self._pools[state.route.name].ended(plan.route.deployment, first_s)
            self._observer.deployment_attempted(state.route, plan.route.deployment, time.monotonic() - started)
        self._observer.attempt_ended(plan, failure, first_s if getattr(plan, "streamed", False) else None)

    def _answered(self, plan: Plan, state: _Call, asm: StreamAssembler) -> None:
        """An attempt got an answer: the route is up, and what the upstream billed is reported, empty
        answers that are retried included (the provider bills them too)."""
        self.health.answered(plan.route)
        usage = asm.usage or Usage()
        asm.cost_usd = cost_usd(plan.request.model, usage, plan.route.price_usd_per_mtok)
        if not usage.is_empty():
            self._observer.used(state.route, usage, asm.cost_usd)
        self._observer.attempt_answered(plan, asm)

    def _bill_cancelled(self, plan: Plan, state: _Call, asm: StreamAssembler, upstream: UpstreamStream | None) -> None:
        """What a cancelled stream had already cost, where the upstream said so (Anthropic sends input first)."""
        usage = asm.usage or (upstream.fallback_usage(asm, finished=False) if upstream is not None else None)
        if usage is None or (usage.input_tokens == 0 and usage.output_tokens == 0):
            return
        log.info(
            "cancelled stream usage",
            extra={"route": state.route.name, "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
        )
        self._observer.used(state.route, usage, cost_usd(plan.request.model, usage))

    async def _after_failure(self, plan: _Attempted, state: _Call, err: errors.LLMError) -> None:
        """Count the failure for the route, then wait for the retry its policy allows, or raise it."""
        policy = policy_of(err)
        if policy.route_failure:
            self.health.failed(plan.route, policy.trips_breaker)
        elif err.upstream_status is not None:
            self.health.answered(plan.route)  # it answered (4xx): the route is up, the request was the problem
        reason = policy.retry
        if reason is None:
            err.attempts = state.attempts
            raise err
        if reason is RetryReason.RATE_LIMIT:
            await self._dump(plan, state, "rate_limit")
        delay = state.retries.delay(reason, state.attempts, err)
        exhausted = not state.retries.left(reason)
        if not await self._retry_allowed(plan, state, reason, delay):
            err.attempts = state.attempts
            if not exhausted or err.retry_after_s is None:
                err.retry_after_s = delay
            raise err

    async def _failed_over(self, pool: DeploymentPool, plan: _Attempted, state: _Call, err: errors.LLMError) -> bool:
        """A deployment rate-limited or with its key refused: the retry goes to another at once, with
        no wait and no dump (PC29); a 429 never counts towards a breaker. False: not such a failure."""
        reason = pool.failed(plan.route.deployment, err, self._retry.max_delay_s)
        if reason is None:
            return False
        if reason is RetryReason.RATE_LIMIT:
            self.health.answered(plan.route)
        if await self._retry_allowed(plan, state, reason, 0.0):
            return True
        err.attempts = state.attempts
        err.retry_after_s = err.retry_after_s or pool.wake_in()
        raise err

    async def _retry_allowed(self, plan: _Attempted, state: _Call, reason: RetryReason, delay_s: float) -> bool:
        """Count, report and wait for one retry; False when its limit, the route's retry budget or the
        deadline forbids it."""
        if not state.retries.allows(reason, delay_s):
            return False
        if reason in (RetryReason.RATE_LIMIT, RetryReason.TRANSIENT) and not self.health.of(plan.route).budget.allows_retry():
            log.warning("retry budget spent", extra={"route": state.route.name, "reason": reason.value})
            return False
        state.retries.count(reason)
        self._observer.retried(state.route, reason)
        log.info(
            "retrying",
            extra={"route": state.route.name, "reason": reason.value, "delay_s": round(delay_s, 3), "attempt": state.attempts},
        )
        self._observer.waiting(state.route, reason, delay_s)
        await asyncio.sleep(delay_s)
        return True

    async def _dump(self, plan: _Attempted, state: _Call, error_type: str) -> None:
        """Write a failed-request dump when dumps are configured (PC26)."""
        if self._dumps is not None:
            await self._dumps.record(plan.request, state.route.name, error_type, state.attempts)

    # --- embeddings: each batch an upstream request, attempted by the same steps as a whole answer ---

    async def _embedded(self, call: EmbedCall, state: _Call) -> AsyncGenerator[Embedding, None]:
        """The call on one route: its batches (the provider's largest request each) attempted at
        most route.embed_concurrency at once, each with its own retries; the vectors put back in
        the inputs' order. A batch that fails for good ends the others and the call on this route."""
        route = state.route
        parts = batches(call, batch_size(route))
        states = [state] if len(parts) == 1 else [self._batch_state(state) for _ in parts]
        gate = asyncio.Semaphore(route.embed_concurrency)

        async def one(inputs: tuple[str, ...], batch_state: _Call) -> tuple[EmbedAnswer, str]:
            async with gate:
                return await self._embed_attempts(inputs, call, batch_state)

        tasks = [asyncio.ensure_future(one(inputs, s)) for inputs, s in zip(parts, states, strict=True)]
        try:
            answered = await asyncio.gather(*tasks)
        except errors.LLMError as err:
            err.attempts = sum(s.attempts for s in states)
            raise
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        state.attempts = sum(s.attempts for s in states)
        state.upstream_s = sum(s.upstream_s for s in states)
        answers = [answer for answer, _ in answered]
        deployments = ",".join(dict.fromkeys(deployment for _, deployment in answered))
        vectors = [vector for answer in answers for vector in answer.vectors]
        usage = Usage(input_tokens=sum(a.input_tokens for a in answers))
        yield Embedding(
            vectors=vectors,
            usage=usage,
            cost_usd=cost_usd(route.model, usage, route.price_usd_per_mtok),
            provider_model=answers[0].model or route.model,
            gateway=state.gateway(deployments),
        )

    def _batch_state(self, state: _Call) -> _Call:
        """One batch's bookkeeping: the call's route, retry limits and deadline, its own retry counts."""
        return _Call(state.route, CallRetries(state.retries.limits, state.deadline, self._retry), state.deadline)

    async def _embed_attempts(self, inputs: tuple[str, ...], call: EmbedCall, state: _Call) -> tuple[EmbedAnswer, str]:
        """Attempts of one batch until an answer (and the deployment that gave it) or a final failure,
        as `_attempts` makes them for a whole answer: each to the deployment the pool chooses,
        failures decided by the policy table."""
        assert self._embed_planner is not None, "this engine was built without embedding transports"
        pool = self._pools.get(state.route.name)
        plan: EmbedPlan | None = None
        tried: set[str] = set()
        while True:
            target = state.route if pool is None else await pool.next(tried, state.deadline, state.attempts)
            if plan is None or plan.route is not target:
                plan = await self._embed_plan(target, inputs, call)
            tried.add(target.deployment)
            try:
                return await self._embed_attempt(plan, state), plan.route.deployment
            except errors.LLMError as err:
                if pool is not None and await self._failed_over(pool, plan, state, err):
                    continue
                await self._after_failure(plan, state, err)

    async def _embed_plan(self, route: Route, inputs: tuple[str, ...], call: EmbedCall) -> EmbedPlan:
        """A batch's plan; a large call's (its body encoded) in a worker thread, off the loop."""
        assert self._embed_planner is not None
        return await when_large(call.large, self._embed_planner.plan, route, inputs, call)

    async def _embed_attempt(self, plan: EmbedPlan, state: _Call) -> EmbedAnswer:
        """One upstream embedding request; what it billed is reported as for a whole answer."""

        async def answered(deadline: Deadline) -> EmbedAnswer:
            answer = await plan.prepared.embed(deadline)
            self.health.answered(plan.route)
            usage = Usage(input_tokens=answer.input_tokens)
            if not usage.is_empty():
                self._observer.used(state.route, usage, cost_usd(plan.request.model, usage, plan.route.price_usd_per_mtok))
            self._observer.embed_answered(plan, answer)  # within the attempt, as a whole answer's
            return answer

        return await self._unary_attempt(plan, state, answered)
