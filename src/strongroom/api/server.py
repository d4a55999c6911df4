"""Serving the application with uvicorn: in this process (`serve`) or in worker processes
(`api`), with the same HTTP settings."""

from __future__ import annotations

import ctypes
import errno
import logging
import multiprocessing
import os
import resource
import signal
import socket
import struct
import time
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from strongroom.api.edge import EdgeSettings
from strongroom.api.protocol import EdgeConfig

log = logging.getLogger(__name__)

# asyncio's own event loop rather than uvloop: under 32 keep-alive clients uvloop served
# the connections unevenly, a p99 five times the median at the same throughput (seen with
# a bare ASGI app as well), where asyncio's loop keeps the p99 within about 10 %.
# No proxy headers: a client must not choose the scheme or the address the service sees.
HTTP_SETTINGS: dict[str, Any] = {
    "log_level": "warning",
    "timeout_keep_alive": 5,
    "loop": "asyncio",
    "proxy_headers": False,
    "server_header": False,
    "log_config": None,  # the service's own log format (strongroom.logformat)
    "access_log": False,  # api.access writes one line per request, without tokens
}


PR_SET_PDEATHSIG = 1  # prctl(2)


def stop_with_supervisor() -> bool:
    """In a worker process: have the kernel send it SIGTERM when the process that started
    it dies. A supervisor killed outright (SIGKILL, the OOM killer) cannot stop its workers
    itself, and they kept serving: holding the port against a new start, and, under
    `serve --workers`, taking requests whose jobs no process would run. Returns False when
    that process is gone already (the caller should exit), True otherwise, and True outside
    a worker process or where prctl is missing."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return True
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # the process's own libc
    except (OSError, AttributeError):
        prctl = None
    if prctl is None or prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("this API process will not stop by itself if its supervisor is killed")
        return True
    return os.getppid() == parent.pid  # it died before the request: no signal will come


def raise_open_file_limit() -> int:
    """Raise this process's open-file limit to its hard limit (connections are files);
    returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-file limit from %d to %d: %s", soft, wanted, exc)
        return soft
    return wanted


class ListenError(Exception):
    """The address cannot be listened on; the message says why in one line."""


BACKLOG = 2048  # uvicorn's default: connections the kernel queues before one is accepted


def listen(host: str, port: int, processes: int = 1) -> list[socket.socket]:
    """Listening TCP sockets on ``host:port``, one per serving process (IPPROTO_TCP, so that
    accepted connections get TCP_NODELAY; see ``tcp_listener``). They listen before anything
    else starts: a port in use is reported at once and alone, and no one can take the port
    while the service starts (connections wait in the backlog until it serves).

    Several processes get one socket each in an SO_REUSEPORT group, and the kernel spreads
    new connections over them. Sharing one socket instead, the first process to wake
    accepted a whole burst of connections (asyncio accepts up to the backlog at a time) and
    kept them, keep-alive, while the others idled. The first socket is bound exclusively, so
    a port held by anyone is refused. A group admits only sockets of the same user that ask
    for SO_REUSEPORT, so a tenant's server running as another user cannot join; and a
    program attached to the group (``pick_members``) hands each connection to one of the
    first ``processes`` members, ours, so a process of the service's own user that merely
    joins later receives nothing. (One that attaches a program of its own replaces ours:
    the service's user is trusted, as it reads the master key anyway.)"""
    if processes < 1:
        raise ListenError(f"the API needs at least one process, not {processes}")
    first = _bind(host, port, reuse_port=False)
    sockets = [first]
    try:
        if processes > 1:
            first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            port = first.getsockname()[1]  # the one chosen, for port 0
        first.listen(BACKLOG)
        for _ in range(processes - 1):
            sockets.append(_bind(host, port, reuse_port=True))
            sockets[-1].listen(BACKLOG)
        if processes > 1:
            pick_members(first, list(range(processes)))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _bind(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(f"port {port} on {host} is already in use") from None
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


# A classic BPF program for the group (SO_ATTACH_REUSEPORT_CBPF): the connection's hash
# modulo the number of members picked chooses one of them, by its index in the group;
# members join in the order they listen, so ours are the first. Attaching another
# program to any member replaces the group's.
SO_ATTACH_REUSEPORT_CBPF = 51
_LOAD_RXHASH = (0x20, 0, 0, (-0x1000 + 32) & 0xFFFFFFFF)  # A = skb hash (SKF_AD_RXHASH)
_RETURN_A = (0x16, 0, 0, 0)


def pick_members(member: socket.socket, picked: list[int]) -> None:
    """Hand new connections to the group's members ``picked`` (indexes) only."""
    program = [_LOAD_RXHASH, (0x94, 0, 0, len(picked))]  # A %= len(picked)
    if picked == list(range(len(picked))):
        program.append(_RETURN_A)
    else:  # if A == i: return picked[i]
        for i, index in enumerate(picked):
            program += [(0x15, 0, 1, i), (0x06, 0, 0, index)]
        program.append((0x06, 0, 0, picked[0]))
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in program))
    fprog = struct.pack("HL", len(program), ctypes.addressof(code))  # struct sock_fprog
    try:
        member.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError as exc:
        raise ListenError(
            f"cannot keep the API's port to its own processes {picked}: {exc.strerror or exc}"
        ) from None


def serve_app(app: FastAPI, *, listener: socket.socket, edge: EdgeSettings | None = None) -> bool:
    """Serve until stopped; False when the application failed to start."""
    raise_open_file_limit()
    host, port = listener.getsockname()[:2]
    config = EdgeConfig(app, edge=edge or EdgeSettings(), host=host, port=port, **HTTP_SETTINGS)
    return _run_server(uvicorn.Server(config), [listener])


