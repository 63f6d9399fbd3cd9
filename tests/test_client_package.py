"""The Python client as a caller installs it: alone, in a fresh virtual environment, from its own lock."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fake_upstream import FakeUpstream, Script
from tests.support.paths import ROOT
from tests.support.servers import ServerThread, custom_server

CLIENT = ROOT / "clients/python"
FLOORS = ROOT / "tests/data/client_floors"


def _run(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore[call-overload,no-any-return]


@pytest.mark.parametrize("server", ["fast-path"], indirect=True)  # the client's install: one server is enough
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


@pytest.fixture(scope="module")
def client_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wheels = tmp_path_factory.mktemp("wheels")
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", wheels, CLIENT, cwd=wheels)
    [wheel] = wheels.glob("llm_service_client-*.whl")
    return wheel


def _venv_from(lock: Path, wheel: Path, where: Path) -> Path:
    _run(sys.executable, "-m", "venv", where)
    py = where / "bin/python"
    _run(py, "-m", "pip", "install", "--quiet", "--require-hashes", "--no-deps", "-r", lock)
    _run(py, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", wheel)
    return py


def test_the_declared_floors_are_the_pins_the_floor_test_installs() -> None:
    declared = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = dict(re.findall(r"^([a-z-]+)==(\S+)", (FLOORS / "at-floors.lock").read_text(), re.M))
    assert sorted(declared) == sorted(f"{name}>={floors[name]}" for name in ("grpcio", "protobuf"))


def test_the_client_streams_at_its_declared_floors_and_not_below_them(
    tmp_path: Path, client_wheel: Path, fake: FakeUpstream
) -> None:
    """One server path is enough: this is about the client's packaging, not the server's transports."""
    py = _venv_from(FLOORS / "at-floors.lock", client_wheel, tmp_path / "venv")
    versions = _run(py, "-c", "import grpc, google.protobuf as p; print(grpc.__version__, p.__version__)").stdout.split()
    assert versions == ["1.85.1", "7.35.1"]
    fake.script(Script(text="tokens at the floors"))
    with custom_server(fake) as (server, _):
        out = _run(py, "-m", "llm_client", "stream", "--target", server.target, "--model", "openai", "--timeout", "30", "hi")
    assert "tokens at the floors" in out.stdout
    # One release below each floor, in the same venv (one at a time): importing the client fails.
    for below in ("protobuf-below.lock", "grpcio-below.lock"):
        _run(py, "-m", "pip", "install", "--quiet", "--require-hashes", "--no-deps", "-r", FLOORS / below)
        failed = subprocess.run([str(py), "-c", "import llm_client"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert failed.returncode != 0, below
        assert re.search(r"VersionError|grpc package installed is at version", failed.stderr), failed.stderr[-500:]
        _run(py, "-m", "pip", "install", "--quiet", "--require-hashes", "--no-deps", "-r", FLOORS / "at-floors.lock")
