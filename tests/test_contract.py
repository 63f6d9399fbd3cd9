"""The contract's breaking-change check can fail: buf breaking rejects a changed llm.v1."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from llm_client import pb
from tests.support.paths import ROOT

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


def test_the_shipped_google_rpc_protos_are_the_pinned_release() -> None:
    """protos/third_party/google/rpc is googleapis-common-protos' copy, unchanged."""
    import google.rpc

    pinned = Path(google.rpc.__path__[0])
    shipped = ROOT / "protos/third_party/google/rpc"
    names = sorted(p.name for p in shipped.glob("*.proto"))
    assert names == ["code.proto", "error_details.proto", "status.proto"]
    for name in names:
        assert (shipped / name).read_bytes() == (pinned / name).read_bytes(), name


def test_the_proto_names_its_go_and_java_packages() -> None:
    options = pb.DESCRIPTOR.GetOptions()
    assert options.go_package == "github.com/llm-service/llm-service/gen/go/llm/v1;llmv1"
    assert options.java_package == "dev.llmservice.llm.v1" and options.java_multiple_files
