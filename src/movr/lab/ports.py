"""Free TCP ports on the loopback interface, for every lab process that needs one."""

from __future__ import annotations

import random
import socket

# Below Linux's ephemeral range (32768-60999 by default), from which the kernel picks the local port of every
# outgoing connection. A lab chooses its ports before it starts the processes that bind them, and meanwhile
# any connection on the machine may take a port from the ephemeral range; ports here are only ever taken by
# a deliberate bind.
STABLE_PORTS = range(20000, 32000)
_chosen: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` now, outside the ephemeral range, never handed out twice here."""
    for _ in range(1000):
        port = random.choice(STABLE_PORTS)
        if port in _chosen:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _chosen.add(port)
        return port
    # A crowded machine: fall back to the kernel's choice.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
