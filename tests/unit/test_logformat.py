"""Log lines carry the ids passed in ``extra``, in a fixed order, and nothing else."""

from __future__ import annotations

import logging
import sys

from strongroom.api.access import printable, shown_query
from strongroom.logformat import FORMAT, ContextFilter, Formatter


def render(**extra: object) -> str:
    record = logging.LogRecord("strongroom.x", logging.INFO, __file__, 1, "backup done", (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    ContextFilter().filter(record)
    return logging.Formatter(FORMAT).format(record)


def test_ids_are_rendered_after_the_message() -> None:
    line = render(backup_id="b1", project_id="p1", job_id="j1", unrelated="x")
    assert line.endswith("backup done [project_id=p1 backup_id=b1 job_id=j1]")


def test_a_line_without_ids_is_plain() -> None:
    assert render().endswith("strongroom.x backup done")
    assert render(instance_id=None).endswith("backup done")


def test_access_lines_hide_secret_query_values_and_control_characters() -> None:
    assert shown_query(b"limit=1&token=abc&X-Auth-Key=k&marker=2") == (
        "limit=1&token=***&X-Auth-Key=***&marker=2"
    )
    assert printable("/a\nb\x1b[31m") == "/a\\x0ab\\x1b[31m"
    assert printable("/plain/path-1") == "/plain/path-1"


def test_access_lines_cannot_be_forged_with_backslashes_quotes_or_unicode_breaks() -> None:
    # A client's own "\x0a" must not read like an escaped line break.
    assert printable("/a\\x0ab") == "/a\\\\x0ab"
    assert printable("/a\nb") != printable("/a\\x0ab")
    assert printable('/a" 200 0.1 ms') == "/a\\x22 200 0.1 ms"
    assert printable("/a\u2028b\u0085c\U000e0001") == "/a\\u2028b\\x85c\\U000e0001"
    for hostile in ("/a\\x0ab", "/\u2028", '/"', "/\r\n", "/\x00"):
        shown = printable(hostile)
        assert shown.isprintable() and '"' not in shown and len(shown.splitlines()) == 1


def test_a_message_quoting_a_tenants_text_stays_on_its_line() -> None:
    forged = "x\n2026-12-07 10:00:00,000 ERROR strongroom.api done [project_id=victim]\r\u2028"
    record = logging.LogRecord(
        "strongroom.x", logging.WARNING, __file__, 1, "drill failed: %s", (forged,), None
    )
    record.backup_id = "b\n1"
    ContextFilter().filter(record)
    line = Formatter(FORMAT).format(record)
    assert len(line.splitlines()) == 1
    assert "x\\x0a2026-12-07" in line and line.endswith("\\x0d\\u2028 [backup_id=b\\x0a1]")


def test_a_tracebacks_lines_are_marked_as_its_own() -> None:
    try:
        raise RuntimeError("first\n2026-12-07 10:00:00,000 ERROR strongroom.api forged")
    except RuntimeError:
        record = logging.LogRecord(
            "strongroom.x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    ContextFilter().filter(record)
    lines = Formatter(FORMAT).format(record).splitlines()
    assert lines[0].endswith("strongroom.x failed")
    assert all(line.startswith("  | ") for line in lines[1:]) and len(lines) > 2
    assert any("forged" in line for line in lines[1:])
