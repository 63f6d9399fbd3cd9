"""A route's deployments: which one the next attempt goes to, and which are resting or out.

The choice (`balance`) is smooth weighted round-robin (nginx's: over time each deployment
gets its weight's share, spread evenly; one back from a rest ramps up to its weight over the
route's `ramp_s`) or least in-flight with a moving average of the wait for the first answer
breaking ties, over the deployments available now, those the call has not tried yet first,
so a retry goes elsewhere. A rate-limited deployment rests for the wait
the upstream asked for, else the route's `rest_s` (PC29); a deployment whose key the
provider refused (401, 402, 403) is out until its key changes (a key file re-read) or for
the route's `key_out_s`. Keys are only ever shown as a fingerprint, their last 4 characters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Container

from llm_service.core import errors
from llm_service.core.retry import Deadline, RetryReason, delay_from_headers
from llm_service.core.settings import Route

log = logging.getLogger(__name__)
LATENCY_EWMA_WEIGHT = 0.3  # of the newest sample in the moving average of first-answer waits


def fingerprint(key: str) -> str:
    """What a log line may show of a key."""
    return f"…{key[-4:]}" if len(key) > 8 else "…"


class DeploymentPool:
    """One route's deployments, each as the route calls it (`Route.of`)."""

    def __init__(
        self,
        route: Route,
        on_change: Callable[[Route, str, bool, str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.route = route
        self._on_change = on_change  # (route, deployment, up, why it went out or "")
        self._clock = clock
        self._views = {d.name: route.of(d) for d in route.deployments}
        self._weights = {d.name: d.weight for d in route.deployments}
        self._current = dict.fromkeys(self._views, 0.0)
        self._resting_until: dict[str, float] = {}
        self._out: dict[str, tuple[float, str]] = {}  # name -> (until, the key that was refused)
        self._back_at: dict[str, float] = {}  # when a deployment came back from a rest or from out
        self._inflight = dict.fromkeys(self._views, 0)
        self._latency_s = dict.fromkeys(self._views, 0.0)  # moving average of the wait for the first answer
        # Steady: every deployment has its key and is neither resting, out nor ramping up. Then a
        # first attempt's choice is over all of them at their whole weights, with nothing to check.
        self._steady_from = 0.0  # until then, a rest or a ramp may still be under way
        self._all_ready = False  # a key, once there, stays (a key file emptied keeps the last one)
        self._total_weight = float(sum(self._weights.values()))

    def choose(self, tried: Container[str] = ()) -> Route | None:
        """The deployment for the next attempt, or None when none is available now."""
        now = self._clock()
        if not tried and not self._out and now >= self._steady_from and self._ready():
            return self._steady_choice()
        available = [name for name in self._views if self.available(name, now)]
        if not available:
            return None
        fresh = [name for name in available if name not in tried] or available
        if self.route.balance == "least_inflight":
            best = min(fresh, key=lambda name: (self._inflight[name], self._latency_s[name]))
            return self._views[best]
        weights = {name: self._weight(name, now) for name in fresh}
        total = sum(weights.values())
        for name in fresh:
            self._current[name] += weights[name]
        best = max(fresh, key=lambda name: self._current[name])
        self._current[best] -= total
        return self._views[best]

    def _ready(self) -> bool:
        if not self._all_ready:
            self._all_ready = all(view.ready for view in self._views.values())
        return self._all_ready

    def _steady_choice(self) -> Route:
        """choose() over every deployment at its whole weight (what it comes to when steady)."""
        if self.route.balance == "least_inflight":
            best = min(self._views, key=lambda name: (self._inflight[name], self._latency_s[name]))
            return self._views[best]
        current = self._current
        for name, weight in self._weights.items():
            current[name] += weight
        best = max(current, key=current.__getitem__)
        current[best] -= self._total_weight
        return self._views[best]

    def _unsteady_until(self, until: float) -> None:
        self._steady_from = max(self._steady_from, until)

    def _weight(self, name: str, now: float) -> float:
        """The deployment's weight, ramped back from a tenth to whole over ramp_s after it came back,
        so a deployment back from a rest is not handed its whole share at once."""
        back = self._back_at.get(name)
        if back is None or now - back >= self.route.ramp_s:
            return float(self._weights[name])
        return self._weights[name] * max(0.1, (now - back) / self.route.ramp_s)

    def started(self, name: str) -> None:
        """An attempt on the deployment began."""
        self._inflight[name] += 1

    def ended(self, name: str, first_byte_s: float | None) -> None:
        """An attempt on the deployment ended; first_byte_s (its wait for the first answer) feeds the
        latency average that breaks ties between equally busy deployments."""
        self._inflight[name] -= 1
        if first_byte_s is not None:
            self._latency_s[name] += LATENCY_EWMA_WEIGHT * (first_byte_s - self._latency_s[name])

    async def next(self, tried: Container[str], deadline: Deadline, attempts: int) -> Route:
        """The deployment for the next attempt; when every one rests, after waiting for the soonest
        within the caller's deadline (PC29), else RESOURCE_EXHAUSTED with that wait as RetryInfo.
        Never a re-send back to back to a resting deployment."""
        while (target := self.choose(tried)) is None:
            wait = self.wake_in()
            if wait is None:
                err: errors.LLMError = errors.UpstreamAuthFailed(f"the provider refused every key of route '{self.route.name}'")
            elif deadline.allows_wait(wait):
                log.info("every deployment resting: waiting", extra={"route": self.route.name, "delay_s": round(wait, 3)})
                await asyncio.sleep(wait)
                continue
            else:
                err = errors.RateLimited(f"every deployment of route '{self.route.name}' is rate-limited", retry_after_s=wait)
            err.attempts = attempts
            raise err
        return target

    def failed(self, name: str, err: errors.LLMError, max_delay_s: float) -> RetryReason | None:
        """After a failed attempt on a deployment: a rate limit rests it (for the wait the upstream asked,
        PC12 rules), a refused key takes it out; the retry reason for either, None for other failures."""
        if isinstance(err, errors.RateLimited):
            self.rest(name, delay_from_headers(err.upstream_headers, max_delay_s))
            return RetryReason.RATE_LIMIT
        if isinstance(err, (errors.UpstreamAuthFailed, errors.InsufficientCredits)):
            self.take_out(name)
            return RetryReason.FAILOVER
        return None

    def available(self, name: str, now: float | None = None) -> bool:
        """Whether the deployment may be called now: not resting, not out, and with a key."""
        now = self._clock() if now is None else now
        if self._resting_until.get(name, 0.0) > now:
            return False
        view = self._views[name]
        out = self._out.get(name)
        if out is not None:
            until, refused = out
            current = view.key.reveal() if view.key is not None else ""
            if now < until and current == refused:
                return False
            del self._out[name]
            self._back_at[name] = now
            self._unsteady_until(now + self.route.ramp_s)
            log.warning("deployment back in", extra={"route": self.route.name, "deployment": name})
            self._on_change(self.route, name, True, "")
        return view.ready

    def rest(self, name: str, seconds: float | None) -> None:
        """A rate limit: no calls to the deployment for seconds (the upstream's ask), else rest_s."""
        rest_s = self.route.rest_s if seconds is None else seconds
        self._resting_until[name] = self._clock() + rest_s
        self._unsteady_until(self._resting_until[name] + self.route.ramp_s)
        log.info("deployment resting", extra={"route": self.route.name, "deployment": name, "rest_s": round(rest_s, 3)})
        self._on_change(self.route, name, False, "rate_limit")
        asyncio.get_running_loop().call_later(rest_s, self._woke, name)

    def take_out(self, name: str) -> None:
        """The provider refused the deployment's key: out until the key changes, or for key_out_s."""
        view = self._views[name]
        key = view.key.reveal() if view.key is not None else ""
        self._out[name] = (self._clock() + self.route.key_out_s, key)
        self._on_change(self.route, name, False, "key_refused")
        log.warning(
            "deployment out: the provider refused its key",
            extra={"route": self.route.name, "deployment": name, "key": fingerprint(key)},
        )

    def _woke(self, name: str) -> None:
        if self.available(name):
            self._back_at[name] = self._clock()
            self._unsteady_until(self._back_at[name] + self.route.ramp_s)
            self._on_change(self.route, name, True, "")

    def wake_in(self) -> float | None:
        """Seconds until the soonest resting deployment may be called again; None when none rests."""
        now = self._clock()
        waits = [until - now for until in self._resting_until.values() if until > now]
        return min(waits) if waits else None

    def states(self) -> dict[str, bool]:
        """Each deployment's name and whether it is available now (for the metrics)."""
        now = self._clock()
        return {name: self.available(name, now) for name in self._views}