def _run_server(server: uvicorn.Server, sockets: list[socket.socket]) -> bool:
    try:
        server.run(sockets=sockets)
    except SystemExit as exc:  # uvicorn's STARTUP_FAILURE (the factory's, or a lifespan's)
        if exc.code != STARTUP_FAILURE:
            raise
    return server.started


def serve_workers(
    factory: str, *, listeners: list[socket.socket], edge: EdgeSettings | None = None
) -> bool:
    """``factory`` (``module:function``) builds the application in each worker process, one
    per listener (see ``listen``). Serves until stopped; False when a process failed to
    start (the factory exits with uvicorn's ``STARTUP_FAILURE``), which stops them all."""
    raise_open_file_limit()  # inherited by the worker processes
    host, port = listeners[0].getsockname()[:2]
    config = EdgeConfig(
        factory,
        edge=edge or EdgeSettings(),
        factory=True,
        host=host,
        port=port,
        workers=len(listeners),
        **HTTP_SETTINGS,
    )
    if len(listeners) > 1:
        supervisor = SocketPerProcess(config, listeners)
        supervisor.run()
        return not supervisor.startup_failed
    return _run_server(uvicorn.Server(config), listeners)


class SocketPerProcess(Multiprocess):
    """uvicorn's supervisor, with each worker process serving its own listener: a process
    that dies is replaced on the same one, so the connections the kernel queued on it are
    served by the replacement. The number of processes is fixed (no SIGTTIN/SIGTTOU).

    A process that fails to start (exit code ``STARTUP_FAILURE``) before every process has
    been ready once stops them all: the next would fail the same way. Later, the others
    keep serving, new connections go to them only, and its replacement is tried again
    after 1 s, doubling up to a minute (a store refusing its credentials for a while must
    not take the API down)."""

    RETRY_LIMIT = 60.0

    def __init__(self, config: uvicorn.Config, listeners: list[socket.socket]) -> None:
        super().__init__(config, sockets=[])
        self.listeners = listeners
        self.startup_failed = False
        self.served = False  # every process has been ready once
        self._retry_at: dict[int, float] = {}  # slot → when to try a failed start again
        self._delay: dict[int, float] = {}

    def _start(self, slot: int) -> Process:
        process = Process(self.config, [self.listeners[slot]])
        process.start()
        return process

    def init_processes(self) -> None:
        self.processes = [self._start(slot) for slot in range(len(self.listeners))]

    def keep_subprocess_alive(self) -> None:
        for slot, process in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                if slot in self._delay and process.is_ready(timeout=1):
                    del self._delay[slot]  # started at last: a later failure waits 1 s again
                    log.info("API process %s started after failed starts", process.pid)
                continue
            retry_at = self._retry_at.get(slot)
            if retry_at is not None:  # a failed start, waiting for its next try
                if time.monotonic() >= retry_at:
                    del self._retry_at[slot]
                    self._route_to_live()  # its connections wait until it is ready
                    self.processes[slot] = self._start(slot)
                continue
            process.kill()  # hung, or already gone
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                if not self.served:  # would fail the same way again
                    log.error("API process %s failed to start; stopping", process.pid)
                    self.startup_failed = True
                    self.should_exit.set()
                    return
                delay = min(2 * self._delay.get(slot, 0.5), self.RETRY_LIMIT)
                self._delay[slot] = delay
                self._retry_at[slot] = time.monotonic() + delay
                self._route_to_live()
                log.error("API process %s failed to start; another in %.0f s", process.pid, delay)
                continue
            log.warning("API process %s died; starting another", process.pid)
            self._delay.pop(slot, None)
            self.processes[slot] = self._start(slot)
        if not self.served and all(process.is_ready(timeout=1) for process in self.processes):
            self.served = True
            log.info("all %d API processes ready", len(self.processes))

    def _route_to_live(self) -> None:
        """New connections to the slots that are not waiting for another try (to all, if
        none is left): a slot without a process would hold them in its backlog."""
        live = [slot for slot in range(len(self.listeners)) if slot not in self._retry_at]
        if len(self.listeners) > 1:
            try:
                pick_members(self.listeners[0], live or list(range(len(self.listeners))))
            except ListenError as exc:
                log.error("%s", exc)

    def restart_all(self) -> None:  # SIGHUP: each replacement serves before the old one stops
        for slot, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = self._start(slot)
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                if not self.should_exit.is_set():
                    log.error("API process %s was not ready in time; keeping %s", new.pid, old.pid)
                return
            old.terminate()
            old.join()
            self.processes[slot] = new
            if self._retry_at.pop(slot, None) is not None:  # it was waiting for its retry
                self._delay.pop(slot, None)
                self._route_to_live()  # it serves: connections go to it again

    def handle_ttin(self) -> None:
        log.info("the number of API processes is fixed at start (--workers)")

    handle_ttou = handle_ttin


def tcp_listener(sock: socket.socket) -> socket.socket:
    """The same listening descriptor, with its protocol recorded as TCP.

    uvicorn binds the socket it shares with its workers with protocol 0. Accepted
    connections inherit that, and asyncio sets TCP_NODELAY only on sockets that say
    IPPROTO_TCP, so Nagle's algorithm stayed on and every keep-alive response waited for
    the client's delayed ACK: 44 ms per request (uvicorn issue #3149)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.proto:
        return sock
    labelled = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
    labelled.set_inheritable(True)
    return labelled
