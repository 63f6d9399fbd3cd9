"""Admission by quota: who a call is billed to, what it reserves before anything goes upstream,
and settling the reservation with what the upstream billed.

The servicer opens each call's `Tab` (quotas.tab) before admission and settles it once when the call ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from typing import TYPE_CHECKING, Any, Protocol

from llm_service.core import errors
from llm_service.core.embedding import EmbedCall
from llm_service.core.pricing import TOKENS_PER_MTOK, cost_usd
from llm_service.core.settings import Route
from llm_service.core.tokens import CHARS_PER_TOKEN, chars_estimate
from llm_service.core.types import CallRequest, Usage
from llm_service.quotas.counters import Ask, Counters, MemoryCounters, Refusal
from llm_service.quotas.limits import ALL_ROUTES, QuotaRules, QuotasConfig
from llm_service.quotas.redis import BACKEND_ERRORS, RedisCounters
from llm_service.quotas.tab import TAB, Tab

if TYPE_CHECKING:
    from llm_service.auth import Caller

log = logging.getLogger(__name__)
ANONYMOUS = "_anonymous"  # the caller of a server without authentication (and its label)
UNLISTED = "_unlisted"  # the label of a caller named nowhere in the configuration (an mTLS name)
STREAM_LEASE_MARGIN_S = 5.0
_LIMIT_WORDS = {
    "requests_per_minute": "requests per minute",
    "tokens_per_minute": "tokens per minute",
    "concurrent_streams": "concurrent streams",
    "usd_per_day": "US dollars per day",
    "usd_per_month": "US dollars per month",
}


class QuotaMetrics(Protocol):
    """What the gate reports (the metrics implement it)."""

    def quota_refused(self, caller: str, limit: str) -> None: ...

    def quota_backend(self, up: bool) -> None: ...

    def caller_spend(self, caller: str, period: str, spent_usd: float, budget_usd: float) -> None: ...


class QuotaGate:
    """Checks and counts each call against its caller's limits, in Redis or in this process."""

    def __init__(self, config: QuotasConfig, metrics: QuotaMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self._local = MemoryCounters()
        self._shared: RedisCounters | None = None
        self._up = True
        self._watch: asyncio.Task[None] | None = None
        self._rates: dict[str, tuple[float, ...]] = {}  # route: US dollars per input token, per output token
        if config.redis_url:
            self._shared = RedisCounters(config.redis_url, config.key_prefix, config.backend_timeout_s, config.redis_cluster)
            metrics.quota_backend(True)
            with contextlib.suppress(RuntimeError):  # made outside a running loop (a test): watched from the first call
                asyncio.get_running_loop()
                self._watching()

    # --- who and what ------------------------------------------------------------------------

    def rules(self, caller: Caller | None) -> QuotaRules:
        """The caller's limits: its tokens file entry's, else the config's for its name, else the default."""
        if caller is not None:
            if caller.quotas is not None:
                return caller.quotas
            named = self.config.callers.get(caller.name)
            if named is not None:
                return named
        return self.config.default

    def label(self, caller: Caller | None) -> str:
        """The caller's metric label: its name where the configuration names it, else a placeholder."""
        if caller is None:
            return ANONYMOUS
        return caller.name if caller.listed or caller.name in self.config.callers else UNLISTED

    def open_tab(self, caller: Caller | None, route: Route, call: CallRequest | EmbedCall, streamed: bool, lease_s: float) -> Tab:
        """The call's tab, set as TAB for the rest of the RPC; what it will ask of the counters."""
        scopes = self.rules(caller).scopes(route.name)
        ask = None
        if scopes:
            estimate, out = _tokens_asked(route, call)
            usd = self._estimated_cost(route, estimate, out) if any(limits.spends for _, limits in scopes) else 0.0
            name = caller.name if caller is not None else ANONYMOUS
            stream_id = uuid.uuid4().hex if streamed else ""
            ask = Ask(name, scopes, estimate + out, usd, stream_id, lease_s + STREAM_LEASE_MARGIN_S, time.time())
        tab = Tab(self.label(caller), ask)
        TAB.set(tab)
        return tab

    def _estimated_cost(self, route: Route, input_tokens: int, output_tokens: int) -> float:
        """What a reservation is priced at: the route's model's rates per token, looked up once per
        route (LiteLLM's price lookup costs hundreds of µs a call); tiers and cache rates are left to
        the settlement, which uses the upstream's own figures."""
        rates = self._rates.get(route.name)
        if rates is None:
            per_mtok = (Usage(input_tokens=TOKENS_PER_MTOK), Usage(output_tokens=TOKENS_PER_MTOK))
            rates = self._rates[route.name] = tuple(
                cost_usd(route.model, u, route.price_usd_per_mtok) / TOKENS_PER_MTOK for u in per_mtok
            )
        return input_tokens * rates[0] + output_tokens * rates[1]

    # --- admission and settling ----------------------------------------------------------------

    async def admit(self, tab: Tab) -> None:
        """Reserve what the call asks, or raise QuotaExceeded (or QuotaBackendUnavailable, failing closed)."""
        if tab.ask is None:
            return
        self._watching()
        closed = self.config.on_backend_down == "closed"
        if self._shared is not None and not self._up and closed:
            raise _unavailable(self.config)
        counters: Counters = self._shared if self._shared is not None and self._up else self._local
        try:
            admission = await counters.admit(tab.ask)
        except BACKEND_ERRORS as exc:
            self._down(exc)
            if closed:
                raise _unavailable(self.config) from None
            counters = self._local
            admission = await counters.admit(tab.ask)
        if admission.refusal is not None:
            self.metrics.quota_refused(tab.label, admission.refusal.limit)
            raise _exceeded(tab, admission.refusal)
        tab.counters, tab.admission = counters, admission
        self._spent(tab, admission.spent_day, admission.spent_month)

    async def settle(self, tab: Tab | None) -> None:
        """Replace the call's reservation with what the upstream billed, give back its stream slot. Raises
        nothing but the RPC's own cancellation (the settlement goes on, shielded)."""
        if tab is None or tab.admission is None or tab.counters is None or tab.ask is None:
            return
        admission, tab.admission = tab.admission, None
        settling = asyncio.ensure_future(
            tab.counters.settle(tab.ask, admission, tab.tokens - tab.ask.tokens, tab.usd - tab.ask.usd)
        )
        settling.add_done_callback(_retrieved)  # shielded: it goes on if the RPC is cancelled meanwhile
        try:
            spent = await asyncio.shield(settling)
        except BACKEND_ERRORS as exc:  # the reservation stands until its window ends; the stream's lease runs out
            self._down(exc)
            return
        self._spent(tab, *spent)

    def _spent(self, tab: Tab, day: float, month: float) -> None:
        assert tab.ask is not None
        scope, limits = tab.ask.scopes[0]
        if scope != ALL_ROUTES or tab.label == UNLISTED:
            return
        if limits.usd_per_day is not None:
            self.metrics.caller_spend(tab.label, "day", day, limits.usd_per_day)
        if limits.usd_per_month is not None:
            self.metrics.caller_spend(tab.label, "month", month, limits.usd_per_month)

    # --- the backend's health -------------------------------------------------------------------

    def _down(self, exc: BaseException) -> None:
        if self._up:
            log.error(
                "quota backend unreachable",
                extra={"error": str(exc) or type(exc).__name__, "on_backend_down": self.config.on_backend_down},
            )
        self._up = False
        self.metrics.quota_backend(False)

    def _watching(self) -> None:
        """Ping Redis every backend_retry_s: the gauge says whether it answers, and calls go back to
        it as soon as it does."""
        if self._shared is not None and self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self._watch_backend())

    async def _watch_backend(self) -> None:
        shared = self._shared
        assert shared is not None
        while True:
            try:
                await shared.ping()
            except BACKEND_ERRORS as exc:
                self._down(exc)
            else:
                if not self._up:
                    log.warning("quota backend reachable again")
                    await shared.reconnect()
                    self._up = True
                    self.metrics.quota_backend(True)
            await asyncio.sleep(self.config.backend_retry_s)

    async def status(self, caller: str = "") -> list[dict[str, Any]]:
        """The live counters in Redis (see RedisCounters.status)."""
        assert self._shared is not None
        rows: list[dict[str, Any]] = await self._shared.status(caller)
        return rows

    async def aclose(self) -> None:
        """Stop watching Redis and close its connections."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._shared is not None:
            await self._shared.aclose()


def _tokens_asked(route: Route, call: CallRequest | EmbedCall) -> tuple[int, int]:
    """A call's input estimate (characters / 4) and the most output tokens it may be billed for."""
    if isinstance(call, EmbedCall):
        return sum(len(text) for text in call.inputs) // CHARS_PER_TOKEN, 0
    return chars_estimate(call.messages, system=call.system), call.max_tokens or route.max_tokens


def _retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("quota settlement failed", extra={"error": str(task.exception())})


def _unavailable(config: QuotasConfig) -> errors.QuotaBackendUnavailable:
    return errors.QuotaBackendUnavailable(
        "the quota counters cannot be reached; retry shortly", retry_after_s=config.backend_retry_s
    )


def _exceeded(tab: Tab, refusal: Refusal) -> errors.QuotaExceeded:
    assert tab.ask is not None
    where = "" if refusal.scope == ALL_ROUTES else f" on route '{refusal.scope}'"
    subject = f"caller:{tab.ask.caller}" + ("" if refusal.scope == ALL_ROUTES else f"/route:{refusal.scope}")
    return errors.QuotaExceeded(
        f"quota exceeded: {refusal.quota:g} {_LIMIT_WORDS[refusal.limit]}{where} ({refusal.limit}); "
        f"it frees up in {math.ceil(refusal.retry_after_s)} s",
        limit=refusal.limit,
        scope=refusal.scope,
        quota=refusal.quota,
        subject=subject,
        retry_after_s=refusal.retry_after_s,
    )
