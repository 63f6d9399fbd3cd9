"""A real non-Python client: Node.js with @grpc/grpc-js and @grpc/proto-loader calls a live server."""

from __future__ import annotations

import json
import shutil
import subprocess

from fake_upstream import FakeUpstream, Script, Usage, vector_of
from tests.support.paths import ROOT
from tests.support.servers import ServerThread

NODE_CLIENT = ROOT / "clients/node"


def test_node_client_completes_streams_lists_embeds_and_reads_rich_errors(server: ServerThread, fake: FakeUpstream) -> None:
    node = shutil.which("node")
    assert node, "Node.js is required"
    assert (NODE_CLIENT / "node_modules/@grpc/grpc-js").is_dir(), "run `make test` (it installs clients/node from its lock)"
    fake.script(
        Script(text="Hello, Node."),
        Script(text="one two three", usage=Usage(input=12, output=3)),
        Script(status=401, match_model="test-model"),  # not the Embed call between them
    )
    run = subprocess.run(
        [node, "interop.mjs", server.target, "openai"], cwd=NODE_CLIENT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert server.running is not None
    assert sorted(out["models"]) == sorted(server.running.config.routes)
    assert out["complete"] == {"text": "Hello, Node.", "finish_reason": "FINISH_REASON_STOP", "route": "openai"}
    assert out["stream"] == [
        {"kind": "text_delta", "text": "one "},
        {"kind": "text_delta", "text": "two "},
        {"kind": "text_delta", "text": "three"},
        {"kind": "text_end", "text": ""},
        {"kind": "finish", "text": ""},
    ]
    assert out["stream_finish"] == {"finish_reason": "FINISH_REASON_STOP", "input_tokens": 12}
    assert out["kinds"]["embed"] == "MODEL_KIND_EMBEDDING" and out["kinds"]["openai"] == "MODEL_KIND_CHAT"
    assert out["embed"] == {
        "dimensions": 4,
        "vectors": [vector_of("Hello", 4), vector_of("from Node", 4)],
        "input_tokens": 3,
        "route": "embed",
    }
    error = out["error"]
    assert error["code"] == "FAILED_PRECONDITION"
    assert error["error_info"]["reason"] == "UPSTREAM_AUTH_FAILED"
    assert error["error_info"]["domain"] == "llm-service"
    assert error["error_info"]["metadata"]["upstream_status"] == "401"
