"""Reasoning controls: what a call asks of a reasoning model, checked against the route's model and
turned into LiteLLM's own parameters, `reasoning_effort` and `thinking`.

LiteLLM maps those per provider (OpenAI's reasoning_effort as is, Anthropic's thinking budget or
adaptive thinking, Gemini's thinkingConfig), and the direct transport builds its body with the
same provider configuration, so one mapping serves both transports. What LiteLLM would drop
silently (the service runs with drop_params on) is refused here instead, naming the field: a
reasoning parameter never reaches a model that would refuse it.

Whether a model reasons is LiteLLM's model map (`supports_reasoning`) unless the route declares
it (`reasoning.supported`). A declared model the map does not know is registered in it as a
reasoning model of its provider (`litellm.register_model`, with no price, once per model), so that
LiteLLM maps its parameters exactly as for a reasoning model it knows.
"""

from __future__ import annotations

import functools
from typing import Any

import litellm
from litellm.utils import supports_factory

from llm_service.core.errors import InvalidRequest
from llm_service.core.settings import Route
from llm_service.core.types import CallRequest, ReasoningAsk

REASONING_PARAMS = frozenset({"reasoning_effort", "thinking"})
ANTHROPIC_MIN_BUDGET_TOKENS = 1024  # Anthropic refuses a smaller thinking budget
ANTHROPIC_MIN_TOP_P = 0.95  # and, with thinking on, a smaller top_p
# Providers whose models think only when asked: "none" there means sending no reasoning parameter.
OFF_UNLESS_ASKED = frozenset({"anthropic"})


def asked(route: Route, call: ReasoningAsk) -> ReasoningAsk:
    """The reasoning a call gets: its own when it asks anything, else the route's defaults."""
    if call.effort or call.budget_tokens is not None:
        return call
    return ReasoningAsk(route.reasoning.effort, route.reasoning.budget_tokens)


def reasoning_kwargs(route: Route, request: CallRequest, model: str, max_tokens: int) -> dict[str, Any]:
    """LiteLLM's keyword arguments for the reasoning asked on route (model as LiteLLM is given it);
    {} when none is asked. Raises InvalidRequest naming the field the model cannot do."""
    call = request.reasoning
    ask = asked(route, call)
    if not ask.effort and ask.budget_tokens is None:
        return {}
    own = "" if ask is call else " (the route's default)"
    provider, bare = _provider(model)
    known = _reasons(bare, provider)
    declared = route.reasoning.supported
    if declared is False or (declared is None and not known):
        raise InvalidRequest(
            "reasoning", f"route '{route.name}' has a model that does not reason ({route.model}){own}: leave reasoning unset"
        )
    if not known:
        _declare(bare, provider)
    params = _params(bare, provider)
    kwargs: dict[str, Any] = {}
    if ask.effort in ("none", "minimal"):
        kwargs = _low_end(route, ask, bare, provider, own)
    elif ask.budget_tokens is not None:
        if "thinking" not in params:
            raise InvalidRequest(
                "reasoning.budget_tokens",
                f"route '{route.name}' ({route.model}) takes no thinking budget{own}: set reasoning.effort instead",
            )
        _check_budget(ask.budget_tokens, provider, max_tokens, own)
        kwargs["thinking"] = {"type": "enabled", "budget_tokens": ask.budget_tokens}
    elif "reasoning_effort" in params:
        budget = _effort_budget(ask.effort, bare, provider)
        if budget is not None and budget >= max_tokens:
            raise InvalidRequest(
                "reasoning.effort",
                f"{ask.effort} thinks with up to {budget} tokens on this route, which needs max_tokens above that "
                f"(it is {max_tokens}){own}: raise max_tokens or set reasoning.budget_tokens",
            )
        kwargs["reasoning_effort"] = ask.effort
    else:
        raise InvalidRequest(
            "reasoning.effort", f"route '{route.name}' ({route.model}) takes no reasoning effort{own}: set budget_tokens instead"
        )
    if kwargs and provider == "anthropic":
        _refuse_what_thinking_forbids(request)
    return kwargs


