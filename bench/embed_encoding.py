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
import sys
import time
from collections.abc import Callable

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


def main() -> None:
    """Print the table."""
    try:
        import numpy as np
    except ImportError:  # the NumPy column is left out without it
        np = None  # type: ignore[assignment]
    rng = random.Random(7)
    print(f"{'vectors x dims':>15} {'form':>14} {'bytes':>10} {'encode ms':>10} {'to lists ms':>12} {'to numpy ms':>12}")
    for count, dims in SHAPES:
        vectors = [[rng.uniform(-1, 1) for _ in range(dims)] for _ in range(count)]

        def packed() -> bytes:
            return pb.EmbedResponse(embeddings=[pb.Embedding(values=v) for v in vectors]).SerializeToString()

        def raw() -> bytes:
            return b"".join(BytesValue(value=array.array("f", v).tobytes()).SerializeToString() for v in vectors)

        packed_wire, raw_wire = packed(), raw()
        raw_messages = [array.array("f", v).tobytes() for v in vectors]

        def packed_lists() -> object:
            return [list(e.values) for e in pb.EmbedResponse.FromString(packed_wire).embeddings]

        def packed_numpy() -> object:
            r = pb.EmbedResponse.FromString(packed_wire)
            return np.array([e.values for e in r.embeddings], dtype=np.float32)

        def raw_lists() -> object:
            return [array.array("f", BytesValue.FromString(BytesValue(value=m).SerializeToString()).value).tolist() for m in raw_messages]

        def raw_numpy() -> object:
            return np.frombuffer(b"".join(raw_messages), dtype="<f4").reshape(count, dims)

        rows = (
            ("repeated float", len(packed_wire), packed, packed_lists, packed_numpy),
            ("float32 bytes", len(raw_wire), raw, raw_lists, raw_numpy),
        )
        for form, size, encode, to_lists, to_numpy in rows:
            numpy_ms = f"{_best_ms(to_numpy):12.2f}" if np is not None else f"{'-':>12}"
            print(f"{count:>6} x {dims:<6} {form:>14} {size:>10} {_best_ms(encode):10.2f} {_best_ms(to_lists):12.2f} {numpy_ms}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
