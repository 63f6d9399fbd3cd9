"""How EmbedResponse carries vectors: `repeated float` (packed) against little-endian float32 bytes.

Both forms put 4 bytes per component on the wire; what differs is the work at each end.
This prints, for a few batch shapes, the encoded size of each form and the time to build
and serialize a response from the provider's floats (the server's side), and to parse it
back into Python lists and into a NumPy array (the caller's side). The `bytes` form is
measured with `google.protobuf.BytesValue`, the same wire shape as a `bytes` field.

    python -m bench.embed_encoding
"""

from __future__ import annotations

import array
import random
import time
from collections.abc import Callable
from typing import Any

from google.protobuf.wrappers_pb2 import BytesValue

from llm_client._proto.llm.v1 import llm_service_pb2 as pb

SHAPES = ((16, 1536), (256, 1536), (2048, 256))  # (vectors, dimensions)


def _best_ms(fn: Callable[[], object], repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def _packed(vectors: list[list[float]], np: Any) -> tuple[int, float, float, float | None]:
    """repeated float: bytes on the wire, ms to encode, to decode into lists, into NumPy."""

    def encode() -> bytes:
        return pb.EmbedResponse(embeddings=[pb.Embedding(values=v) for v in vectors]).SerializeToString()

    wire = encode()
    lists_ms = _best_ms(lambda: [list(e.values) for e in pb.EmbedResponse.FromString(wire).embeddings])
    numpy_ms = None
    if np is not None:
        numpy_ms = _best_ms(lambda: np.array([e.values for e in pb.EmbedResponse.FromString(wire).embeddings], dtype=np.float32))
    return len(wire), _best_ms(encode), lists_ms, numpy_ms


def _raw(vectors: list[list[float]], np: Any) -> tuple[int, float, float, float | None]:
    """float32 bytes, one message per vector: bytes on the wire, ms to encode, to decode into lists, into NumPy."""

    def encode() -> list[bytes]:
        return [BytesValue(value=array.array("f", v).tobytes()).SerializeToString() for v in vectors]

    wire = encode()
    lists_ms = _best_ms(lambda: [array.array("f", BytesValue.FromString(m).value).tolist() for m in wire])
    numpy_ms = None
    if np is not None:
        numpy_ms = _best_ms(
            lambda: np.frombuffer(b"".join(BytesValue.FromString(m).value for m in wire), dtype="<f4").reshape(len(vectors), -1)
        )
    return sum(len(m) for m in wire), _best_ms(encode), lists_ms, numpy_ms


def main() -> None:
    """Print the table."""
    try:
        import numpy as np
    except ImportError:  # the NumPy column is left out without it
        np = None
    rng = random.Random(7)
    print(f"{'vectors x dims':>15} {'form':>14} {'bytes':>10} {'encode ms':>10} {'to lists ms':>12} {'to numpy ms':>12}")
    for count, dims in SHAPES:
        vectors = [[rng.uniform(-1, 1) for _ in range(dims)] for _ in range(count)]
        for form, measure in (("repeated float", _packed), ("float32 bytes", _raw)):
            size, encode_ms, lists_ms, numpy_ms = measure(vectors, np)
            numpy_cell = f"{numpy_ms:12.2f}" if numpy_ms is not None else f"{'-':>12}"
            print(f"{count:>6} x {dims:<6} {form:>14} {size:>10} {encode_ms:10.2f} {lists_ms:12.2f} {numpy_cell}")


if __name__ == "__main__":
    main()
