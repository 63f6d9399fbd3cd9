"""Supply chain: what is installed is exactly what the hash-checked locks pin, and nothing runs at start-up.

LiteLLM 1.82.7 and 1.82.8 were a supply-chain compromise that shipped a `.pth` file,
which Python executes at every interpreter start; any unexpected `.pth` file fails this.
"""

from __future__ import annotations

import importlib.metadata
import re
import site
import sys
from pathlib import Path

from tests.support.paths import ROOT

COMPROMISED_LITELLM = {"1.82.7", "1.82.8"}
# .pth files that pip and setuptools themselves install, and what they do.
EXPECTED_PTH = {"distutils-precedence.pth"}  # setuptools: prefer its own distutils
# Installed by the project itself rather than from the lock: pip (made by venv) and the client package.
NOT_FROM_LOCK = {"pip", "llm-service-client", "llm-service"}  # the project's own packages, from this tree


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _locked(path: Path) -> dict[str, str]:
    pins = re.finditer(r"^([A-Za-z0-9._-]+)==([^\s\\;]+)", path.read_text(), re.MULTILINE)
    return {_normalise(m[1]): m[2] for m in pins}


def test_litellm_is_not_a_compromised_release() -> None:
    version = importlib.metadata.version("litellm")
    assert version not in COMPROMISED_LITELLM, f"LiteLLM {version} is a compromised release"
    assert version == _locked(ROOT / "requirements.lock")["litellm"], "LiteLLM is the locked, tested release"


def test_no_unexpected_pth_files_in_site_packages() -> None:
    found = {p.name for d in site.getsitepackages() for p in Path(d).glob("*.pth")}
    assert found <= EXPECTED_PTH, f"unexpected .pth files (code run at every start): {sorted(found - EXPECTED_PTH)}"


def test_every_installed_distribution_is_pinned_in_the_lock() -> None:
    assert sys.prefix != sys.base_prefix, "tests run in the project's virtual environment"
    locked = _locked(ROOT / "requirements-dev.lock") | _locked(ROOT / "requirements-bench.lock")  # bench: make bench/soak
    locked |= _locked(ROOT / "requirements-grpcurl.lock")
    installed = {_normalise(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    unpinned = {name: v for name, v in installed.items() if name not in NOT_FROM_LOCK and locked.get(name) != v}
    assert not unpinned, f"installed but not pinned (or another version) in the locks: {unpinned}"
    runtime = _locked(ROOT / "requirements.lock")
    assert all(locked.get(name) == v for name, v in runtime.items()), "the dev lock pins the runtime lock's versions"


def test_the_benchmark_peer_runs_the_tested_litellm_release() -> None:
    """`make bench-peer` installs LiteLLM Proxy from its own lock: the service's release, never a bad one, every pin hashed."""
    text = (ROOT / "requirements-peer.lock").read_text()
    peer = _locked(ROOT / "requirements-peer.lock")
    assert peer["litellm"] == _locked(ROOT / "requirements.lock")["litellm"]
    assert peer["litellm"] not in COMPROMISED_LITELLM
    pins = re.split(r"^(?=[A-Za-z0-9])", text, flags=re.MULTILINE)
    unhashed = [p.split()[0] for p in pins if "==" in p.split("\n")[0] and "--hash=sha256:" not in p]
    assert len(peer) > 50 and not unhashed, unhashed
