"""What the engine reports as calls go: one interface, implemented by the metrics (and by
whatever else watches calls, such as tracing)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from llm_service.core.resilience import BreakerState
from llm_service.core.retry import RetryReason
from llm_service.core.settings import Route
from llm_service.core.types import Usage

if TYPE_CHECKING:
    from llm_service.core.assembly import StreamAssembler
    from llm_service.core.embedding import EmbedAnswer
    from llm_service.core.plan import Plan
    from llm_service.core.request import UpstreamRequest


class AttemptedPlan(Protocol):
    """What is read of an attempt's plan around it (a chat Plan or an EmbedPlan)."""

    @property
    def route(self) -> Route: ...  # the route as the attempt's deployment sees it

    @property
    def request(self) -> UpstreamRequest: ...  # what a failed-request dump shows


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


class AttemptObserver(Protocol):
    """What tracing watches: each upstream attempt from start to end, and what happens between them.
    An observer may have none of these hooks, or some (the engine calls them through `Observers`)."""

    def attempt_started(self, plan: AttemptedPlan, attempt: int) -> None:
        """An upstream attempt (the call's attempt-th) was admitted and is about to be sent."""
        ...

    def attempt_answered(self, plan: Plan, asm: StreamAssembler) -> None:
        """The attempt got its whole answer: usage, model and finish reason are in asm."""
        ...

    def embed_answered(self, plan: AttemptedPlan, answer: EmbedAnswer) -> None:
        """An embedding attempt got its answer: its vectors, model and billed input tokens."""
        ...

    def attempt_ended(self, plan: AttemptedPlan, failure: BaseException | None, first_chunk_s: float | None) -> None:
        """However the attempt ended: failure is what it raised (an LLMError, or the caller's
        cancellation); first_chunk_s when a streamed attempt received a first chunk."""
        ...

    def waiting(self, route: Route, reason: RetryReason, delay_s: float) -> None:
        """The engine waits delay_s before its next attempt, for reason."""
        ...

    def breaker_refused(self, route: Route, retry_after_s: float | None) -> None:
        """An attempt was refused by the route's (or deployment's) open circuit breaker."""
        ...


class Watcher(Observer, AttemptObserver, Protocol):
    """Every hook the engine calls."""


class Observers:
    """Several observers as one: each hook runs on every observer that has it, in order.

    An observer may leave out hooks it does not care about. A hook only one observer has is
    that observer's own bound method, so with one observer nothing is added to a call."""

    def __init__(self, *observers: object) -> None:
        self._observers = observers

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("_"):  # not a hook (copy and pickle probe for these)
            raise AttributeError(name)
        hooks = [hook for o in self._observers if (hook := getattr(o, name, None)) is not None]
        if not hooks:
            fanned: Callable[..., None] = _nothing
        elif len(hooks) == 1:
            fanned = hooks[0]
        else:

            def fanned(*args: Any) -> None:
                for hook in hooks:
                    hook(*args)

        setattr(self, name, fanned)  # looked up once per hook, not once per call
        return fanned


def _nothing(*args: Any) -> None:
    return None
