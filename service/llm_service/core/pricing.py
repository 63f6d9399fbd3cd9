"""What an answer cost (PC21, PC34): the provider's own figure, else LiteLLM's (local, static)
price map, else the price the route configures."""

from __future__ import annotations

import litellm

from llm_service.core.settings import Price
from llm_service.core.types import Usage

_UNPRICED: set[str] = set()  # models the price map does not know
TOKENS_PER_MTOK = 1_000_000


def cost_usd(model: str, usage: Usage, price: Price | None = None) -> float:
    """The cost of usage on model in US dollars, the first of these above 0: what the provider
    said (OpenRouter's usage.cost), LiteLLM's price, the route's price; 0.0 when none knows."""
    if usage.provider_cost_usd > 0:
        return usage.provider_cost_usd
    return litellm_cost_usd(model, usage) or (route_cost_usd(price, usage) if price is not None else 0.0)


def litellm_cost_usd(model: str, usage: Usage) -> float:
    """The cost as LiteLLM's price map prices the model; 0.0 when the model has no price."""
    if usage.is_empty() or model in _UNPRICED:
        return 0.0
    try:
        prompt, completion = litellm.cost_per_token(
            model=model,
            prompt_tokens=usage.input_tokens,
            completion_tokens=usage.output_tokens,
            cache_read_input_tokens=usage.cached_input_tokens,
            cache_creation_input_tokens=usage.cache_creation_tokens,
        )
        return float(prompt) + float(completion)
    except (litellm.exceptions.ModelNotMappedError, litellm.exceptions.BadRequestError):
        _UNPRICED.add(model)  # asking again would only raise again, at ~0.2 ms a time
        return 0.0
    except Exception:
        return 0.0


def route_cost_usd(price: Price, usage: Usage) -> float:
    """The cost at the route's price: cached and cache-created tokens are part of the input tokens,
    each at its own rate (the input rate when the route sets none)."""
    read_rate = price.input if price.cache_read is None else price.cache_read
    creation_rate = price.input if price.cache_creation is None else price.cache_creation
    plain = max(usage.input_tokens - usage.cached_input_tokens - usage.cache_creation_tokens, 0)
    total = (
        plain * price.input
        + usage.cached_input_tokens * read_rate
        + usage.cache_creation_tokens * creation_rate
        + usage.output_tokens * price.output
    )
    return total / TOKENS_PER_MTOK
