"""Several worker processes on one port: the supervisor that runs them.

With `server.workers` (or `--workers`) above 1, `python -m llm_service` becomes a small
supervisor that never imports LiteLLM. It starts N workers, each a whole server
(`python -m llm_service --worker I`) listening on the same address with SO_REUSEPORT, so
the kernel spreads incoming connections over them. It also:

- keeps the metrics of all workers in one PROMETHEUS_MULTIPROC_DIR (the one set in the
  environment, emptied first, or a private temporary folder) and serves their sum on
  `server.metrics_listen`; the workers serve no /metrics of their own;
- replaces a worker that exits unexpectedly, and gives up (exit 1) when workers keep
  dying within seconds of starting, as they do when the port is taken;
- on SIGTERM or SIGINT passes SIGTERM to every worker, which drains as a single server
  does, and waits for them (SIGKILL after the drain grace and a margin);
- starts the bundled fake upstream (`dev.fake_upstream`) once, as its own process.

Workers ask the kernel for SIGTERM if the supervisor dies, so none outlives it.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from wsgiref.simple_server import WSGIServer

from prometheus_client import multiprocess

from llm_service.config import Config
from llm_service.metrics import serve_http, stop_http, summed_registry

log = logging.getLogger(__name__)
SUPERVISOR_PID_ENV = "LLM_SERVICE_SUPERVISOR_PID"
FAST_EXIT_S = 10.0  # a worker that dies sooner than this after starting counts towards giving up
FAST_EXITS_TO_GIVE_UP = 3
# A worker's exit code when it cannot listen on the shared port: a new one could not either, so
# the supervisor gives up at once (however long the worker took to start: importing LiteLLM on a
# busy machine can take longer than FAST_EXIT_S).
EXIT_CANNOT_LISTEN = 3
RESTART_DELAY_S = 1.0
STOP_MARGIN_S = 15.0  # beyond the drain grace, before SIGKILL


class WorkersError(Exception):
    """A configuration the supervisor cannot run."""


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)


def check(config: Config) -> None:
    """Refuse what several workers cannot share: an ephemeral port (each worker would get its own)."""
    if config.server.listen.rsplit(":", 1)[1] == "0":
        raise WorkersError(f"server.workers is {config.server.workers}: listen needs a fixed port, not {config.server.listen}")


class Supervisor:
    """Starts, watches, replaces and stops the worker processes."""

    def __init__(self, config: Config, config_path: str) -> None:
        self.config = config
        self.config_path = config_path
        self.stopping = threading.Event()
        self.workers: list[_Worker] = []
        self.fast_exits = 0
        given = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
        self.own_metrics_dir = not given
        self.metrics_dir = Path(given or tempfile.mkdtemp(prefix="llm-service-metrics-"))
        self.env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir), SUPERVISOR_PID_ENV: str(os.getpid())}
        self.fake: subprocess.Popen[bytes] | None = None
        self.metrics_http: WSGIServer | None = None

    def _spawn(self, index: int) -> _Worker:
        argv = [sys.executable, "-m", "llm_service", "--config", self.config_path, "--listen", self.config.server.listen]
        proc = subprocess.Popen([*argv, "--worker", str(index)], env=self.env)
        return _Worker(index, proc)

    def _serve_metrics(self) -> int:
        if not self.config.server.metrics_listen:
            return 0
        self.metrics_http = serve_http(self.config.server.metrics_listen, summed_registry(str(self.metrics_dir)))
        return int(self.metrics_http.server_port)

    def _start_fake_upstream(self) -> None:
        if self.config.fake_upstream:
            host, port = self.config.fake_upstream.rsplit(":", 1)
            argv = [sys.executable, "-m", "fake_upstream", "--host", host, "--port", port]
            self.fake = subprocess.Popen(argv, env=self.env, stdout=subprocess.DEVNULL)

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (exit 0) or until workers keep dying at start (exit 1)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        if not self.own_metrics_dir:
            self.metrics_dir.mkdir(parents=True, exist_ok=True)
            for stale in self.metrics_dir.glob("*.db"):  # values of a previous run would be summed in
                stale.unlink()
        try:
            self._start_fake_upstream()
            self.workers = [self._spawn(i) for i in range(self.config.server.workers)]
            log.info(
                "supervising",
                extra={
                    "address": self.config.server.listen,
                    "workers": len(self.workers),
                    "worker_pids": [w.proc.pid for w in self.workers],
                    "metrics_port": self._serve_metrics(),
                },
            )
            return self._watch()
        finally:
            self._stop_all()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping.set()

    def _watch(self) -> int:
        while not self.stopping.wait(0.2):
            for i, worker in enumerate(self.workers):
                code = worker.proc.poll()
                if code is not None and not self.stopping.is_set() and not self._replace(i, worker, code):
                    return 1
        return 0

    def _replace(self, i: int, worker: _Worker, code: int) -> bool:
        """Start a new worker in place of one that exited; False when workers keep dying at start."""
        lived = time.monotonic() - worker.started
        multiprocess.mark_process_dead(worker.proc.pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]
        self.fast_exits = self.fast_exits + 1 if lived < FAST_EXIT_S else 0
        fields = {"worker": worker.index, "pid": worker.proc.pid, "exit_code": code, "lived_s": round(lived, 1)}
        log.warning("worker exited", extra=fields)
        if code == EXIT_CANNOT_LISTEN:
            log.error("a worker cannot listen on the port; giving up", extra={"address": self.config.server.listen})
            return False
        if self.fast_exits >= FAST_EXITS_TO_GIVE_UP:
            log.error("workers keep exiting at start; giving up", extra={"fast_exits": self.fast_exits})
            return False
        if not self.stopping.wait(RESTART_DELAY_S):
            self.workers[i] = self._spawn(worker.index)
            log.info("worker replaced", extra={"worker": worker.index, "pid": self.workers[i].proc.pid})
        return True

    def _stop_all(self) -> None:
        procs = [w.proc for w in self.workers]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.config.server.drain_grace_s + STOP_MARGIN_S
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker did not drain in time; killed", extra={"pid": proc.pid})
                proc.kill()
                proc.wait()
        if self.fake is not None:
            self.fake.terminate()
            self.fake.wait()
        if self.metrics_http is not None:
            stop_http(self.metrics_http)
        if self.own_metrics_dir:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
        log.info("stopped", extra={"workers": len(procs)})


def die_with_supervisor() -> None:
    """In a worker: have the kernel send SIGTERM when the supervisor dies (Linux PR_SET_PDEATHSIG)."""
    supervisor = int(os.environ.get(SUPERVISOR_PID_ENV, "0"))
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: a worker may then outlive a killed supervisor
        return
    if supervisor and os.getppid() != supervisor:  # the supervisor died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
