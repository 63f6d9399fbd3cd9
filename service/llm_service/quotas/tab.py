"""One call's account with the quotas, in a context variable from admission to the end of the RPC.

The metrics' `used` hook (every billed upstream attempt: answered, failed and cancelled ones,
fallback routes included) adds to the call's own tab through `TAB`, so the provider core
knows nothing about callers; the gate settles the tab's reservation with it.
"""

from __future__ import annotations

import contextvars

from llm_service.core.types import Usage
from llm_service.quotas.counters import Admission, Ask, Counters


class Tab:
    """One call's account: who it is billed to, what it reserved, what the upstream billed so far."""

    __slots__ = ("admission", "ask", "counters", "label", "tokens", "usd")

    def __init__(self, label: str, ask: Ask | None) -> None:
        self.label = label  # the metric label: a configured caller's name, or a placeholder
        self.ask = ask  # None: no limit applies to this call
        self.admission: Admission | None = None
        self.counters: Counters | None = None
        self.tokens = 0
        self.usd = 0.0

    def billed(self, usage: Usage, cost: float) -> None:
        """One upstream attempt the provider billed."""
        self.tokens += usage.input_tokens + usage.output_tokens
        self.usd += cost


TAB: contextvars.ContextVar[Tab | None] = contextvars.ContextVar("llm_service_tab", default=None)
