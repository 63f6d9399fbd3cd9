"""The provider core's settings: routes, keys, retries, route health, Claude subscription requests.

The core reads these and nothing else of the application's configuration; `config` reads
them from the YAML file. Each scalar setting declares its default and its check (what a
valid value is, in the words an error message uses) together, with `setting`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

KEY_RELOAD_INTERVAL_S = 1.0


class Check(NamedTuple):
    """What a valid value is: the words for an error message, and the test."""

    expected: str
    test: Callable[[Any], bool] | None = None


POSITIVE_SECONDS = Check("seconds > 0", lambda v: v > 0)
SECONDS = Check("seconds >= 0", lambda v: v >= 0)
POSITIVE_INT = Check("an integer > 0", lambda v: v > 0)
COUNT = Check("an integer >= 0", lambda v: v >= 0)
TEXT = Check("a string")


def setting(default: Any, check: Check) -> Any:
    """A dataclass field read from the configuration file: its default and its check, together."""
    return field(default=default, metadata={"check": check})


class Secret:
    """A provider key: never shown by repr/str, so it cannot leak into logs or errors."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The key itself, for the upstream request only."""
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class FileSecret(Secret):
    """A key kept in a file (a Kubernetes Secret mounted as files), re-read when the file changes.

    Checked at most once per KEY_RELOAD_INTERVAL_S. A file that is missing or empty for a
    moment (Kubernetes swaps the mounted files atomically, but editors do not) keeps the
    last key that was read.
    """

    __slots__ = ("_checked", "_mtime_ns", "_path")

    def __init__(self, path: str) -> None:
        super().__init__("")
        self._path = Path(path)
        self._mtime_ns = -1
        self._checked = 0.0
        self._refresh()

    def _refresh(self) -> None:
        self._checked = time.monotonic()
        try:
            mtime = self._path.stat().st_mtime_ns
            if mtime == self._mtime_ns:
                return
            value = self._path.read_text(encoding="utf-8").strip()
        except OSError:
            return
        self._mtime_ns = mtime
        if value:
            self._value = value

    def reveal(self) -> str:
        if time.monotonic() - self._checked >= KEY_RELOAD_INTERVAL_S:
            self._refresh()
        return self._value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FileSecret) and other._path == self._path

    def __hash__(self) -> int:
        return hash(self._path)


@dataclass(frozen=True)
class KeySource:
    """Where a route's provider key comes from: an environment variable or a file."""

    env: str = ""
    file: str = ""

    def describe(self) -> str:
        """Where to put the key, for an error message (never the key)."""
        if self.env:
            return f"environment variable {self.env}"
        if self.file:
            return f"file {self.file}"
        return "no key configured"


@dataclass(frozen=True)
class Deployment:
    """One place a route's calls can go: an endpoint with its own key (PC29's key pool is several
    deployments on one endpoint). Empty fields take the route's."""

    name: str
    model: str = ""
    api_base: str = ""
    key_source: KeySource | None = None
    key: Secret | None = None
    headers: tuple[tuple[str, str], ...] = ()
    weight: int = setting(1, POSITIVE_INT)


USD_RATE = Check("US dollars per million tokens, >= 0", lambda v: v >= 0)


@dataclass(frozen=True)
class Price:
    """A route's own price in US dollars per million tokens, for models neither the provider nor
    LiteLLM prices (PC34). A cache rate left out is the input rate."""

    input: float = setting(0.0, USD_RATE)
    output: float = setting(0.0, USD_RATE)
    cache_read: float | None = setting(None, USD_RATE)
    cache_creation: float | None = setting(None, USD_RATE)


PROVIDER_TOOL_NAMES = ("web_search", "web_fetch", "code_execution")


@dataclass(frozen=True)
class ProviderTool:
    """A tool the provider runs itself, enabled on a route: its name and its options as the
    provider takes them (JSON text, for example Anthropic's web search `{"max_uses": 3}`)."""

    name: str
    options_json: str = "{}"


REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high")


@dataclass(frozen=True)
class ReasoningDefaults:
    """A route's reasoning: what a call that asks nothing itself gets (effort, thinking budget), and
    whether the model reasons when LiteLLM's model map does not know it (`supported`; None: ask
    the map). A caller's own request.reasoning replaces both defaults."""

    effort: str = setting("", Check('"none", "minimal", "low", "medium" or "high"', lambda v: v in REASONING_EFFORTS))
    budget_tokens: int | None = setting(None, POSITIVE_INT)
    supported: bool | None = setting(None, Check("true or false"))


