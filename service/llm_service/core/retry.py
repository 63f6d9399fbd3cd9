"""The retry engine's decisions: which failures are retried, how often, after how long.

One layer only: LiteLLM's own retries are switched off, so a gRPC call makes exactly
the upstream attempts this policy allows. Every wait is bounded by the caller's
deadline (PC13): a wait that would pass it ends the call at once instead.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

from llm_service.core.errors import LLMError
from llm_service.core.settings import RetryConfig


class RetryReason(enum.Enum):
    """Why an attempt is retried; the value is the metric label."""

    RATE_LIMIT = "rate_limit"
    EMPTY_RESPONSE = "empty_response"
    EMPTY_STREAM = "empty_stream"
    TRANSIENT = "transient"
    TOOL_COMPAT = "tool_compat"
    FAILOVER = "failover"  # to another deployment after the provider refused a deployment's key
    FIRST_TOKEN = "first_token"  # nothing within the route's first_token_timeout_s


def delay_from_headers(headers: Mapping[str, str], max_delay_s: float, now: float | None = None) -> float | None:
    """The wait the upstream asked for (PC12), clamped to [0, max_delay_s], or None.

    Order: retry-after-ms (milliseconds), retry-after in seconds, retry-after as an HTTP date.
    """
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return _clamp(float(ms) / 1000.0, max_delay_s)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return _clamp(float(value), max_delay_s)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    current = time.time() if now is None else now
    return _clamp(when.timestamp() - current, max_delay_s)


def _clamp(delay: float, max_delay_s: float) -> float:
    if delay != delay:  # NaN
        return 0.0
    return min(max(delay, 0.0), max_delay_s)


def backoff_delay(retry_index: int, cfg: RetryConfig, rng: random.Random | None = None, jitter: bool = True) -> float:
    """Exponential backoff base * 2^retry_index, times U(1 - jitter_ratio, 1 + jitter_ratio), then
    clamped to [0, max_delay_s] (PC30: clamped after the jitter, so no wait passes the maximum)."""
    delay = cfg.backoff_base_s * (2 ** min(retry_index, 30))
    if jitter and cfg.jitter_ratio:
        delay *= (rng or random).uniform(1.0 - cfg.jitter_ratio, 1.0 + cfg.jitter_ratio)
    return _clamp(delay, cfg.max_delay_s)


SHORT_RETRY_AFTER_S = 5.0  # below it, concurrent callers told the same wait are spread apart
BACKPRESSURE_WAIT_S = (1.0, 2.0)  # an upstream's "backpressure" error that came without a Retry-After


def jittered_retry_after(asked_s: float, cfg: RetryConfig, rng: random.Random | None = None) -> float:
    """PC30: a short Retry-After d becomes d × U(1.0, 1.5) + U(0, 0.5), so callers told the same
    wait do not all come back at once; 5 s or more is kept as given. Clamped to [0, max_delay_s]."""
    if asked_s >= SHORT_RETRY_AFTER_S or not cfg.retry_after_jitter:
        return asked_s
    r = rng or random
    return _clamp(asked_s * r.uniform(1.0, 1.5) + r.uniform(0.0, 0.5), cfg.max_delay_s)


@dataclass(frozen=True)
class RetryLimits:
    """How many retries of each reason one call may make."""

    rate_limit: int
    empty_response: int
    empty_stream: int
    transient: int

    @classmethod
    def for_call(cls, cfg: RetryConfig, cap: int, route_max: int | None, call_max: int | None) -> RetryLimits:
        """Limits for a call: the configured ones, lowered by the route's and the caller's max_retries.

        The caller's value is capped by the server's max_retries_cap; 0 means no retries at all.
        """
        limit = cfg.rate_limit_max_retries
        if route_max is not None:
            limit = min(limit, route_max)
        if call_max is not None:
            limit = min(limit, max(0, min(call_max, cap)))
        return cls(
            rate_limit=limit,
            empty_response=min(cfg.empty_response_max_retries, limit),
            empty_stream=min(cfg.empty_stream_max_retries, limit),
            transient=min(cfg.transient_max_retries, limit),
        )

    def allowed(self, reason: RetryReason) -> int:
        """Retries allowed for a reason; an empty whole answer has its own cap (PC31), apart from rate limits."""
        if reason in (RetryReason.RATE_LIMIT, RetryReason.FAILOVER):
            return self.rate_limit
        if reason is RetryReason.EMPTY_RESPONSE:
            return self.empty_response
        if reason is RetryReason.EMPTY_STREAM:
            return self.empty_stream
        if reason in (RetryReason.TRANSIENT, RetryReason.FIRST_TOKEN):
            return self.transient
        return 1


class Deadline:
    """The caller's deadline as a monotonic instant (None: no deadline)."""

    def __init__(self, timeout_s: float | None) -> None:
        self.at = None if timeout_s is None else time.monotonic() + timeout_s
        self.route_bound_s: float | None = None  # set when the route's timeout_s stands in for a caller's deadline

    def bounded(self, timeout_s: float) -> Deadline:
        """This deadline, or, for a caller that set none, one of timeout_s from now: every call ends."""
        if self.at is not None:
            return self
        own = Deadline(timeout_s)
        own.route_bound_s = timeout_s
        return own

    def passed(self) -> Exception:
        """The error for this deadline having passed."""
        from llm_service.core import errors

        if self.route_bound_s is not None:
            return errors.RouteTimeout(
                f"the upstream did not answer within the route's timeout_s ({self.route_bound_s:g} s; "
                "the call had no deadline of its own)"
            )
        return errors.DeadlineExceeded("the caller's deadline passed while waiting for the upstream")

    def remaining(self) -> float | None:
        """Seconds left, never negative; None without a deadline."""
        return None if self.at is None else max(0.0, self.at - time.monotonic())

    def allows_wait(self, wait_s: float) -> bool:
        """Whether waiting wait_s still leaves time for another attempt."""
        return self.at is None or time.monotonic() + wait_s < self.at


