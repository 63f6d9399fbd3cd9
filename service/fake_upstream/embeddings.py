"""The providers' embedding formats: OpenAI's `/embeddings` and Cohere's `/v2/embed`.

Vectors are derived from the input text alone (SHA-256 bytes, each b as (b - 128) / 128, so
every component is exact in float32): the same text always gets the same vector, on any
path, and a test computes the expected one with `vector_of`. The length is the request's
`dimensions` (`output_dimension` for Cohere), else DEFAULT_DIMENSIONS. Usage is one token
per whitespace-separated word.
"""

from __future__ import annotations

import hashlib
from typing import Any

DEFAULT_DIMENSIONS = 16


def vector_of(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """The fake's vector for a text."""
    out: list[float] = []
    block = hashlib.sha256(text.encode()).digest()
    while len(out) < dimensions:
        out.extend((b - 128) / 128 for b in block)
        block = hashlib.sha256(block).digest()
    return out[:dimensions]


def tokens_of(texts: list[str]) -> int:
    """The tokens the fake bills for texts."""
    return sum(len(t.split()) for t in texts)


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value] if isinstance(value, list) else []


def openai_embeddings(payload: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI embeddings answer for the request's `input`."""
    texts = _texts(payload.get("input"))
    dimensions = int(payload.get("dimensions") or DEFAULT_DIMENSIONS)
    data = [{"object": "embedding", "index": i, "embedding": vector_of(t, dimensions)} for i, t in enumerate(texts)]
    tokens = tokens_of(texts)
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def cohere_embed(payload: dict[str, Any], model: str) -> dict[str, Any]:
    """A Cohere v2 embed answer for the request's `texts` (or `images`)."""
    texts = _texts(payload.get("texts")) or _texts(payload.get("images"))
    dimensions = int(payload.get("output_dimension") or DEFAULT_DIMENSIONS)
    return {
        "id": "embed-fake",
        "embeddings": {"float": [vector_of(t, dimensions) for t in texts]},
        "texts": texts,
        "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": tokens_of(texts)}},
    }
