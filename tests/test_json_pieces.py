"""A large request's upstream body, made in bounded pieces off the loop, is byte for byte the body
json.dumps makes (what a small request sends, and what tests/test_direct_vs_litellm.py compares
with LiteLLM's path)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llm_service.core.json_pieces import PIECE_CHARS, dumps_in_pieces

# Characters JSON escapes, and ones it does not (ensure_ascii=False): an escape at every place a slice can cut.
_MIXED = 'ab"\\\n\t\x00\x1f\x7fé漢😀\u2028'
_LONG = _MIXED * (3 * PIECE_CHARS // len(_MIXED) + 7)

BODIES: dict[str, Any] = {
    "empty containers": {"a": {}, "b": [], "c": [[]], "d": [{}], "e": ""},
    "scalars": {"n": [0, -1, 10**40, 2.5, -0.0, 1e300, float("nan"), float("inf"), True, False, None]},
    "tuples as arrays": {"t": (1, ("x", 2.0))},
    "keys json.dumps converts": {1: "a", 2.5: "b", False: "c", None: "d"},
    "a long string": {"messages": [{"role": "user", "content": _LONG}]},
    "a string of exactly one piece, and one char more": [_LONG[:PIECE_CHARS], _LONG[: PIECE_CHARS + 1]],
    "a long key": {_LONG: _LONG},
    "a long string alone": _LONG,
    "many messages": {"messages": [{"role": "user", "content": _MIXED * 50, "n": i} for i in range(2000)]},
    "nested deep": json.loads('{"a":' * 60 + '"x"' + "}" * 60),
}


@pytest.mark.parametrize("name", BODIES)
def test_a_body_in_pieces_is_the_bytes_json_dumps_makes(name: str) -> None:
    body = BODIES[name]
    assert dumps_in_pieces(body) == json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def test_text_json_dumps_cannot_encode_fails_in_pieces_too() -> None:
    body = {"content": "x\ud800" * PIECE_CHARS}  # a lone surrogate has no UTF-8
    with pytest.raises(UnicodeEncodeError):
        json.dumps(body, ensure_ascii=False).encode()
    with pytest.raises(UnicodeEncodeError):
        dumps_in_pieces(body)
