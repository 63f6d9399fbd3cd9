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
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from litellm import exceptions as lx

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


def _upstream_words(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    text = str(getattr(exc, "message", "") or exc)
    for prefix in ("litellm.", "OpenAIException - ", "AnthropicException - "):
        if prefix in text:
            text = text.rsplit(prefix, 1)[-1]
    return _BYTES_REPR.sub(_bytes_text, text)


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
    from llm_service.core.fast_decode import in_band_status

    for cause in _causes(exc):
        body = getattr(cause, "body", None)
        if isinstance(body, dict) and getattr(cause, "status_code", None) is None:
            return in_band_status(body)
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
    if isinstance(exc, lx.RateLimitError) or status == 429:
        return errors.RateLimited("the upstream is rate-limiting this route", upstream_status=429)
    if status == 401 or isinstance(exc, lx.AuthenticationError):
        return errors.UpstreamAuthFailed("the provider rejected the server's key for this route (HTTP 401)", upstream_status=401)
    if status == 402 or "insufficient credit" in lowered or "insufficient_quota" in lowered:
        return errors.InsufficientCredits("the provider account for this route has no credit left", upstream_status=status)
    if status == 403 or isinstance(exc, lx.PermissionDeniedError):
        return errors.UpstreamPermissionDenied(
            f"the provider refused the server's key access (HTTP 403): {words}", upstream_status=403
        )
    if any(marker in lowered for marker in _BAD_RESPONSE_MARKERS):
        return errors.UpstreamBadResponse(
            "the upstream answered with something that is not its wire format", upstream_status=_answered_status(exc)
        )
    if status in (404, 410) or isinstance(exc, lx.NotFoundError):
        return errors.UpstreamNotFound(f"the provider does not know this route's model: {words}", upstream_status=status or 404)
    # Any other status maps by its class: 5xx (and 408, a timeout) is the upstream's trouble and
    # may pass; any other 4xx is the request's. Only a failure with no status and of no known
    # kind is INTERNAL.
    unavailable = (lx.APIConnectionError, lx.InternalServerError, lx.ServiceUnavailableError, lx.BadGatewayError, OSError)
    if (status >= 500 or status == 408) if status is not None else isinstance(exc, unavailable):
        return errors.UpstreamUnavailable(f"the upstream is unavailable: {words}", upstream_status=status)
    if (400 <= status < 500) if status is not None else isinstance(exc, (lx.BadRequestError, lx.UnprocessableEntityError)):
        return errors.UpstreamBadRequest(f"the provider rejected the request: {words}", upstream_status=status)
    return errors.LLMError("internal error")


_RETRY_HEADERS = ("retry-after-ms", "retry-after")


def upstream_error(exc: BaseException, req: UpstreamRequest, route: str) -> errors.LLMError:
    """A transport's failure as the engine takes it: classified, with the upstream's retry-after
    headers and whether it refused native tools. One of no known kind is logged with its traceback."""
    err = classify(exc, req.secrets)
    if err is exc:
        return err
    if type(err) is errors.LLMError:
        log.error("unexpected upstream failure", exc_info=exc, extra={"route": route, **describe(exc)})
    headers = response_headers(exc)
    err.upstream_headers = {name: headers[name] for name in _RETRY_HEADERS if name in headers}
    err.native_tools_rejected = req.is_openrouter and "tools" in req.kwargs and rejects_native_tools(str(exc))
    return err


def describe(exc: BaseException) -> dict[str, Any]:
    """Safe facts about an exception for the log: its type and status, never its text."""
    return {"error_type": type(exc).__name__, "upstream_status": getattr(exc, "status_code", None)}
