"""The listener `strongroom api` shares with its workers gives accepted connections
TCP_NODELAY (without it, each keep-alive response waits for the client's delayed ACK)."""

from __future__ import annotations

import asyncio
import os
import select
import socket
import subprocess
import time

import pytest

from strongroom.api.server import ListenError, listen, tcp_listener


def accepted_nodelay(listener: socket.socket) -> int:
    async def go() -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_connect(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=listener)
        async with server:
            _reader, writer = await asyncio.open_connection(*listener.getsockname())
            result = await asyncio.wait_for(accepted, 10)
            writer.close()
            return result

    return asyncio.run(go())


def bound_like_uvicorn() -> socket.socket:
    sock = socket.socket(family=socket.AF_INET)  # as uvicorn's Config.bind_socket does
    sock.bind(("127.0.0.1", 0))
    return sock


def test_accepted_connections_get_nodelay() -> None:
    with tcp_listener(bound_like_uvicorn()) as listener:
        assert listener.proto == socket.IPPROTO_TCP
        assert listener.get_inheritable()
        assert accepted_nodelay(listener) == 1


def test_without_it_they_do_not() -> None:
    """What the relabelling works around; if this fails, uvicorn has fixed it upstream."""
    with bound_like_uvicorn() as listener:
        if listener.proto == socket.IPPROTO_TCP:
            pytest.skip("this uvicorn-style socket already says TCP")
        assert accepted_nodelay(listener) == 0


def test_other_sockets_are_left_alone() -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
        assert tcp_listener(unix) is unix
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as tcp:
        assert tcp_listener(tcp) is tcp


@pytest.mark.parametrize("processes", [1, 3])
def test_the_serving_listeners_give_accepted_connections_nodelay(processes: int) -> None:
    listeners = listen("127.0.0.1", 0, processes)
    try:
        assert len(listeners) == processes
        assert len({sock.getsockname() for sock in listeners}) == 1
        for sock in listeners:
            assert accepted_nodelay(sock) == 1
    finally:
        for sock in listeners:
            sock.close()


@pytest.mark.parametrize(("first", "second"), [(1, 1), (1, 2), (2, 1), (2, 2)])
def test_a_port_in_use_is_one_plain_error(first: int, second: int) -> None:
    """Whether either side is a group of processes: a second service on the port is refused,
    not let into the first one's group."""
    taken = listen("127.0.0.1", 0, first)
    try:
        taken[0].listen()
        port = taken[0].getsockname()[1]
        with pytest.raises(ListenError, match=f"^port {port} on 127.0.0.1 is already in use$"):
            listen("127.0.0.1", port, second)
    finally:
        for sock in taken:
            sock.close()


def test_connections_are_spread_over_the_processes_listeners() -> None:
    """A burst of connections lands on every listener of the group, not on the first one
    to wake (the kernel hashes each connection to one of them)."""
    listeners = listen("127.0.0.1", 0, 2)
    clients: list[socket.socket] = []
    try:
        for sock in listeners:
            sock.listen(64)
            sock.setblocking(False)
        for _ in range(32):
            clients.append(socket.create_connection(listeners[0].getsockname()[:2]))
        accepted = [0, 0]
        deadline = time.monotonic() + 10
        while sum(accepted) < 32 and time.monotonic() < deadline:
            ready, _, _ = select.select(listeners, [], [], 1)
            for sock in ready:
                conn, _ = sock.accept()
                conn.close()
                accepted[listeners.index(sock)] += 1
        assert sum(accepted) == 32
        assert min(accepted) >= 4, accepted  # an even split is 16; all on one is 0
    finally:
        for sock in clients + listeners:
            sock.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_another_user_cannot_join_the_group() -> None:
    """A tenant's database server runs as its own user: it cannot bind into the service's
    group on the API's port and take a share of its connections."""
    listeners = listen("127.0.0.1", 0, 2)
    try:
        listeners[0].listen()
        port = listeners[0].getsockname()[1]
        joined = subprocess.run(
            ["/usr/bin/python3", "-c", JOIN_GROUP, str(port)],  # readable by any user
            user="nobody",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert joined.stdout.strip() == "refused", joined.stdout + joined.stderr
    finally:
        for sock in listeners:
            sock.close()


JOIN_GROUP = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    print("refused")
else:
    print("joined")
"""
