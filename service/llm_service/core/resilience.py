"""Per-route protection of the upstream: a retry budget and a circuit breaker.

Retry budget: gRFC A6 retry throttling. Each route holds up to `max_tokens` tokens;
a failed attempt takes one, an answered attempt gives back `token_ratio`; a retry is
allowed only while more than half remain. Under sustained failure the retries stop
after about max_tokens / 2, so upstream attempts approach one per incoming call.

Circuit breaker: after `failure_threshold` consecutive failed attempts the route
opens and calls fail at once for `open_s`; then one probe call is let through
(half-open): success closes the route, failure opens it again.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from llm_service.core import errors
from llm_service.core.settings import ResilienceConfig, Route

log = logging.getLogger(__name__)


class RetryBudget:
    """gRFC A6 token bucket for one route."""

    def __init__(self, max_tokens: float, token_ratio: float) -> None:
        self.max_tokens = max_tokens
        self.token_ratio = token_ratio
        self.tokens = max_tokens

    def failed(self) -> None:
        self.tokens = max(0.0, self.tokens - 1.0)

    def succeeded(self) -> None:
        self.tokens = min(self.max_tokens, self.tokens + self.token_ratio)

    def allows_retry(self) -> bool:
        return self.tokens > self.max_tokens / 2


class BreakerState(enum.Enum):
    """The breaker's state; the value is the metric's number."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    """Consecutive-failure breaker for one route, with a single half-open probe."""

    def __init__(self, failure_threshold: int, open_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failure_threshold = failure_threshold
        self.open_s = open_s
        self._clock = clock
        self.state = BreakerState.CLOSED
        self.failures = 0
        self._opened_at = 0.0
        self._probing = False

    def admit(self) -> float | None:
        """None when an attempt may go ahead; else the seconds until the route may be tried again."""
        if self.state is BreakerState.CLOSED:
            return None
        remaining = self._opened_at + self.open_s - self._clock()
        if self.state is BreakerState.OPEN and remaining <= 0:
            self.state = BreakerState.HALF_OPEN
        if self.state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True  # this attempt is the probe
            return None
        return max(remaining, 0.0) if self.state is BreakerState.OPEN else self.open_s

    def succeeded(self) -> None:
        self.failures = 0
        self._probing = False
        self.state = BreakerState.CLOSED

    def failed(self) -> None:
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.failure_threshold:
            self.state = BreakerState.OPEN
            self._opened_at = self._clock()
            self._probing = False

    def released(self) -> None:
        """The probe ended without telling (cancelled, caller error): let another probe try."""
        self._probing = False


@dataclass
class RouteHealth:
    """A route's retry budget and breaker."""

    budget: RetryBudget
    breaker: CircuitBreaker

    @classmethod
    def new(cls, cfg: ResilienceConfig) -> RouteHealth:
        budget = RetryBudget(cfg.retry_budget_tokens, cfg.retry_budget_ratio)
        return cls(budget, CircuitBreaker(cfg.breaker_failures, cfg.breaker_open_s))


class RouteHealthBook:
    """Every route's health, made on first use, with each breaker move reported to on_change."""

    def __init__(self, cfg: ResilienceConfig, on_change: Callable[[Route, BreakerState], None]) -> None:
        self._cfg = cfg
        self._on_change = on_change
        self._routes: dict[str, RouteHealth] = {}

    def of(self, route: Route) -> RouteHealth:
        """The budget and breaker of the route (or of the one deployment of it that `route` is)."""
        key = f"{route.name}\x00{route.deployment}"  # each deployment of a route has its own
        found = self._routes.get(key)
        if found is None:
            found = self._routes[key] = RouteHealth.new(self._cfg)
        return found

    def admit(self, route: Route) -> bool:
        """Let an attempt go ahead, or raise CircuitOpen. True when the attempt is the half-open probe,
        which must be given back with `released` if it ends without an answer or a failure."""
        breaker = self.of(route).breaker
        before = breaker.state
        wait = breaker.admit()
        self._moved(route, before)
        if wait is not None:
            raise errors.CircuitOpen(
                f"route '{route.name}' failed {breaker.failure_threshold} times in a row; not calling it for now",
                retry_after_s=wait,
            )
        return breaker.state is BreakerState.HALF_OPEN

    def failed(self, route: Route, trips_breaker: bool = True) -> None:
        """The upstream did not answer well: one from the budget and, for an outage (not a rate
        limit), one towards opening the breaker."""
        health = self.of(route)
        before = health.breaker.state
        health.budget.failed()
        if trips_breaker:
            health.breaker.failed()
        self._moved(route, before)

    def answered(self, route: Route) -> None:
        """The upstream answered (an error status counts too: the route is up, the request was the problem)."""
        health = self.of(route)
        before = health.breaker.state
        health.budget.succeeded()
        health.breaker.succeeded()
        self._moved(route, before)

    def released(self, route: Route) -> None:
        """A probe ended by the caller (deadline, cancellation): the next call may probe. Without
        this the breaker stayed half-open with its one probe taken, refusing every call for ever."""
        self.of(route).breaker.released()

    def _moved(self, route: Route, before: BreakerState) -> None:
        after = self.of(route).breaker.state
        if after is not before:
            log.warning("circuit breaker", extra={"route": route.name, "state": after.name.lower()})
            self._on_change(route, after)
