"""Shared by the 2-process gloo tests in this folder (importable: pytest puts this folder on
sys.path when it collects the tests here)."""

import socket


def free_port() -> int:
    """A free TCP port on the loopback interface for the gloo rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
