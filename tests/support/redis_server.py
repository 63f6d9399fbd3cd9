"""A real Redis for the tests that share quota counters: Debian's redis-server (which `make test`
installs), on a loopback port of its own, without persistence; killed and started again on the
same port to show what the service does while Redis is down."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.support.servers import free_port

CLUSTER_BUS_OFFSET = 10_000  # a cluster node also listens on its port + 10000


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is a port and free too."""
    while True:
        port = free_port()
        if port + CLUSTER_BUS_OFFSET <= 65_535:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port + CLUSTER_BUS_OFFSET)) != 0:
                    return port


class RedisServer:
    """redis-server on 127.0.0.1 and a free port, its data in memory only."""

    def __init__(self, workdir: Path, cluster: bool = False, password: str = "") -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed: `make test` installs Debian's redis-server package"
        self.binary = binary
        self.workdir = workdir
        self.port = _cluster_port() if cluster else free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.cluster = cluster
        self.password = password  # required of every client (requirepass) when set
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Start it (again, on the same port) and wait until it answers PING."""
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--loglevel", "warning",
             *(["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{self.port}.conf"] if self.cluster else []),
             *(["--requirepass", self.password] if self.password else [])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self.ping():
            assert self.proc.poll() is None, "redis-server exited at start"
            assert time.monotonic() < deadline, "redis-server did not answer PING within 10 s"
            time.sleep(0.01)

    def ping(self) -> bool:
        """Whether it answers PING now."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                if self.password:
                    s.sendall(f"AUTH {self.password}\r\n".encode())
                    if not s.recv(16).startswith(b"+OK"):
                        return False
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: gone at once, as a crashed Redis is; its counters with it."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


class RedisCluster:
    """Three redis-server processes made one Redis Cluster (no replicas), each on its own loopback port."""

    def __init__(self, workdir: Path) -> None:
        self.nodes = [RedisServer(workdir, cluster=True) for _ in range(3)]
        self.url = f"redis://127.0.0.1:{self.nodes[0].port}"
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while (
            b"cluster_state:ok"
            not in subprocess.run(
                ["redis-cli", "-p", str(self.nodes[0].port), "cluster", "info"], capture_output=True, timeout=5
            ).stdout
        ):
            assert time.monotonic() < deadline, "the Redis Cluster did not come up within 10 s"
            time.sleep(0.02)

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()


class RedisSentinel:
    """A Redis master and one Redis Sentinel watching it under the name `service` (redis-server in
    sentinel mode; it needs a config file it may rewrite)."""

    def __init__(self, workdir: Path, service: str = "quotas") -> None:
        self.master = RedisServer(workdir)
        self.port = free_port()
        config = workdir / f"sentinel-{self.port}.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {workdir}\nsentinel monitor {service} 127.0.0.1 {self.master.port} 1\n"
        )
        self.proc = subprocess.Popen(
            [self.master.binary, str(config), "--sentinel", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"redis+sentinel://127.0.0.1:{self.port}/{service}"
        deadline = time.monotonic() + 10
        while not self._knows_master(service):
            assert self.proc.poll() is None, "redis-server --sentinel exited at start"
            assert time.monotonic() < deadline, "the Sentinel did not name its master within 10 s"
            time.sleep(0.02)

    def _knows_master(self, service: str) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(f"SENTINEL get-master-addr-by-name {service}\r\n".encode())
                return str(self.master.port).encode() in s.recv(256)
        except OSError:
            return False

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self.master.kill()
