"""Which user and database names a create-instance request may ask for.

A requested user becomes a login role with the given password. Were it one of the server's
own roles (``postgres``, the ``pg_*`` predefined roles) it would hand the tenant the
superuser or a privileged role; so such names, the service's own, and names PostgreSQL
would silently cut (over 63 bytes) or cannot hold are refused before anything is made.
A role that already exists (a restore's) is never altered: see ``_apply_request``.
"""

from __future__ import annotations

from strongroom.engines.base import InstanceRequest
from strongroom.engines.errors import InvalidRequestError

NAMEDATALEN = 64  # PostgreSQL keeps 63 bytes of a name and cuts the rest
RESERVED_USERS = frozenset({"postgres", "public", "none", "current_user", "session_user"})
RESERVED_USER_PREFIXES = ("pg_", "strongroom")  # predefined roles; the service's own
RESERVED_DATABASES = frozenset({"postgres", "template0", "template1"})


def _malformed(name: str) -> str | None:
    if not name:
        return "is empty"
    if len(name.encode("utf-8", "surrogatepass")) >= NAMEDATALEN:
        return f"is longer than {NAMEDATALEN - 1} bytes"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "holds a control character"
    return None


def check_user(name: str) -> None:
    problem = _malformed(name)
    if problem is not None:
        raise InvalidRequestError(f"user name {name!r} {problem}")
    lowered = name.lower()
    if lowered in RESERVED_USERS or lowered.startswith(RESERVED_USER_PREFIXES):
        raise InvalidRequestError(f"user name {name!r} is reserved")


def check_database(name: str) -> None:
    problem = _malformed(name)
    if problem is not None:
        raise InvalidRequestError(f"database name {name!r} {problem}")
    if name.lower() in RESERVED_DATABASES:
        raise InvalidRequestError(f"database name {name!r} is reserved")


def check_request(request: InstanceRequest) -> None:
    """Raise ``InvalidRequestError`` for the first name the request may not use."""
    for database in request.databases:
        check_database(database.name)
    for user in request.users:
        check_user(user.name)
        for db in user.databases:
            check_database(db)
