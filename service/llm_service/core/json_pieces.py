"""JSON text of a large request body made in bounded pieces, byte for byte what json.dumps makes.

json.dumps is one C call: it holds the GIL until the whole text is made (80 ms for a 15 MiB
message), so even in a worker thread it keeps the event loop from running. Here the value is
walked in Python, strings longer than PIECE_CHARS are escaped a slice at a time (JSON escapes
each character on its own, so the slices' escapes joined are the whole string's), and each
piece is a short C call between which the loop can take the GIL. Only the final join of the
encoded pieces is one copy of the whole body (a few ms for 15 MiB).
"""

from __future__ import annotations

import json
from typing import Any

PIECE_CHARS = 64 * 1024  # escaping this many characters takes well under a millisecond

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # what json.dumps(...) calls


def dumps_in_pieces(value: Any) -> bytes:
    """json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode(), in bounded steps."""
    pieces: list[bytes] = []
    _add(value, pieces)
    return b"".join(pieces)


def _add(value: Any, out: list[bytes]) -> None:
    if isinstance(value, str):
        if len(value) <= PIECE_CHARS:
            out.append(_dumps(value).encode())
            return
        out.append(b'"')
        for start in range(0, len(value), PIECE_CHARS):
            out.append(_dumps(value[start : start + PIECE_CHARS])[1:-1].encode())
        out.append(b'"')
    elif isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
        first = True
        for key, item in value.items():
            out.append(b"{" if first else b",")
            first = False
            out.append(_dumps(key).encode() + b":")
            _add(item, out)
        out.append(b"}")
    elif isinstance(value, (list, tuple)) and value:
        first = True
        for item in value:
            out.append(b"[" if first else b",")
            first = False
            _add(item, out)
        out.append(b"]")
    else:  # numbers, booleans, null, empty containers, and keys json.dumps converts (ints, floats)
        out.append(_dumps(value).encode())
