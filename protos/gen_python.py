"""Generate the Python code for protos/ into the client package (run by `make proto`).

protoc names Python modules after the proto path (`llm.v1.llm_service_pb2`), which
would make a top-level `llm` package that collides with other distributions. The
generated modules therefore live under `llm_client._proto`, and this script
rewrites the few import lines protoc and mypy-protobuf emit to match. Nothing
else in the generated files is touched.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PREFIX = "llm_client._proto."
PROTO_ROOT = Path(__file__).resolve().parent
PROTO_FILES = sorted(p.relative_to(PROTO_ROOT).as_posix() for p in (PROTO_ROOT / "llm").rglob("*.proto"))


def _rewrite(path: Path) -> None:
    """Point the generated imports of llm.* modules at the client package."""
    text = path.read_text()
    if path.name.endswith("_pb2.py"):
        text = re.sub(r"'(llm\.v\d+\.\w+_pb2)'", rf"'{PREFIX}\1'", text)
    else:
        text = re.sub(r"^from (llm\.v\d+) import", rf"from {PREFIX}\1 import", text, flags=re.M)
        text = re.sub(r"^import (llm\.v\d+\.)", rf"import {PREFIX}\1", text, flags=re.M)
    path.write_text(text)


def generate(out_dir: Path) -> None:
    """Run protoc with the Python, gRPC and mypy plugins into out_dir/llm_client/_proto."""
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        cmd = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--mypy_out={tmp_path}",
            f"--mypy_grpc_out={tmp_path}",
            *PROTO_FILES,
        ]
        subprocess.run(cmd, check=True)
        target = out_dir / "llm_client" / "_proto"
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        (target / "__init__.py").write_text('"""Generated from protos/ by `make proto`. Do not edit."""\n')
        for src in sorted(tmp_path.rglob("*")):
            if src.is_dir():
                continue
            dest = target / src.relative_to(tmp_path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
            _rewrite(dest)
        for pkg in sorted(p for p in target.rglob("*") if p.is_dir()):
            init = pkg / "__init__.py"
            if not init.exists():
                init.write_text("")


if __name__ == "__main__":
    generate(Path(sys.argv[1]))
