"""The fake upstream's HTTP server, its script queue and its request record."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

from fake_upstream.embeddings import cohere_embed, openai_embeddings
from fake_upstream.script import Script, scenario_for_model
from fake_upstream.wire import (
    anthropic_json,
    anthropic_sse,
    anthropic_thinking_error,
    error_body,
    gemini_json,
    gemini_sse,
    ollama_json,
    ollama_ndjson,
    openai_json,
    openai_sse,
    responses_json,
    responses_sse,
)

KEEPALIVE_INTERVAL_S = 0.2


@dataclass
class RecordedRequest:
    """One request as the fake received it, and how it ended.

    outcome: "completed" (everything was sent), "aborted" (the client hung up
    first), "disconnected" (the script dropped the connection). Times are
    time.monotonic() values, comparable across processes on one machine.
    """

    seq: int
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    started_at: float
    ended_at: float | None = None
    outcome: str = "open"
    chunks_sent: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class FakeUpstream:
    """The scriptable fake provider. Start with start_in_thread() or serve()."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._scripts: deque[Script] = deque()
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._changed = threading.Condition(self._lock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # --- control, callable from any thread ------------------------------------------------

    @property
    def base_url(self) -> str:
        """http://host:port, once started."""
        return f"http://{self.host}:{self.port}"

    def script(self, *scripts: Script) -> None:
        """Queue scripted answers, used in order by matching requests."""
        with self._lock:
            for s in scripts:
                for _ in range(s.times):
                    self._scripts.append(s)

    def reset(self) -> None:
        """Forget queued scripts and recorded requests."""
        with self._lock:
            self._scripts.clear()
            self._requests.clear()

    def requests(self, path_suffix: str = "") -> list[RecordedRequest]:
        """The recorded requests (copies), optionally only those whose path ends with path_suffix."""
        with self._lock:
            return [RecordedRequest(**asdict(r)) for r in self._requests if r.path.endswith(path_suffix)]

    def wait_for(self, predicate: Any, timeout_s: float = 5.0) -> list[RecordedRequest]:
        """Wait until predicate(requests) is true; return the requests (raises TimeoutError)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                snapshot = [RecordedRequest(**asdict(r)) for r in self._requests]
                if predicate(snapshot):
                    return snapshot
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"fake upstream: condition not met; requests: {snapshot}")
                self._changed.wait(remaining)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _next_script(self, model: str, last_user_text: str, key: str = "") -> Script:
        with self._lock:
            for i, s in enumerate(self._scripts):
                if (s.match_model is None or s.match_model == model) and (s.match_key is None or s.match_key == key):
                    del self._scripts[i]
                    return s
        return scenario_for_model(model, last_user_text)

    # --- HTTP --------------------------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/_fake/script", self._h_script)
        app.router.add_post("/_fake/reset", self._h_reset)
        app.router.add_get("/_fake/requests", self._h_requests)
        app.router.add_get("/_fake/health", self._h_health)
        app.router.add_route("*", "/{tail:.*}", self._h_provider)
        return app

    async def _h_script(self, request: web.Request) -> web.Response:
        data = await request.json()
        items = data if isinstance(data, list) else [data]
        try:
            self.script(*(Script.from_dict(d) for d in items))
        except (TypeError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"queued": len(items)})

    async def _h_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def _h_requests(self, request: web.Request) -> web.Response:
        return web.json_response([asdict(r) for r in self.requests()])

    async def _h_health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _h_provider(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw.decode(errors="replace")
        with self._lock:
            rec = RecordedRequest(
                seq=len(self._requests),
                method=request.method,
                path=request.path,
                headers=dict(request.headers),
                body=body,
                started_at=time.monotonic(),
            )
            self._requests.append(rec)
        self._notify()
        payload = body if isinstance(body, dict) else {}
        wire = wire_for(request.path, payload)
        if wire is None:
            self._finish(rec, "completed")
            return web.json_response({"error": {"message": f"fake upstream: no such path {request.path}"}}, status=404)
        if wire.name == "anthropic" and (refusal := anthropic_thinking_error(payload)) is not None:
            self._finish(rec, "completed")
            return web.json_response(error_body(Script(status=400, error={"message": refusal}), True), status=400)
        script = self._next_script(wire.model, _last_user_text(payload), _request_key(request.headers))
        try:
            return await self._answer(request, rec, script, wire)
        except (asyncio.CancelledError, ConnectionResetError):
            self._finish(rec, "aborted")
            raise

    async def _answer(self, request: web.Request, rec: RecordedRequest, script: Script, wire: Wire) -> web.StreamResponse:
        model = wire.model
        rec.extra.update(status=script.status, stream=wire.stream, empty=not script.text and not script.tool_calls)
        if script.status == 200 and script.body_raw is None and script.sse_raw is None and script.error is None:
            if script.usage is not None and script.usage_mode != "none":
                rec.extra["usage"] = asdict(script.usage)  # what this answer reports, for tests to compare against
        if script.first_byte_delay_s:
            await asyncio.sleep(script.first_byte_delay_s)
        if script.body_raw is not None:
            return await self._answer_raw(request, rec, script)
        if script.status != 200 or script.error is not None:
            self._finish(rec, "completed")
            return web.json_response(error_body(script, wire.name == "anthropic"), status=script.status, headers=script.headers)
        if not wire.stream:
            self._finish(rec, "completed")
            return web.json_response(wire.whole(script, model), headers=script.headers)
        resp = web.StreamResponse(headers={"Content-Type": wire.content_type, "Cache-Control": "no-cache", **script.headers})
        await resp.prepare(request)
        events: Iterator[bytes]
        if script.sse_raw is not None:
            events = (line.encode() + b"\n\n" for line in script.sse_raw)
        else:
            events = wire.streamed(script, model)
        for event in events:
            if script.disconnect_after_chunks is not None and rec.chunks_sent >= script.disconnect_after_chunks:
                self._finish(rec, "disconnected")
                assert request.transport is not None
                request.transport.close()
                return resp
            if script.stall_after_chunks is not None and rec.chunks_sent == script.stall_after_chunks:
                await self._stall(resp, script)
            await resp.write(event)
            rec.chunks_sent += 1
            self._notify()  # a test may be waiting for the n-th chunk
            if script.chunk_delay_s:
                await asyncio.sleep(script.chunk_delay_s)
        await resp.write_eof()
        self._finish(rec, "completed")
        return resp

    async def _answer_raw(self, request: web.Request, rec: RecordedRequest, script: Script) -> web.StreamResponse:
        """Send body_raw: whole, or in the writes its delivery options ask for (a chunked body)."""
        assert script.body_raw is not None
        kind = script.raw_content_type or ("text/html" if script.body_raw.lstrip().startswith("<") else "application/json")
        if not script.raw_write_bytes and not script.raw_write_events:
            self._finish(rec, "completed")
            if ";" in kind:  # aiohttp takes the charset apart from the type
                return web.Response(
                    body=script.body_raw.encode(), status=script.status, headers={"Content-Type": kind, **script.headers}
                )
            return web.Response(text=script.body_raw, status=script.status, content_type=kind, headers=script.headers)
        resp = web.StreamResponse(status=script.status, headers={"Content-Type": kind, **script.headers})
        await resp.prepare(request)
        for piece in script.raw_writes():
            await resp.write(piece)
            rec.chunks_sent += 1
        await resp.write_eof()
        self._finish(rec, "completed")
        return resp

    async def _stall(self, resp: web.StreamResponse, script: Script) -> None:
        end = time.monotonic() + script.stall_s
        while (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(left, KEEPALIVE_INTERVAL_S))
            if script.keepalive_comments:
                await resp.write(b": keepalive\n\n")

    def _finish(self, rec: RecordedRequest, outcome: str) -> None:
        with self._lock:
            if rec.ended_at is None:
                rec.ended_at = time.monotonic()
                rec.outcome = outcome
        self._notify()

    # --- running -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start serving on the current event loop."""
        self._runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server: Any = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start_in_thread(self) -> FakeUpstream:
        """Serve from a daemon thread with its own event loop; returns self once listening."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # reported to the starting thread
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        ready.wait()
        if errors:
            raise errors[0]
        return self

    def stop_thread(self) -> None:
        """Stop a server started with start_in_thread()."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)


@dataclass(frozen=True)
class Wire:
    """The provider format a request path speaks, and what it asked for."""

    name: str
    model: str
    stream: bool
    whole: Callable[[Script, str], dict[str, Any]]
    streamed: Callable[[Script, str], Iterator[bytes]]
    content_type: str = "text/event-stream"


def wire_for(path: str, payload: dict[str, Any]) -> Wire | None:
    """The wire format for a provider path, or None for a path no provider has."""
    model = str(payload.get("model", ""))
    stream = bool(payload.get("stream"))
    if path.endswith("/embeddings"):
        return Wire("openai-embeddings", model, False, lambda _s, m: openai_embeddings(payload, m), _no_stream)
    if path.endswith("/embed"):  # Cohere's v2 embed
        return Wire("cohere-embed", model, False, lambda _s, m: cohere_embed(payload, m), _no_stream)
    if path.endswith("/chat/completions"):
        return Wire("openai", model, stream, openai_json, openai_sse)
    if path.endswith("/responses"):
        return Wire("responses", model, stream, responses_json, responses_sse)
    if path.endswith("/messages"):
        return Wire("anthropic", model, stream, anthropic_json, anthropic_sse)
    if path.endswith("/api/chat"):  # Ollama streams unless told not to
        return Wire("ollama", model, payload.get("stream", True) is not False, ollama_json, ollama_ndjson, "application/x-ndjson")
    if ":generateContent" in path or ":streamGenerateContent" in path:  # Gemini: /models/{model}:{method}
        model = path.rsplit("/", 1)[-1].split(":", 1)[0]
        return Wire("gemini", model, ":streamGenerateContent" in path, gemini_json, gemini_sse)
    return None


def _no_stream(script: Script, model: str) -> Iterator[bytes]:
    raise AssertionError("embedding answers are never streamed")  # pragma: no cover


def _last_user_text(payload: dict[str, Any]) -> str:
    """What the caller said last, in any of the wire formats (for the echo answer)."""
    messages = payload.get("messages") or payload.get("input") or payload.get("contents") or []
    for msg in reversed(messages if isinstance(messages, list) else []):
        if isinstance(msg, dict) and msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            parts = msg.get("parts")
            if isinstance(parts, list):
                return " ".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))
    return ""


def _request_key(headers: Any) -> str:
    """The provider key a request was sent with: `x-api-key`, or the `Authorization` bearer token."""
    key = headers.get("x-api-key") or ""
    auth = headers.get("Authorization") or ""
    return str(key or (auth[7:] if auth.lower().startswith("bearer ") else auth))
