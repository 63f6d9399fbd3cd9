"""What an answer cost, as LiteLLM's (local, static) price map prices the model (PC21)."""

from __future__ import annotations

import litellm

from llm_service.core.types import Usage

_UNPRICED: set[str] = set()  # models the price map does not know


def cost_usd(model: str, usage: Usage) -> float:
    """The cost of usage on model in US dollars; 0.0 when the model has no price."""
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
