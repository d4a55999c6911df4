"""A wait on a server that ends, for every engine: a server, or a stand-in its owner put
on its socket, may accept a connection and then never answer, or answer a byte at a time.
Timeouts the server enforces do not cover that, nor does a client's timeout on each read
(every byte starts it again); the client cuts the connection itself."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def answered_within(
    fd: int, seconds: float, *, error: Callable[[str], Exception]
) -> Iterator[None]:
    """Shut the connection on socket ``fd`` down if the block takes over ``seconds``: a
    call waiting on it then fails at once. Raises ``error`` (made from a message saying
    so) when that happened."""
    # A descriptor of its own: the client may close ``fd`` within the block and its number
    # go to another file, which the cut must never reach.
    held = socket.socket(fileno=os.dup(fd))
    lock = threading.Lock()
    state = {"done": False, "cut": False}

    def cut() -> None:
        with lock:
            if state["done"]:
                return
            state["cut"] = True
            with contextlib.suppress(OSError):
                held.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(seconds, cut)
    timer.daemon = True
    timer.start()
    try:
        yield
    except Exception as exc:
        if state["cut"]:
            raise error(f"the server did not answer within {seconds:.0f} s") from exc
        raise
    finally:
        with lock:
            state["done"] = True
        timer.cancel()
        held.close()
