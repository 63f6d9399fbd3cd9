"""The one place provider exceptions become the service's exception family.

Most specific first: a context-window error is also a bad request. LiteLLM's
OpenAI handler reports 5xx, 402, 403 and 404 as BadRequestError with the real
status_code, so the status code decides before the class does. Messages shown
to callers are built here from the upstream's words with every configured key
removed, and cut short.
"""

from __future__ import annotations

import ast
import asyncio
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import aiohttp
import httpx
from litellm import exceptions as lx
from litellm.litellm_core_utils.exception_mapping_utils import ExceptionCheckers

from llm_service.core import errors
from llm_service.core import secrets as configured_secrets
from llm_service.core.request import UpstreamRequest
from llm_service.core.tool_compat import rejects_native_tools

log = logging.getLogger(__name__)

UPSTREAM_MESSAGE_MAX_CHARS = 300
_TRANSIENT_STATUSES = frozenset({500, 502, 503, 504, 520, 522, 524, 529})
_BYTES_REPR = re.compile(r"(b'.*'|b\".*\")$", re.DOTALL)
_BAD_RESPONSE_MARKERS = (
    "expecting value",
    "unable to get json response",
    "expecting property name",
    "invalid json",
    "failed to decode json",
    "empty or invalid response from llm endpoint",
)


def response_headers(exc: BaseException) -> Mapping[str, str]:
    """The upstream's HTTP response headers carried by a LiteLLM exception, if any."""
    headers = getattr(exc, "litellm_response_headers", None)
    if headers:
        return {str(k).lower(): str(v) for k, v in headers.items()}
    response = getattr(exc, "response", None)
    raw = getattr(response, "headers", None)
    if raw:
        return {str(k).lower(): str(v) for k, v in raw.items()}
    return {}


_TRACEBACK = re.compile(r"\s*Traceback \(most recent call last\):.*", re.DOTALL)
_FRAME = re.compile(r'\s*File "[^"]*", line \d+(?:, in \S+)?')
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][\w.@+-]+){2,}\.pyc?\b(?::\d+)?")
# A library's exception class as Python prints it: `<TransferEncodingError: 400, message='…'>`,
# `litellm.BadRequestError: `, `InternalServerError: AnthropicError - `, `aiohttp.client_exceptions.X`.
_CLASS_REPR = re.compile(r"<(?:[\w.]+\.)?[A-Z]\w*(?:Error|Exception|Warning)\b:?\s*(?P<inner>[^<>]*)>")
_CLASS_PREFIX = re.compile(r"`?\b(?:[a-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Warning)\b`?(?:\s*[:-]\s*)?")


def caller_words(text: str) -> str:
    """An upstream failure's words as a caller may see them: no traceback, no file path, no
    library class name; the provider's own message kept. Bounding and secret masking follow."""
    text = _TRACEBACK.sub("", text)
    text = _FRAME.sub("", text)
    text = _PATH.sub("", text)
    text = _CLASS_REPR.sub(lambda m: m["inner"].strip(), text)
    text = _CLASS_PREFIX.sub("", text)
    return " ".join(text.split()).strip(" :-") or "no details given"


def redact(text: str, secrets: Iterable[str]) -> str:
    """text as a caller may see it: caller_words, every secret replaced by ***, cut to UPSTREAM_MESSAGE_MAX_CHARS."""
    text = configured_secrets.redact(caller_words(text), secrets)
    if len(text) > UPSTREAM_MESSAGE_MAX_CHARS:
        text = text[:UPSTREAM_MESSAGE_MAX_CHARS] + "…"
    return text


# LiteLLM's own words around the provider's: a leading `litellm.InternalServerError: ` (one or
# more) and a trailing ``Handle with `litellm.InternalServerError`.``
_LITELLM_CLASS = re.compile(r"^(?:\s*litellm\.\w+:\s*)+")
_LITELLM_HINT = re.compile(r"\.?\s*Handle with `litellm\.\w+`\.?\s*$")


def _upstream_words(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    text = _LITELLM_HINT.sub("", str(getattr(exc, "message", "") or exc))
    text = _LITELLM_CLASS.sub("", text)
    for prefix in ("OpenAIException - ", "AnthropicException - "):
        if prefix in text:
            text = text.rsplit(prefix, 1)[-1]
    text = _BYTES_REPR.sub(_bytes_text, text)
    start = text.find("{")  # LiteLLM's HTTP handlers pass the error body on as text after their prefix
    return error_message(text[start:]) if start >= 0 and text.rstrip().endswith("}") else text


def _bytes_text(match: re.Match[str]) -> str:
    """LiteLLM's Anthropic stream handler reports the error body as the repr of its bytes: show the text."""
    try:
        return str(ast.literal_eval(match[1]).decode("utf-8", "replace"))
    except (ValueError, SyntaxError, AttributeError):
        return match[1]


def _answered_status(exc: BaseException) -> int:
    """The HTTP status of an answer whose body could not be decoded.

    LiteLLM reports such failures as status 500 of its own making. The real status is
    on an exception further down the chain when the provider's handler kept it
    (Anthropic's does); otherwise it was a success status: the provider SDKs only decode
    a body as JSON when the status is 2xx, and report any other status as itself.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        real = getattr(getattr(current, "response", None), "status_code", None)
        if isinstance(real, int) and real < 400:
            return real
        current = current.__cause__ or current.__context__
    return 200


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions behind exc, as Python shows the chain (`raise ... from None` hides the one being handled)."""
    seen = {id(exc)}
    current = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)


