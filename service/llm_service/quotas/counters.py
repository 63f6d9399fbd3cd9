"""The counters behind the quotas, and the one set of rules both keepers of them follow.

Windows: a caller's minute starts with its first call and lasts 60 s (a key that expires:
the first call after it starts the next one), so every call within 60 s of a window's first
counts in that window; days and months are UTC calendar periods. A call is admitted while
every limit it falls under has room left (what was settled plus what calls in flight
reserved is below the limit), and then reserves: one request, its input estimate plus
max_tokens, their estimated cost, and a concurrent-stream slot leased until its deadline (a
replica that dies cannot hold a slot for ever). Settling replaces the reservation with what
the upstream reported. So a burst overshoots a limit by at most what the calls already in
flight use beyond it.

`MemoryCounters` keep them in this process (one replica; and where Redis is down and the
service fails open); `quotas.redis` keeps them in Redis, shared by every replica.
"""

from __future__ import annotations

import calendar
import functools
import time
from dataclasses import dataclass
from typing import Protocol

from llm_service.quotas.limits import Limits

MINUTE_S = 60.0
STREAM_RETRY_S = 1.0  # a stream slot frees when a stream ends, which nobody can foresee


@dataclass(frozen=True)
class Ask:
    """What one call asks of its caller's counters."""

    caller: str
    scopes: tuple[tuple[str, Limits], ...]  # (scope, limits): all routes ("*"), and the route's own
    tokens: int  # reserved: input estimate + max_tokens
    usd: float  # reserved: their estimated cost (0 when no budget applies)
    stream_id: str  # "" for a call that is no stream
    lease_s: float  # how long a stream slot is held at most
    now_s: float  # wall-clock time of the ask

    @property
    def day(self) -> str:
        return _calendar(int(self.now_s // 86_400))[0]

    @property
    def month(self) -> str:
        return _calendar(int(self.now_s // 86_400))[1]

    @property
    def day_left_s(self) -> float:
        return 86_400.0 - self.now_s % 86_400.0

    @property
    def month_left_s(self) -> float:
        return _calendar(int(self.now_s // 86_400))[2] - self.now_s


@functools.lru_cache(maxsize=4)
def _calendar(day_number: int) -> tuple[str, str, float]:
    """A UTC day's name, its month's name and when that month ends (Unix seconds): worked out once
    a day rather than once a call."""
    t = time.gmtime(day_number * 86_400)
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return time.strftime("%Y-%m-%d", t), time.strftime("%Y-%m", t), float(calendar.timegm((year, month, 1, 0, 0, 0)))


@dataclass(frozen=True)
class Refusal:
    """The limit a call is over: its name, the scope it counts, its value, when it frees up."""

    limit: str
    scope: str
    quota: float
    retry_after_s: float


@dataclass(frozen=True)
class Admission:
    """The answer to an Ask: refused, or admitted into these minute windows (their start, per scope);
    and the caller's spend over all routes today and this month, as the counters saw it."""

    refusal: Refusal | None
    windows: tuple[float, ...] = ()
    spent_day: float = 0.0
    spent_month: float = 0.0


class Counters(Protocol):
    """Where the counters live."""

    async def admit(self, ask: Ask) -> Admission:
        """Check every limit of the ask and, when all have room, reserve what it asks; atomically."""
        ...

    async def settle(self, ask: Ask, admission: Admission, tokens_delta: int, usd_delta: float) -> tuple[float, float]:
        """Correct an admitted call's reservation by what it really used, give back its stream slot;
        returns the spend today and this month over all routes."""
        ...

    async def aclose(self) -> None: ...


def _limit(value: float | None) -> float:
    return -1.0 if value is None else float(value)


class MemoryCounters:
    """The counters in this process's memory: exact for one replica; N replicas admit N times the limits."""

    def __init__(self) -> None:
        self._minutes: dict[tuple[str, str], list[float]] = {}  # [start_s, requests, tokens]
        self._spend: dict[tuple[str, str, str], tuple[str, float]] = {}  # (caller, scope, "day"/"month"): (period, usd)
        self._streams: dict[tuple[str, str], dict[str, float]] = {}  # stream id: lease end

    def _minute(self, key: tuple[str, str], now_s: float) -> list[float]:
        window = self._minutes.get(key)
        if window is None or now_s >= window[0] + MINUTE_S:
            window = self._minutes[key] = [now_s, 0.0, 0.0]
        return window

    def _spent(self, key: tuple[str, str, str], period: str) -> float:
        held = self._spend.get(key)
        return held[1] if held is not None and held[0] == period else 0.0

    def _open(self, key: tuple[str, str], now_s: float) -> dict[str, float]:
        streams = self._streams.setdefault(key, {})
        for sid in [s for s, end in streams.items() if end <= now_s]:
            del streams[sid]
        return streams

    async def admit(self, ask: Ask) -> Admission:
        now = ask.now_s
        for scope, limits in ask.scopes:
            key = (ask.caller, scope)
            window = self._minute(key, now)
            left_s = window[0] + MINUTE_S - now
            checks: list[tuple[str, float | None, float, float]] = [
                ("requests_per_minute", limits.requests_per_minute, window[1], left_s),
                ("tokens_per_minute", limits.tokens_per_minute, window[2], left_s),
                ("usd_per_day", limits.usd_per_day, self._spent((*key, "day"), ask.day), ask.day_left_s),
                ("usd_per_month", limits.usd_per_month, self._spent((*key, "month"), ask.month), ask.month_left_s),
            ]
            if ask.stream_id and limits.concurrent_streams is not None:
                checks.append(("concurrent_streams", limits.concurrent_streams, len(self._open(key, now)), STREAM_RETRY_S))
            for name, quota, used, retry_s in checks:
                if quota is not None and used >= quota:
                    return Admission(Refusal(name, scope, float(quota), retry_s))
        windows = []
        for scope, limits in ask.scopes:
            key = (ask.caller, scope)
            window = self._minute(key, now)
            window[1] += 1
            window[2] += ask.tokens
            windows.append(window[0])
            for kind, period in (("day", ask.day), ("month", ask.month)):
                self._spend[(*key, kind)] = (period, self._spent((*key, kind), period) + ask.usd)
            if ask.stream_id and limits.concurrent_streams is not None:
                self._open(key, now)[ask.stream_id] = now + ask.lease_s
        day, month = self._totals(ask)
        return Admission(None, tuple(windows), day, month)

    async def settle(self, ask: Ask, admission: Admission, tokens_delta: int, usd_delta: float) -> tuple[float, float]:
        for (scope, _), start in zip(ask.scopes, admission.windows, strict=True):
            key = (ask.caller, scope)
            window = self._minutes.get(key)
            if window is not None and window[0] == start:
                window[2] = max(0.0, window[2] + tokens_delta)
            for kind, period in (("day", ask.day), ("month", ask.month)):
                held = self._spend.get((*key, kind))
                if held is not None and held[0] == period:
                    self._spend[(*key, kind)] = (period, max(0.0, held[1] + usd_delta))
            self._streams.get(key, {}).pop(ask.stream_id, None)
        return self._totals(ask)

    def _totals(self, ask: Ask) -> tuple[float, float]:
        scope = ask.scopes[0][0]
        return self._spent((ask.caller, scope, "day"), ask.day), self._spent((ask.caller, scope, "month"), ask.month)

    async def aclose(self) -> None:
        return None


def limit_args(limits: Limits) -> list[float]:
    """A scope's limits as the Redis script reads them (-1: none)."""
    return [
        _limit(limits.requests_per_minute),
        _limit(limits.tokens_per_minute),
        _limit(limits.concurrent_streams),
        _limit(limits.usd_per_day),
        _limit(limits.usd_per_month),
    ]
