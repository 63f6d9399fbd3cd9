"""What a caller reads in a failure's message: the provider's own words (bounded, secrets
masked) or the service's, never a traceback, a file path or a library's class name."""

from __future__ import annotations

import re

import pytest

from fake_upstream import FakeUpstream, Script
from llm_client import LLMClient, LLMServiceError
from llm_service.core.classify import UPSTREAM_MESSAGE_MAX_CHARS, caller_words, redact
from tests.support.messages import user_msg

LEAKS = re.compile(
    r"Traceback|File \"|\.py\b|site-packages|<[\w.]*(Error|Exception)|\b[A-Z]\w*(Error|Exception)\b|litellm\.|aiohttp",
)

# Shapes the upstreams and LiteLLM produce (from the fake upstream, LiteLLM 1.106 and issue reports).
SHAPES = {
    "traceback in LiteLLM's words": (
        "Invalid response object Traceback (most recent call last):\n  File "
        '"/usr/lib/python3.11/site-packages/litellm/litellm_core_utils/llm_response_utils/convert_dict_to_response.py",'
        " line 691, in convert_to_model_response_object\n    raise Exception(\n"
        "Exception: Invalid response object",
        "Invalid response object",
    ),
    "aiohttp class repr": (
        "Response payload is not completed: "
        "<TransferEncodingError: 400, message='Not enough data to satisfy transfer length header.'>",
        "Response payload is not completed: 400, message='Not enough data to satisfy transfer length header.'",
    ),
    "LiteLLM's mapped class names": ("InternalServerError: AnthropicError - Overloaded", "Overloaded"),
    "qualified class name": ("aiohttp.client_exceptions.ServerDisconnectedError: Server disconnected", "Server disconnected"),
    "the provider's own words": (
        "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
        "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
    ),
    "a path in an error": ("cannot open /srv/app/llm_service/core/provider.py:123 now", "cannot open now"),
    "nothing left": ('Traceback (most recent call last):\n  File "x.py", line 1', "no details given"),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_caller_words_strips_what_callers_must_not_see_and_keeps_the_providers_words(shape: str) -> None:
    raw, expected = SHAPES[shape]
    assert caller_words(raw) == expected
    assert not LEAKS.search(caller_words(raw))


def test_redact_bounds_and_masks_after_stripping() -> None:
    long = "x" * (UPSTREAM_MESSAGE_MAX_CHARS * 3) + " key-1234567890"
    out = redact(long, ("key-1234567890",))
    assert len(out) <= UPSTREAM_MESSAGE_MAX_CHARS + 1 and "key-1234567890" not in out


FAILURES = [
    Script(status=400, error={"message": "Invalid value for 'tool_choice'"}),
    Script(status=500, error={"message": "upstream boom"}),
    Script(status=502, body_raw="<html><body>502 Bad Gateway</body></html>"),
    Script(body_raw="this is not JSON at all"),
    Script(text="partial answer then gone", disconnect_after_chunks=2),
    Script(status=422, error={"message": "unprocessable"}),
]


@pytest.mark.parametrize("route", ["openai", "anthropic"])
@pytest.mark.parametrize("rpc", ["complete", "stream"])
def test_no_failure_message_carries_a_traceback_path_or_class_name(
    client: LLMClient, fake: FakeUpstream, route: str, rpc: str
) -> None:
    seen = []
    for script in FAILURES:
        fake.reset()
        fake.script(Script(**{**script.__dict__, "times": 5}))
        try:
            if rpc == "complete":
                client.complete(route, [user_msg()], max_retries=0, timeout=30)
            else:
                list(client.stream(route, [user_msg()], max_retries=0, timeout=30))
            continue
        except LLMServiceError as err:
            seen.append(err.message)
            assert not LEAKS.search(err.message), err.message
    assert len(seen) >= 5
