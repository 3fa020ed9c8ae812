"""Free TCP ports on the loopback interface, for every lab process that needs one."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on `host` right now.

    The kernel picks it (bind to port 0), so two calls practically never collide; the port is released
    before returning, so a process that starts much later may still lose a race for it. Servers that fail
    to bind say so in their logs, which is why callers start them soon after asking.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
