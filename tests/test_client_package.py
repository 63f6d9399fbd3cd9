"""The Python client as a caller installs it: alone, in a fresh virtual environment, from its own lock."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fake_upstream import FakeUpstream, Script
from tests.conftest import ROOT, ServerThread

CLIENT = ROOT / "clients/python"


def _run(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore[call-overload,no-any-return]


def test_the_client_installs_alone_and_its_cli_streams_from_a_running_server(
    tmp_path: Path, server: ServerThread, fake: FakeUpstream
) -> None:
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    py = venv / "bin/python"
    _run(py, "-m", "pip", "install", "--quiet", "--require-hashes", "-r", CLIENT / "requirements.lock")
    # The wheel is built where setuptools comes from the hash-checked dev lock, then installed alone.
    wheels = tmp_path / "wheels"
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", wheels, CLIENT, cwd=tmp_path)
    [wheel] = wheels.glob("llm_service_client-*.whl")
    _run(py, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", wheel, cwd=tmp_path)

    listed = json.loads(_run(py, "-m", "pip", "list", "--format", "json").stdout)
    installed = {p["name"].lower().replace("_", "-") for p in listed}
    assert installed - {"pip", "setuptools", "wheel"} == {"grpcio", "protobuf", "typing-extensions", "llm-service-client"}

    # Importing the client loads neither LiteLLM nor googleapis-common-protos (not even installed here).
    probe = "import sys, llm_client; print(sorted(m for m in ('litellm', 'google.rpc') if m in sys.modules))"
    assert _run(py, "-c", probe, cwd=tmp_path).stdout.strip() == "[]"

    fake.script(Script(text="tokens from a fresh venv"))
    out = _run(
        py, "-m", "llm_client", "stream", "--target", server.target, "--model", "openai", "--timeout", "30", "hi", cwd=tmp_path
    )
    assert "tokens from a fresh venv" in out.stdout

    fake.script(Script(status=401))
    failed = subprocess.run(
        [str(py), "-m", "llm_client", "complete", "--target", server.target, "--model", "openai", "--timeout", "30", "hi"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert failed.returncode != 0
    assert "FAILED_PRECONDITION" in failed.stderr and "UPSTREAM_AUTH_FAILED" in failed.stderr, "rich error details read"
