"""One structured line per RPC, with route, status, attempts, tokens and latency; no content, no keys."""

from __future__ import annotations

import io
import json
import logging

from fake_upstream import FakeUpstream, Script, Usage
from llm_client import LLMClient
from llm_service.logs import JsonFormatter
from tests.support.messages import user_msg
from tests.support.servers import SENTINEL_KEY


def test_each_rpc_logs_one_json_line_without_content(client: LLMClient, fake: FakeUpstream) -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    rpc_log = logging.getLogger("llm_service.rpc")
    rpc_log.addHandler(handler)
    previous = rpc_log.level
    rpc_log.setLevel(logging.INFO)
    try:
        fake.script(Script(text="the secret answer", usage=Usage(input=5, output=3)))
        client.complete("openai", [user_msg("my private prompt")], metadata={"team": "search"}, timeout=10)
        fake.script(Script(status=401))
        try:
            client.complete("openai", [user_msg("my private prompt")], timeout=10)
        except Exception:
            pass
    finally:
        rpc_log.removeHandler(handler)
        rpc_log.setLevel(previous)
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert len(lines) == 2
    ok, failed = lines
    assert ok["rpc"] == "Complete" and ok["route"] == "openai" and ok["code"] == "OK"
    assert (ok["attempts"], ok["input_tokens"], ok["output_tokens"]) == (1, 5, 3)
    assert ok["latency_ms"] >= 0 and ok["caller"] == {"team": "search"}
    assert failed["code"] == "FAILED_PRECONDITION" and failed["reason"] == "UPSTREAM_AUTH_FAILED"
    text = buffer.getvalue()
    assert "private prompt" not in text and "secret answer" not in text and SENTINEL_KEY not in text
