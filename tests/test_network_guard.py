from __future__ import annotations

import socket

import pytest


def test_outside_connections_are_blocked() -> None:
    with pytest.raises(RuntimeError, match="attempted in a test"):
        socket.create_connection(("93.184.216.34", 80), timeout=1)


def test_raw_socket_connect_is_blocked() -> None:
    sock = socket.socket()
    try:
        with pytest.raises(RuntimeError, match="network access attempted"):
            sock.connect(("93.184.216.34", 80))
    finally:
        sock.close()


def test_loopback_stays_allowed() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.socket()
    try:
        client.connect(server.getsockname())
    finally:
        client.close()
        server.close()
