"""The listener `strongroom api` shares with its workers gives accepted connections
TCP_NODELAY (without it, each keep-alive response waits for the client's delayed ACK)."""

from __future__ import annotations

import asyncio
import socket

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


def test_the_serving_listener_gives_accepted_connections_nodelay() -> None:
    listener = listen("127.0.0.1", 0)
    with listener:
        assert accepted_nodelay(listener) == 1


def test_a_port_in_use_is_one_plain_error() -> None:
    with listen("127.0.0.1", 0) as taken:
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError, match=f"^port {port} on 127.0.0.1 is already in use$"):
            listen("127.0.0.1", port)