@dataclass
class CallRetries:
    """One call's retries on one route: how many of each reason so far, against its limits and deadline."""

    limits: RetryLimits
    deadline: Deadline
    cfg: RetryConfig
    rng: random.Random | None = None
    made: dict[RetryReason, int] = field(default_factory=dict)
    _rate_limited: tuple[int, LLMError] | None = None  # the last rate limit: its attempt and its error

    def left(self, reason: RetryReason) -> bool:
        """Whether the reason's limit allows another retry."""
        return self.made.get(reason, 0) < self.limits.allowed(reason)

    def delay(self, reason: RetryReason, attempt: int, err: LLMError | None = None) -> float:
        """The wait before retrying after attempt number `attempt` failed for reason (err, if it failed):
        - what the upstream asked for (PC12), a short ask jittered (PC30);
        - an upstream's backpressure error without a header: U(1, 2) s (PC30);
        - an empty stream right after a rate limit: as that rate limit asked (PC31); else a fixed pause;
        - an empty whole answer: backoff without jitter (2, 4, 8 s at the default base, PC31);
        - a tool-compat switch: none; anything else: jittered backoff."""
        if reason is RetryReason.RATE_LIMIT and err is not None:
            self._rate_limited = (attempt, err)
        if reason is RetryReason.EMPTY_STREAM:
            if self._rate_limited is None or attempt - self._rate_limited[0] > 1:
                return self.cfg.empty_stream_delay_s
            reason, err = RetryReason.RATE_LIMIT, self._rate_limited[1]
        if reason is RetryReason.TOOL_COMPAT:
            return 0.0
        if err is not None:
            asked = delay_from_headers(err.upstream_headers, self.cfg.max_delay_s)
            if asked is not None:
                return jittered_retry_after(asked, self.cfg, self.rng)
            if err.backpressure:
                return _clamp((self.rng or random).uniform(*BACKPRESSURE_WAIT_S), self.cfg.max_delay_s)
        jitter = reason is not RetryReason.EMPTY_RESPONSE
        return backoff_delay(self.made.get(reason, 0), self.cfg, self.rng, jitter=jitter)

    def allows(self, reason: RetryReason, delay_s: float) -> bool:
        """Whether a retry after delay_s is within the reason's limit and leaves time before the deadline (PC13)."""
        return self.left(reason) and self.deadline.allows_wait(delay_s)

    def count(self, reason: RetryReason) -> None:
        self.made[reason] = self.made.get(reason, 0) + 1
