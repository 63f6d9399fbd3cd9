"""Embed's request and answer: inputs in, vectors out, as a NumPy array when NumPy is installed.

NumPy is never required: without it (or with `as_lists=True`) the vectors are lists of floats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from llm_client._proto.llm.v1 import llm_service_pb2 as pb

if TYPE_CHECKING:
    import numpy
    import numpy.typing

    Vectors = list[list[float]] | numpy.typing.NDArray[numpy.float32]
else:
    Vectors = Any

_INPUT_TYPES = {"query": pb.EMBED_INPUT_TYPE_QUERY, "document": pb.EMBED_INPUT_TYPE_DOCUMENT}


class EmbedOptions(TypedDict, total=False):
    """The keyword arguments of `embed()` (each a field of EmbedRequest; unset means the default).

    dimensions: the vectors' length, for models that can shorten them.
    input_type: "query" or "document", for providers that embed them differently (Cohere, Voyage, Gemini).
    max_retries: the server's retries for each upstream request (capped by the server).
    metadata: caller key/values for attribution in the server's logs.
    as_lists: lists of floats even when NumPy is installed.
    timeout: the gRPC deadline in seconds (default 120).
    """

    dimensions: int
    input_type: Literal["query", "document"]
    max_retries: int
    metadata: dict[str, str]
    as_lists: bool
    timeout: float


@dataclass(frozen=True)
class Embeddings:
    """Embed's answer: `vectors[i]` is the vector of the i-th input.

    vectors is a float32 NumPy array of shape (inputs, dimensions) when NumPy is installed,
    else (or with `as_lists=True`) a list of lists of floats."""

    vectors: Vectors
    dimensions: int
    input_tokens: int
    cost_usd: float
    provider_model: str
    route: str
    attempts: int
    deployment: str
    raw: pb.EmbedResponse

    @classmethod
    def from_proto(cls, r: pb.EmbedResponse, as_lists: bool = False) -> Embeddings:
        """Wrap an EmbedResponse, its vectors decoded once."""
        return cls(
            vectors=_vectors(r, as_lists),
            dimensions=r.dimensions,
            input_tokens=r.usage.input_tokens,
            cost_usd=r.cost_usd,
            provider_model=r.provider_model,
            route=r.gateway.route,
            attempts=r.gateway.attempts,
            deployment=r.gateway.deployment,
            raw=r,
        )


def _numpy() -> Any:
    """NumPy, or None when it is not installed (looked up at each call: it is optional)."""
    try:
        import numpy
    except ImportError:
        return None
    return numpy


def _vectors(r: pb.EmbedResponse, as_lists: bool) -> Vectors:
    np = None if as_lists else _numpy()
    if np is None:
        return [list(e.values) for e in r.embeddings]
    array: Vectors = np.array([e.values for e in r.embeddings], dtype=np.float32).reshape(len(r.embeddings), r.dimensions)
    return array


def embed_request(model: str, inputs: Sequence[str | pb.EmbedInput], options: EmbedOptions) -> pb.EmbedRequest:
    """The EmbedRequest for texts (or `pb.EmbedInput`s, for images) and the options."""
    unknown = set(options) - set(EmbedOptions.__annotations__)
    if unknown:
        raise TypeError(f"unexpected option(s) for embed: {', '.join(sorted(unknown))}")
    request = pb.EmbedRequest(
        model=model, inputs=[pb.EmbedInput(text=i) if isinstance(i, str) else i for i in inputs], metadata=options.get("metadata")
    )
    if "dimensions" in options:
        request.dimensions = options["dimensions"]
    if "input_type" in options:
        request.input_type = _INPUT_TYPES[options["input_type"]]
    if "max_retries" in options:
        request.max_retries = options["max_retries"]
    return request
