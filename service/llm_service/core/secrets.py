"""Every secret the server sends upstream, so that no caller or log line ever shows one.

A route's key and the values of its configured headers (an upstream's own auth header, say)
are remembered when a request is built; `redact` replaces each with *** wherever the
upstream's words or a log line carry it back. Values shorter than MIN_CHARS are not treated
as secrets: masking "true" or "2023-06-01"-like fragments of prose would only garble messages,
and no credential is that short.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

MIN_CHARS = 8

_known: dict[str, tuple[str, ...]] = {}  # secret -> the forms it can take in text (as is, JSON-escaped)


def _forms(secret: str) -> tuple[str, ...]:
    escaped = json.dumps(secret)[1:-1]
    return (secret,) if escaped == secret else (secret, escaped)


def remember(values: Iterable[str]) -> tuple[str, ...]:
    """Remember these values as secrets; return the ones that count as such."""
    found = tuple(v for v in values if len(v) >= MIN_CHARS)
    for secret in found:
        if secret not in _known:
            _known[secret] = _forms(secret)
    return found


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """text with each secret (the given ones, else every remembered one), also JSON-escaped, as ***."""
    forms = list(_known.values()) if secrets is None else [_known.get(s) or _forms(s) for s in secrets if s]
    for variants in forms:
        for form in variants:
            if form in text:
                text = text.replace(form, "***")
    return text
