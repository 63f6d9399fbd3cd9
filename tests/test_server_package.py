"""The server as a package: built into a wheel, installed in a fresh virtual environment, and run
by its `llm-service` command and by `python -m llm_service` with no PYTHONPATH and no source tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from fake_upstream import FakeUpstream, Script
from llm_client import LLMClient
from tests.support.messages import user_msg
from tests.support.paths import ROOT
from tests.support.servers import ServerProcess


def _run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HOME": str(cwd)}
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the server and client wheels; their dependencies are the dev venv's,
    installed from the same hash-checked lock (a .pth line), so nothing of the source tree is on the path."""
    where = tmp_path_factory.mktemp("server-package")
    wheels = where / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", wheels]
    # Built from a copy of what the package holds, so no build/ or egg-info folder of the tree leaks in.
    tree = where / "tree"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    shutil.copytree(ROOT / "service", tree / "service", ignore=ignore)
    shutil.copytree(ROOT / "clients/python", tree / "client", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    for project in (tree / "client", tree):
        subprocess.run([*build, str(project)], check=True, capture_output=True, cwd=where, timeout=300)
    subprocess.run([sys.executable, "-m", "venv", where / "venv"], check=True, timeout=120)
    py = where / "venv/bin/python"
    _run(py, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", *sorted(wheels.glob("*.whl")), cwd=where)
    site = Path(_run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=where).stdout.strip())
    (site / "zz_lock_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return where / "venv"


def test_the_wheel_carries_the_code_its_config_and_no_source_paths(installed: Path) -> None:
    probe = (
        "import llm_service, llm_service.config as c, llm_client;"
        "print(llm_service.__file__, c.DEFAULT_CONFIG_PATH.exists(), llm_client.__file__)"
    )
    server_file, config_exists, client_file = _run(installed / "bin/python", "-c", probe, cwd=installed).stdout.split()
    assert server_file.startswith(str(installed)) and client_file.startswith(str(installed))
    assert config_exists == "True"
    checked = _run(installed / "bin/llm-service", "--check-config", cwd=installed)
    assert checked.returncode == 0


@pytest.mark.parametrize("how", ["llm-service", "python -m llm_service"])
def test_the_installed_server_answers(installed: Path, fake: FakeUpstream, tmp_path: Path, how: str) -> None:
    command = (
        [str(installed / "bin/llm-service")] if how == "llm-service" else [str(installed / "bin/python"), "-m", "llm_service"]
    )
    routes = {"openai": {"model": "openai/test-model", "api_base": f"{fake.base_url}/v1", "key": {"env": "TEST_PROVIDER_KEY"}}}
    server = ServerProcess({"routes": routes}, tmp_path, command=command)
    try:
        fake.script(Script(text="from the installed server"))
        with LLMClient(server.target) as c:
            assert c.complete("openai", [user_msg()], timeout=30).text == "from the installed server"
    finally:
        server.stop()
