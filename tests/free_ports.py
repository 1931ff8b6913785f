"""Free TCP ports on 127.0.0.1 for tests that start TensorFlow servers in processes of their own."""

import socket


def free_ports(n=2) -> str:
    """``n`` ports no one listens on now, comma-separated (bound together, so they differ)."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = ",".join(str(s.getsockname()[1]) for s in sockets)
    for s in sockets:
        s.close()
    return ports