def _http_status(exc: BaseException) -> int | None:
    """The error status the upstream answered, from the deepest cause that has one (the outer
    exception's status is LiteLLM's mapping; its causes' are the answer's)."""
    found: int | None = None
    for cause in _causes(exc):
        for status in (getattr(getattr(cause, "response", None), "status_code", None), getattr(cause, "status_code", None)):
            if isinstance(status, int) and status >= 400:
                found = status
    return found


def _in_band_status(exc: BaseException) -> int | None:
    """For an error the upstream sent inside a 200 stream (LiteLLM reports every one as a 500):
    the status its error object stands for, from the openai SDK's APIError body on the chain."""
    from llm_service.core.direct_decode import in_band_status

    for cause in _causes(exc):
        body = getattr(cause, "body", None)
        if isinstance(body, dict) and getattr(cause, "status_code", None) is None:
            return in_band_status(body)
    return None


# What marks an error answer as a context-window or content-policy failure (the words
# providers use; LiteLLM's own checker is asked too, so both transports agree).
_CONTEXT_WINDOW_MARKERS = ("prompt is too long", "context_length_exceeded", "context length exceeded")
_CONTENT_POLICY_MARKERS = (
    "content_policy_violation",
    "violating our usage policy",
    "rejected as a result of the safety system",
    "content filtering policy",
    "the response was blocked",
)


def error_message(body: str) -> str:
    """The provider's own message in an error body: `error.message` (OpenAI, Anthropic and the
    OpenAI-compatible), `message` or `detail`; else the body's text."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.strip()
    inner = parsed.get("error", parsed) if isinstance(parsed, dict) else None
    if isinstance(inner, str):
        return inner
    if isinstance(inner, dict):
        for key in ("message", "detail"):
            if isinstance(inner.get(key), str):
                return str(inner[key])
    return body.strip()


def answered(status: int, body: str, secrets: Iterable[str] = ()) -> errors.LLMError:
    """An error the upstream answered: an HTTP error status with its body, or an error event inside
    a 200 stream with the status it stands for. The caller sees the provider's own words."""
    words = redact(error_message(body), secrets)
    lowered = body.lower()
    return (
        _marked(words, lowered, status)
        or _by_status(status, words, lowered, status)
        or errors.UpstreamUnavailable(f"the upstream failed: {words}", upstream_status=status)
    )


def _marked(words: str, lowered: str, status: int | None) -> errors.LLMError | None:
    """A context-window or content-policy failure, by the words the error says it with."""
    if ExceptionCheckers.is_error_str_context_window_exceeded(words) or any(m in lowered for m in _CONTEXT_WINDOW_MARKERS):
        return errors.ContextWindowExceeded(
            f"the conversation does not fit the model's context window: {words}", upstream_status=status
        )
    if any(m in lowered for m in _CONTENT_POLICY_MARKERS):
        return errors.ContentPolicyViolation(
            f"the provider refused the request by its content policy: {words}", upstream_status=status
        )
    return None


CONNECTION_FAILED = "the upstream is unavailable: the connection failed"
_LOST_CONNECTION_WORDS = ("response payload is not completed", "server disconnected", "peer closed connection")


def _connection_lost(exc: BaseException) -> bool:
    """A connection that failed or was cut mid-answer (whatever status LiteLLM then reports)."""
    if any(isinstance(e, (aiohttp.ClientError, httpx.TransportError)) for e in (exc, *_causes(exc))):
        return True
    text = str(exc).lower()
    return any(words in text for words in _LOST_CONNECTION_WORDS)


