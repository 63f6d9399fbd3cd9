"""The contract's breaking-change check can fail: buf breaking rejects a changed llm.v1."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

PROTOS = ROOT / "protos"
BUF = PROTOS / "node_modules/.bin/buf"
IMAGE = PROTOS / "releases/llm-v1.binpb"


def _breaking(protos: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BUF), "breaking", str(protos), "--against", str(IMAGE)], capture_output=True, text=True, timeout=60, cwd=PROTOS
    )


@pytest.fixture
def contract_copy(tmp_path: Path) -> Path:
    assert BUF.exists(), "run `make test` (it installs buf from protos/package-lock.json)"
    copy = tmp_path / "protos"
    shutil.copytree(PROTOS / "llm", copy / "llm")
    shutil.copy(PROTOS / "buf.yaml", copy / "buf.yaml")
    return copy


def test_the_released_contract_has_no_breaking_changes(contract_copy: Path) -> None:
    result = _breaking(contract_copy)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("string model = 1;", "string route = 1;"),  # a renamed field breaks JSON and generated code
        ("rpc CountTokens(", "rpc CountInputTokens("),  # a renamed RPC breaks every caller
    ],
)
def test_a_breaking_change_fails_the_check(contract_copy: Path, old: str, new: str) -> None:
    proto = contract_copy / "llm/v1/llm_service.proto"
    text = proto.read_text()
    assert old in text
    proto.write_text(text.replace(old, new, 1))
    result = _breaking(contract_copy)
    assert result.returncode != 0, "buf breaking accepted a breaking change"
