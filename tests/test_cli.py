"""The README's first call: the client CLI, run as a real process against a real server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fake_upstream import FakeUpstream, Script

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llm_client", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT / "clients/python/src")},
    )


def test_cli_stream_prints_tokens_as_the_readme_shows(server: object, fake: FakeUpstream) -> None:
    fake.script(Script(text="Hi there, friend"))
    proc = _cli("stream", "--model", "openai", "Hello", "--target", server.target)  # type: ignore[attr-defined]
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "Hi there, friend\n"
    assert fake.requests()[-1].body["messages"][-1]["content"] == "Hello"


def test_cli_models_and_complete_and_errors(server: object, fake: FakeUpstream) -> None:
    target = server.target  # type: ignore[attr-defined]
    models = _cli("models", "--target", target)
    assert models.returncode == 0 and "anthropic/claude-test" in models.stdout
    fake.script(Script(text="Whole answer"))
    assert _cli("complete", "--target", target, "--model", "anthropic", "Hi").stdout == "Whole answer\n"
    missing = _cli("complete", "--target", target, "--model", "nope", "Hi")
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr and "ROUTE_NOT_FOUND" in missing.stderr
