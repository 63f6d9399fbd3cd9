"""What the engine reports as calls go: one interface, implemented by the metrics (and by
whatever else watches calls, such as tracing)."""

from __future__ import annotations

from typing import Protocol

from llm_service.core.resilience import BreakerState
from llm_service.core.retry import RetryReason
from llm_service.core.settings import Route
from llm_service.core.types import Usage


class Observer(Protocol):
    """What the engine reports as calls go (the metrics implement it)."""

    def retried(self, route: Route, reason: RetryReason) -> None: ...

    def used(self, route: Route, usage: Usage, cost_usd: float) -> None:
        """An upstream attempt was billed (every answered one, and a cancelled one the upstream priced)."""
        ...

    def fell_back(self, route: Route, to: Route) -> None: ...

    def breaker_changed(self, route: Route, state: BreakerState) -> None: ...

    def deployment_changed(self, route: Route, deployment: str, up: bool, reason: str) -> None:
        """A deployment of a route went out of use (reason: rate_limit, key_refused) or back (reason "")."""
        ...

    def deployment_attempted(self, route: Route, deployment: str, upstream_s: float) -> None:
        """One upstream attempt on a deployment of a route with several, and how long it waited on it."""
        ...
