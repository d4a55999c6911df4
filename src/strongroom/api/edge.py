"""What the HTTP edge allows one client and one project: read from the settings by the
command line, given to the application and the server."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EdgeSettings:
    header_timeout: float = 10.0  # seconds to send a request's headers, then closed
    max_connections: int = 4096  # open connections per process; beyond, refused
    blocking_threads: int = 16  # threads for calls that may block
    blocking_threads_per_project: int = 4
    blocking_wait_seconds: float = 30.0
    body_timeout: float = 30.0  # seconds to send a request's body, then 408
    access_log: bool = True  # one log line per request (api.access)
    # The dashboard's cookies carry Secure when the request came over https, or always with
    # this on: behind a proxy that ends TLS, the service itself sees http.
    secure_cookies: bool = False