def _by_status(status: int, words: str, lowered: str, reported: int | None) -> errors.LLMError | None:
    """The family member an error status stands for (reported: the status the upstream answered,
    if it did); None for a status below 400."""
    if status == 429:
        return errors.RateLimited("the upstream is rate-limiting this route", upstream_status=429)
    if status == 401:
        return errors.UpstreamAuthFailed("the provider rejected the server's key for this route (HTTP 401)", upstream_status=401)
    if status == 402 or "insufficient credit" in lowered or "insufficient_quota" in lowered:
        return errors.InsufficientCredits("the provider account for this route has no credit left", upstream_status=reported)
    if status == 403:
        return errors.UpstreamPermissionDenied(
            f"the provider refused the server's key access (HTTP 403): {words}", upstream_status=403
        )
    if status in (404, 410):
        return errors.UpstreamNotFound(f"the provider does not know this route's model: {words}", upstream_status=status)
    # Any other status maps by its class: 5xx (and 408, a timeout) is the upstream's trouble and
    # may pass; any other 4xx is the request's.
    if status >= 500 or status == 408:
        return errors.UpstreamUnavailable(f"the upstream is unavailable: {words}", upstream_status=reported)
    if status >= 400:
        return errors.UpstreamBadRequest(f"the provider rejected the request: {words}", upstream_status=reported)
    return None


def classify(exc: BaseException, secrets: Iterable[str] = ()) -> errors.LLMError:
    """Translate a provider exception into the family. Unknown ones become LLMError (INTERNAL)."""
    if isinstance(exc, errors.LLMError):
        return exc
    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) else None
    answered = _http_status(exc) or _in_band_status(exc)
    if answered is not None:
        status = answered  # LiteLLM's Anthropic mapping reports 413 as 400 and 529 as 500: keep what was answered
    words = redact(_upstream_words(exc), secrets)
    lowered = words.lower()
    if isinstance(exc, (asyncio.TimeoutError, lx.Timeout)):
        return errors.UpstreamUnavailable("the upstream timed out", upstream_status=status)
    if isinstance(exc, lx.ContextWindowExceededError):
        return errors.ContextWindowExceeded(
            f"the conversation does not fit the model's context window: {words}", upstream_status=status
        )
    if isinstance(exc, lx.ContentPolicyViolationError):
        return errors.ContentPolicyViolation(
            f"the provider refused the request by its content policy: {words}", upstream_status=status
        )
    if _connection_lost(exc):
        return errors.UpstreamUnavailable(CONNECTION_FAILED)
    implied = status if status is not None else _implied_status(exc)
    if implied == 400:  # the same markers as an error the direct transport reads
        found = _marked(words, lowered, status)
        if found is not None:
            return found
    if implied not in (429, 401, 402, 403) and any(marker in lowered for marker in _BAD_RESPONSE_MARKERS):
        return errors.UpstreamBadResponse(
            "the upstream answered with something that is not its wire format", upstream_status=_answered_status(exc)
        )
    # Only a failure with no status and of no known kind is INTERNAL.
    return (_by_status(implied, words, lowered, status) if implied is not None else None) or errors.LLMError("internal error")


_UNAVAILABLE = (lx.APIConnectionError, lx.InternalServerError, lx.ServiceUnavailableError, lx.BadGatewayError, OSError)


def _implied_status(exc: BaseException) -> int | None:
    """The status a LiteLLM exception's class stands for, when no status came with it."""
    for kind, status in (
        (lx.RateLimitError, 429),
        (lx.AuthenticationError, 401),
        (lx.PermissionDeniedError, 403),
        (lx.NotFoundError, 404),
        (_UNAVAILABLE, 503),
        ((lx.BadRequestError, lx.UnprocessableEntityError), 400),
    ):
        if isinstance(exc, kind):
            return status
    return None


_RETRY_HEADERS = ("retry-after-ms", "retry-after")


def upstream_error(exc: BaseException, req: UpstreamRequest, route: str) -> errors.LLMError:
    """A transport's failure as the engine takes it: classified, with the upstream's retry-after
    headers and whether it refused native tools. One of no known kind is logged with its traceback."""
    err = classify(exc, req.secrets)
    if err is exc:
        return err
    if type(err) is errors.LLMError:
        log.error("unexpected upstream failure", exc_info=exc, extra={"route": route, **describe(exc)})
    return with_upstream_hints(err, req, str(exc), response_headers(exc))


def with_upstream_hints(err: errors.LLMError, req: UpstreamRequest, text: str, headers: Mapping[str, str]) -> errors.LLMError:
    """err with what the engine reads of the upstream's answer besides its class: the retry-after
    headers (lower-cased names), whether OpenRouter refused native tools, and whether it said
    "backpressure". Both transports annotate their failures here."""
    err.upstream_headers = {name: headers[name] for name in _RETRY_HEADERS if name in headers}
    err.native_tools_rejected = req.is_openrouter and "tools" in req.kwargs and rejects_native_tools(text)
    err.backpressure = "backpressure" in text.lower()
    return err


def describe(exc: BaseException) -> dict[str, Any]:
    """Safe facts about an exception for the log: its type and status, never its text."""
    return {"error_type": type(exc).__name__, "upstream_status": getattr(exc, "status_code", None)}
