"""A real Go client: grpc-go from Debian's packages and protoc's generated code call a live server."""

from __future__ import annotations

import json
import subprocess

from fake_upstream import FakeUpstream, Script, Usage
from tests.support.paths import ROOT
from tests.support.servers import ServerThread

GO_CLIENT = ROOT / "build/go/bin/llm-interop"


def test_go_client_completes_streams_lists_and_reads_rich_errors(server: ServerThread, fake: FakeUpstream) -> None:
    assert GO_CLIENT.is_file(), "run `make test` (it builds clients/go with Debian's Go packages)"
    fake.script(
        Script(text="Hello, Go."),
        Script(text="one two three", usage=Usage(input=12, output=3)),
        Script(status=401),
        Script(status=429, headers={"retry-after": "1.5"}),
    )
    run = subprocess.run([str(GO_CLIENT), server.target, "openai"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert server.running is not None
    assert sorted(out["models"]) == sorted(server.running.config.routes)
    assert out["complete"] == {"text": "Hello, Go.", "finish_reason": "FINISH_REASON_STOP", "route": "openai"}
    assert out["stream"] == [
        {"kind": "text_delta", "text": "one "},
        {"kind": "text_delta", "text": "two "},
        {"kind": "text_delta", "text": "three"},
        {"kind": "text_end", "text": ""},
        {"kind": "finish", "text": ""},
    ]
    assert out["stream_finish"] == {"finish_reason": "FINISH_REASON_STOP", "input_tokens": 12}
    error = out["error"]
    assert (error["code"], error["reason"], error["domain"]) == ("FailedPrecondition", "UPSTREAM_AUTH_FAILED", "llm-service")
    assert error["metadata"]["upstream_status"] == "401" and error["metadata"]["route"] == "openai"
    limited = out["rate_limited"]
    assert (limited["code"], limited["reason"]) == ("ResourceExhausted", "UPSTREAM_RATE_LIMITED")
    assert limited["retry_delay_s"] == 1.5