def _refuse_what_thinking_forbids(request: CallRequest) -> None:
    """Anthropic refuses thinking beside a temperature other than 1, a top_p under 0.95 and a
    tool_choice that forces a tool call."""
    if request.temperature is not None and request.temperature != 1:
        raise InvalidRequest("temperature", "must be unset or 1 with reasoning on this route's provider")
    if request.top_p is not None and request.top_p < ANTHROPIC_MIN_TOP_P:
        raise InvalidRequest("top_p", f"must be unset or at least {ANTHROPIC_MIN_TOP_P} with reasoning on this route's provider")
    if request.tool_choice is not None and request.tool_choice not in ("auto", "none"):
        raise InvalidRequest("tool_choice", "must be unset, auto or none with reasoning on this route's provider")


def _low_end(route: Route, ask: ReasoningAsk, bare: str, provider: str, own: str) -> dict[str, Any]:
    """ "none" and "minimal": only where the model map has the level; "none" on a provider whose
    models think only when asked is no parameter at all."""
    if ask.budget_tokens is not None:
        raise InvalidRequest("reasoning.budget_tokens", f"a thinking budget needs an effort other than {ask.effort}{own}")
    if supports_factory(model=bare, custom_llm_provider=provider, key=f"supports_{ask.effort}_reasoning_effort"):
        return {"reasoning_effort": ask.effort}
    if ask.effort == "none" and provider in OFF_UNLESS_ASKED:
        return {}
    raise InvalidRequest(
        "reasoning.effort",
        f"route '{route.name}' ({route.model}) has no REASONING_EFFORT_{ask.effort.upper()}{own}: use low, medium or high",
    )


def _effort_budget(effort: str, bare: str, provider: str) -> int | None:
    """The thinking budget LiteLLM maps an effort to for an Anthropic model (None elsewhere, and for
    adaptive thinking, which has no budget)."""
    if provider != "anthropic":
        return None
    mapped = litellm.AnthropicConfig.map_reasoning_effort(effort, bare, provider)
    budget = mapped.get("budget_tokens") if mapped else None
    return budget if isinstance(budget, int) else None


def _check_budget(budget: int, provider: str, max_tokens: int, own: str) -> None:
    if budget <= 0:
        raise InvalidRequest("reasoning.budget_tokens", f"must be positive{own}")
    if provider == "anthropic":
        if budget < ANTHROPIC_MIN_BUDGET_TOKENS:
            raise InvalidRequest("reasoning.budget_tokens", f"at least {ANTHROPIC_MIN_BUDGET_TOKENS} for this provider{own}")
        if budget >= max_tokens:
            raise InvalidRequest("reasoning.budget_tokens", f"must be less than max_tokens ({max_tokens}){own}")


@functools.lru_cache(maxsize=1024)
def _provider(model: str) -> tuple[str, str]:
    """LiteLLM's provider and bare model name for a model string ("" and the string when unknown)."""
    try:
        bare, provider, _, _ = litellm.get_llm_provider(model)
    except Exception:
        return "", model
    return str(provider), str(bare)


@functools.lru_cache(maxsize=1024)
def _reasons(bare: str, provider: str) -> bool:
    try:
        return bool(litellm.supports_reasoning(model=bare, custom_llm_provider=provider or None))
    except Exception:
        return False


@functools.lru_cache(maxsize=1024)
def _params(bare: str, provider: str) -> frozenset[str]:
    """The reasoning parameters LiteLLM maps for this model."""
    try:
        supported = litellm.get_supported_openai_params(model=bare, custom_llm_provider=provider or None) or ()
    except Exception:
        supported = ()
    return frozenset(supported) & REASONING_PARAMS


@functools.lru_cache(maxsize=256)
def _declare(bare: str, provider: str) -> None:
    """Tell LiteLLM's model map that a model a route declares reasoning is a reasoning model."""
    litellm.register_model({f"{provider}/{bare}": {"litellm_provider": provider, "mode": "chat", "supports_reasoning": True}})
    _reasons.cache_clear()
    _params.cache_clear()
