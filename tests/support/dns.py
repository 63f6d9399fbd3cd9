"""A DNS server on loopback, standing in for a Kubernetes headless Service."""

from __future__ import annotations

import socket
import threading


class TinyDNS:
    """A DNS server on loopback answering A queries for one name with a list that tests change.

    It stands in for a Kubernetes headless Service: gRPC's resolver asks it (target
    `dns://127.0.0.1:PORT/name:port`) and round_robin connects to every address it returns.
    """

    def __init__(self, name: str, addresses: list[str]) -> None:
        self.name = name
        self.addresses = list(addresses)
        self.queries = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True, name="tiny-dns").start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(512)
            except OSError:
                return
            self.queries += 1
            i, labels = 12, []
            while data[i]:
                labels.append(data[i + 1 : i + 1 + data[i]].decode())
                i += 1 + data[i]
            qtype = int.from_bytes(data[i + 1 : i + 3], "big")
            question = data[12 : i + 5]
            answers = list(self.addresses) if ".".join(labels) == self.name and qtype == 1 else []
            records = b"".join(
                b"\xc0\x0c" + (1).to_bytes(2, "big") + (1).to_bytes(2, "big") + (0).to_bytes(4, "big") + (4).to_bytes(2, "big")
                + socket.inet_aton(a)
                for a in answers
            )  # fmt: skip
            header = data[:2] + b"\x81\x80" + (1).to_bytes(2, "big") + len(answers).to_bytes(2, "big") + b"\x00\x00\x00\x00"
            self.sock.sendto(header + question + records, peer)

    def close(self) -> None:
        self.sock.close()
