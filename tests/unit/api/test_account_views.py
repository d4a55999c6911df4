"""A user's ``name@host`` in a URL, read as Trove reads it."""

from __future__ import annotations

from urllib.parse import quote, unquote

import pytest

from strongroom.api.account_views import user_and_host


def troveclient_quote(name: str, host: str | None) -> str:
    """troveclient's common.quote_user_host."""
    quoted = quote(f"{name}@{host}") if host else quote(name)
    return quoted.replace(".", "%2e")


@pytest.mark.parametrize(
    ("name", "host", "expected"),
    [
        ("clerk", None, ("clerk", "%")),
        ("clerk", "%", ("clerk", "%")),
        ("web", "10.0.0.%", ("web", "10.0.0.%")),
        ("a.b", "db.example.com", ("a.b", "db.example.com")),
        ("mail@home", "%", ("mail@home", "%")),
    ],
)
def test_user_and_host_reads_what_troveclient_sends(
    name: str, host: str | None, expected: tuple[str, str]
) -> None:
    # The server decodes the path before routing, as Trove's unquote does.
    assert user_and_host(unquote(troveclient_quote(name, host))) == expected


def test_a_trailing_at_means_any_host() -> None:
    assert user_and_host("clerk@") == ("clerk@", "%")
