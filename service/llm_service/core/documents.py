"""Documents (PDFs) in a conversation: refused before sending where the route's model reads none.

A caller's document arrives as LiteLLM's file content part (`{"type": "file", "file": {...}}`),
which LiteLLM maps per provider: Anthropic document blocks, OpenAI file parts, Gemini inline
data. Whether a model reads documents is LiteLLM's model map (`supports_pdf_input`) unless the
route says (`documents: true|false`). A document given by URL goes only to Anthropic, which
fetches it itself; elsewhere LiteLLM would fetch it, and the server fetches no caller URLs.
"""

from __future__ import annotations

import functools
from typing import Any

import litellm
from litellm.utils import supports_pdf_input

from llm_service.core.errors import InvalidRequest
from llm_service.core.settings import Route

URL_FETCHING_PROVIDERS = frozenset({"anthropic"})


def refuse_what_the_route_cannot_read(route: Route, model: str, messages: list[dict[str, Any]]) -> None:
    """Raise InvalidRequest naming the first document the route cannot take (model as LiteLLM is given it)."""
    for i, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            if part.get("type") != "file":
                continue
            field = f"messages[{i}].parts[{j}].document"
            provider, reads = _reads(model)
            if not (reads if route.documents is None else route.documents):
                raise InvalidRequest(field, f"route '{route.name}' has a model that reads no documents ({route.model})")
            if "file_id" in part["file"] and provider not in URL_FETCHING_PROVIDERS:
                raise InvalidRequest(
                    f"{field}.url",
                    "this route's provider does not fetch document URLs itself, and the server does not fetch "
                    "caller URLs: send the document as data",
                )


@functools.lru_cache(maxsize=1024)
def _reads(model: str) -> tuple[str, bool]:
    """LiteLLM's provider for model, and whether its model map says the model reads PDFs."""
    try:
        bare, provider, _, _ = litellm.get_llm_provider(model)
        return str(provider), bool(supports_pdf_input(model=bare, custom_llm_provider=provider))
    except Exception:
        return "", False
