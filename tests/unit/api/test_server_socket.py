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
from uvicorn.config import STARTUP_FAILURE

from strongroom.api.server import ListenError, listen, pick_members, tcp_listener


def accepted_nodelay(*listeners: socket.socket) -> int:
    """TCP_NODELAY of a connection accepted by one of ``listeners`` (all of one port)."""

    async def go() -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_connect(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        servers = [await asyncio.start_server(on_connect, sock=sock) for sock in listeners]
        try:
            _reader, writer = await asyncio.open_connection(*listeners[0].getsockname()[:2])
            result = await asyncio.wait_for(accepted, 10)
            writer.close()
            return result
        finally:
            for server in servers:
                server.close()

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
        assert all(sock.proto == socket.IPPROTO_TCP for sock in listeners)
        assert accepted_nodelay(*listeners) == 1
    finally:
        for sock in listeners:
            sock.close()


@pytest.mark.parametrize(("first", "second"), [(1, 1), (1, 2), (2, 1), (2, 2)])
def test_a_port_in_use_is_one_plain_error(first: int, second: int) -> None:
    """Whether either side is a group of processes: a second service on the port is refused,
    not let into the first one's group."""
    taken = listen("127.0.0.1", 0, first)
    try:
        port = taken[0].getsockname()[1]
        with pytest.raises(ListenError, match=f"^port {port} on 127.0.0.1 is already in use$"):
            listen("127.0.0.1", port, second)
    finally:
        for sock in taken:
            sock.close()


def test_connections_are_spread_over_the_processes_listeners() -> None:
    """A burst of connections lands on every listener of the group, not on the first one
    to wake; a socket of the same user that joins the group later gets none of them."""
    listeners = listen("127.0.0.1", 0, 2)
    port = listeners[0].getsockname()[1]
    intruder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    intruder.bind(("127.0.0.1", port))  # the same user may join: the group admits it
    intruder.listen()
    everyone = [*listeners, intruder]
    try:
        accepted = _accepted_by_each(everyone, port, 32)
        assert sum(accepted) == 32, accepted
        assert accepted[2] == 0, accepted  # the intruder
        assert min(accepted[:2]) >= 4, accepted  # an even split is 16; all on one is 0
    finally:
        for sock in everyone:
            sock.close()


def _accepted_by_each(listeners: list[socket.socket], port: int, count: int) -> list[int]:
    """Make ``count`` connections to ``port``; how many each of ``listeners`` accepted
    (within 10 s)."""
    clients: list[socket.socket] = []
    try:
        for sock in listeners:
            sock.setblocking(False)
        for _ in range(count):
            clients.append(socket.create_connection(("127.0.0.1", port)))
        accepted = [0] * len(listeners)
        deadline = time.monotonic() + 10
        while sum(accepted) < count and time.monotonic() < deadline:
            ready, _, _ = select.select(listeners, [], [], 1)
            for sock in ready:
                conn, _ = sock.accept()
                conn.close()
                accepted[listeners.index(sock)] += 1
        return accepted
    finally:
        for client in clients:
            client.close()


@pytest.mark.parametrize("picked", [[0, 2], [1], [0, 1, 2]])
def test_connections_go_to_the_picked_listeners_only(picked: list[int]) -> None:
    """While a process's replacement cannot start, new connections go to the others'
    listeners; picking all of them again spreads them over all."""
    listeners = listen("127.0.0.1", 0, 3)
    port = listeners[0].getsockname()[1]
    try:
        pick_members(listeners[0], picked)
        accepted = _accepted_by_each(listeners, port, 30)
        assert sum(accepted) == 30, accepted
        assert [i for i, n in enumerate(accepted) if n] == picked, accepted
    finally:
        for sock in listeners:
            sock.close()


def test_the_port_is_listening_before_the_service_serves() -> None:
    """A connection made while the service is still starting waits in the backlog (it is
    answered once a process serves) instead of being refused, or reaching someone else."""
    (listener,) = listen("127.0.0.1", 0)
    with listener, socket.create_connection(listener.getsockname()[:2], timeout=5) as client:
        listener.settimeout(5)
        conn, _ = listener.accept()
        conn.close()
        assert client.recv(1) == b""  # accepted, then closed by the server


def test_no_processes_is_refused() -> None:
    with pytest.raises(ListenError, match="at least one process"):
        listen("127.0.0.1", 0, 0)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
@pytest.mark.parametrize("processes", [1, 2])
def test_another_user_cannot_take_the_port(processes: int) -> None:
    """A tenant's database server runs as its own user: from the moment the service has its
    sockets (before it serves), it can neither bind into the group on the API's port nor
    listen beside it, and so cannot take a share of the connections."""
    listeners = listen("127.0.0.1", 0, processes)
    try:
        port = listeners[0].getsockname()[1]
        joined = subprocess.run(
            ["/usr/bin/python3", "-c", JOIN_GROUP, str(port)],  # readable by any user
            user="nobody",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert joined.stdout.strip() == "refused refused", joined.stdout + joined.stderr
    finally:
        for sock in listeners:
            sock.close()


JOIN_GROUP = """
import socket, sys
results = []
for reuse_port in (True, False):  # into the group, or beside it with SO_REUSEADDR alone
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        s.bind(("127.0.0.1", int(sys.argv[1])))
        s.listen()
    except OSError:
        results.append("refused")
    else:
        results.append("joined")
print(" ".join(results))
"""


class _StandInProcess:
    """Stands in for uvicorn's worker ``Process`` in the supervisor's bookkeeping (the
    listeners and the kernel's routing between them are real); ``failed`` makes it one
    whose application could not start."""

    def __init__(self, failed: bool = False) -> None:
        self.alive = not failed
        self.exitcode = STARTUP_FAILURE if failed else None
        self.pid = os.getpid()

    def is_alive(self, timeout: float = 5) -> bool:
        return self.alive

    def is_ready(self, timeout: float = 5) -> bool:
        return self.alive

    def wait_until_ready(self, *_args: object) -> bool:
        return True

    def kill(self) -> None:
        self.alive = False

    def terminate(self) -> None:
        self.alive = False

    def join(self) -> None:
        pass


def test_a_restart_of_every_process_routes_to_a_slot_waiting_for_its_retry_again() -> None:
    """SIGHUP while one slot's replacement waits for its next try (its listener out of the
    group's routing): the restart starts a process there too, and new connections reach it
    again, not only when it happens to fail again."""
    import uvicorn

    from strongroom.api.server import SocketPerProcess

    listeners = listen("127.0.0.1", 0, 2)
    port = listeners[0].getsockname()[1]
    supervisor = SocketPerProcess(uvicorn.Config("strongroom.asgi:create", workers=2), listeners)
    starts: list[bool] = [False, False, True]  # the third process fails to start
    supervisor._start = lambda slot: _StandInProcess(failed=starts.pop(0))  # type: ignore[method-assign]
    try:
        supervisor.init_processes()
        supervisor.keep_subprocess_alive()
        assert supervisor.served
        supervisor.processes[0].alive = False  # dies; its replacement fails to start
        supervisor.keep_subprocess_alive()
        supervisor.keep_subprocess_alive()
        assert 0 in supervisor._retry_at
        assert _accepted_by_each(listeners, port, 20) == [0, 20]
        starts.extend([False, False])
        supervisor.restart_all()  # SIGHUP
        assert not supervisor._retry_at
        accepted = _accepted_by_each(listeners, port, 20)
        assert min(accepted) >= 2, accepted  # an even split is 10 each
    finally:
        for sock in listeners:
            sock.close()