@dataclass(frozen=True)
class Route:
    """One route: a name callers use, and how the server reaches the provider for it."""

    name: str
    model: str
    api_base: str = ""
    key_source: KeySource | None = None
    key: Secret | None = None
    headers: tuple[tuple[str, str], ...] = ()
    timeout_s: float = setting(600.0, POSITIVE_SECONDS)  # one attempt, and a call with no deadline of its own
    idle_timeout_s: float = setting(60.0, POSITIVE_SECONDS)  # the longest silence allowed from an answering upstream
    max_tokens: int = setting(4096, POSITIVE_INT)
    max_retries: int | None = setting(None, COUNT)
    fallbacks: tuple[str, ...] = ()
    # What the model does: "chat" or "embedding"; "" (the default) asks LiteLLM's model map
    # (`mode: embedding`), and a model the map does not know is a chat model.
    kind: str = setting(
        "", Check('"chat", "embedding", or "" (from LiteLLM\'s model map)', lambda v: v in ("", "chat", "embedding"))
    )
    # Embed: inputs per upstream request (None: the provider's maximum), and split requests in flight at once.
    embed_batch_size: int | None = setting(None, POSITIVE_INT)
    embed_concurrency: int = setting(4, POSITIVE_INT)
    # "direct": the service's own HTTP client and decoders where they carry the route's wire
    # format (else LiteLLM, said once at WARNING); "litellm": always litellm.acompletion.
    transport: str = setting("direct", Check('"direct" or "litellm"', lambda v: v in ("direct", "litellm")))
    deployments: tuple[Deployment, ...] = ()  # none: the route itself is its one deployment
    deployment: str = ""  # set on the route as one deployment sees it (`of`): the deployment's name
    balance: str = setting(
        "round_robin", Check('"round_robin" (weighted) or "least_inflight"', lambda v: v in ("round_robin", "least_inflight"))
    )
    ramp_s: float = setting(30.0, POSITIVE_SECONDS)  # a deployment back from a rest regains its weight over this
    rest_s: float = setting(60.0, POSITIVE_SECONDS)  # a rate-limited deployment's rest when the upstream asked none
    key_out_s: float = setting(600.0, POSITIVE_SECONDS)  # a refused key's time out, unless its file changes first
    # A streamed attempt with no first chunk within it is abandoned and retried elsewhere (None: no limit).
    first_token_timeout_s: float | None = setting(None, POSITIVE_SECONDS)
    price_usd_per_mtok: Price | None = None  # the last resort for the cost of an answer (PC34)
    reasoning: ReasoningDefaults = field(default_factory=ReasoningDefaults)
    provider_tools: tuple[ProviderTool, ...] = ()  # tools the provider runs itself on every call of the route
    # Whether the model reads documents (PDFs), where LiteLLM's model map does not say (None: ask it).
    documents: bool | None = setting(None, Check("true or false"))

    def of(self, deployment: Deployment) -> Route:
        """The route as one of its deployments is called: its endpoint, key, model and headers."""
        return dataclasses.replace(
            self,
            model=deployment.model or self.model,
            api_base=deployment.api_base or self.api_base,
            key_source=deployment.key_source if deployment.key_source is not None else self.key_source,
            key=deployment.key if deployment.key_source is not None else self.key,
            headers=tuple(sorted(dict(self.headers + deployment.headers).items())),
            deployments=(),
            deployment=deployment.name,
        )

    @property
    def provider(self) -> str:
        """The provider part of the model string ("openai" for a bare model name)."""
        return self.model.split("/", 1)[0].lower() if "/" in self.model else "openai"

    @property
    def ready(self) -> bool:
        """Whether the route has the key it needs (a route of several deployments: any of them)."""
        if self.deployments:
            return any(self.of(d).ready for d in self.deployments)
        return self.key_source is None or (self.key is not None and bool(self.key.reveal()))


@dataclass(frozen=True)
class RetryConfig:
    """The retry engine's limits and delays (reference values by default)."""

    rate_limit_max_retries: int = setting(10, COUNT)
    backoff_base_s: float = setting(2.0, SECONDS)
    max_delay_s: float = setting(120.0, SECONDS)
    jitter_ratio: float = setting(0.25, Check("a ratio from 0 to 1", lambda v: 0 <= v <= 1))
    retry_after_jitter: bool = setting(True, Check("true or false"))  # spread short Retry-After waits (PC30)
    empty_response_max_retries: int = setting(3, COUNT)
    empty_stream_max_retries: int = setting(3, COUNT)
    empty_stream_delay_s: float = setting(1.0, SECONDS)
    transient_max_retries: int = setting(3, COUNT)


@dataclass(frozen=True)
class ResilienceConfig:
    """Per-route retry budget (gRFC A6 throttling) and circuit breaker settings."""

    retry_budget_tokens: float = setting(10.0, Check("a number >= 2", lambda v: v >= 2))
    retry_budget_ratio: float = setting(0.1, Check("a number > 0", lambda v: v > 0))
    breaker_failures: int = setting(5, POSITIVE_INT)
    breaker_open_s: float = setting(30.0, POSITIVE_SECONDS)


@dataclass(frozen=True)
class ClaudeCodeConfig:
    """Claude subscription (OAuth) request settings (PC05)."""

    version: str = setting("2.1.76", Check("a version string"))
    billing_salt: str = setting("59cf53e54c78", TEXT)
    entrypoint: str = setting("cli", TEXT)  # CLAUDE_CODE_ENTRYPOINT in the environment wins


@dataclass(frozen=True)
class CoreSettings:
    """Everything the provider core is configured with."""

    routes: Mapping[str, Route]
    retry: RetryConfig = field(default_factory=RetryConfig)
    resilience: ResilienceConfig = field(default_factory=ResilienceConfig)
    claude_code: ClaudeCodeConfig = field(default_factory=ClaudeCodeConfig)
    hive_api_base: str = ""
    max_retries_cap: int = 10  # the most retries a caller's own max_retries may ask for
    debug_dump_dir: str = ""
    debug_dump_keep: int = 50
