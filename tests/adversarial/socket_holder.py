"""``python -m tests.adversarial.socket_holder PORT COUNT BLOCK``: hold COUNT TCP connections to
PORT, each with an HTTP request head never finished, from 127.BLOCK.x.y (200 per address), until
stdin closes. A process of its own: one process holds fewer than 20,000 sockets here, and the
attack needs more than a node's whole open-files limit."""

from __future__ import annotations

import resource
import socket
import sys


def main(port: int, count: int, block: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    held: list[socket.socket] = []
    for index in range(count):
        sock = socket.socket()
        sock.bind((f"127.{block}.{index // 200 % 250}.{index % 200 + 2}", 0))
        try:
            sock.connect(("127.0.0.1", port))
            sock.send(b"GET /api/rooms/lobby/events HTTP/1.1\r\nHost: roomcast\r\n")
        except OSError:
            sock.close()
            continue  # refused, or reset: the attacker goes on
        held.append(sock)
    print(f"held {len(held)}", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
