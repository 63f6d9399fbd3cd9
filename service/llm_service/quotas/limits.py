"""What a caller may use: the limits of one caller (over all routes, and per route), the default
for callers with none of their own, and where the counters live."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from llm_service.core.settings import COUNT, POSITIVE_SECONDS, Check, setting

USD = Check("US dollars, >= 0", lambda v: v >= 0)
ALL_ROUTES = "*"  # the scope of a caller's limits that count every route


@dataclass(frozen=True)
class Limits:
    """One set of limits; a limit left out (None) does not apply. 0 refuses every call it counts."""

    requests_per_minute: int | None = setting(None, COUNT)
    tokens_per_minute: int | None = setting(None, COUNT)  # input + output, reserved at admission, settled after
    concurrent_streams: int | None = setting(None, COUNT)
    usd_per_day: float | None = setting(None, USD)  # UTC days
    usd_per_month: float | None = setting(None, USD)  # UTC calendar months

    @property
    def any(self) -> bool:
        """Whether any limit is set."""
        return any(getattr(self, f.name) is not None for f in fields(self))

    @property
    def spends(self) -> bool:
        """Whether a budget in US dollars is set (only then is a call's cost estimated at admission)."""
        return self.usd_per_day is not None or self.usd_per_month is not None


LIMIT_NAMES = tuple(f.name for f in fields(Limits))


@dataclass(frozen=True)
class QuotaRules:
    """One caller's limits: over all its routes, and for single routes (each counted on its own)."""

    limits: Limits = field(default_factory=Limits)
    routes: Mapping[str, Limits] = field(default_factory=dict)

    def scopes(self, route: str) -> tuple[tuple[str, Limits], ...]:
        """The counted scopes a call on route falls in, each with its limits."""
        found = [(ALL_ROUTES, self.limits)] if self.limits.any else []
        own = self.routes.get(route)
        if own is not None and own.any:
            found.append((route, own))
        return tuple(found)


REDIS_URL = Check(
    "a redis://, rediss://, unix:// or redis+sentinel://host:port[,host:port...]/master URL, "
    'or "" to keep the counters in process memory',
    lambda v: v == "" or v.startswith(("redis://", "rediss://", "unix://")) or _sentinel_url(v),
)


def _sentinel_url(v: str) -> bool:
    hosts, _, service = v.removeprefix("redis+sentinel://").partition("/")
    return v.startswith("redis+sentinel://") and bool(hosts) and bool(service.split("/")[0])


@dataclass(frozen=True)
class QuotasConfig:
    """The `quotas:` section: the shared counters' backend, the default limits, limits by caller name.

    A caller's limits in the tokens file (re-read when it changes) win over `callers` here."""

    redis_url: str = setting("", REDIS_URL)
    # Redis unreachable: "open" serves and counts in this process (llm_quota_backend_up 0),
    # "closed" refuses calls that have limits with UNAVAILABLE.
    redis_cluster: bool = setting(False, Check("true or false"))  # redis_url is one node of a Redis Cluster
    on_backend_down: str = setting("open", Check('"open" or "closed"', lambda v: v in ("open", "closed")))
    key_prefix: str = setting("llm-quota", Check("a key prefix without spaces", lambda v: bool(v) and " " not in v))
    backend_timeout_s: float = setting(1.0, POSITIVE_SECONDS)  # one Redis command, connecting included
    backend_retry_s: float = setting(1.0, POSITIVE_SECONDS)  # how often an unreachable Redis is tried again
    default: QuotaRules = field(default_factory=QuotaRules)  # callers with no limits of their own
    callers: Mapping[str, QuotaRules] = field(default_factory=dict)
