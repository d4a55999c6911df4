"""How the service's log lines look: time, level, logger, message, then the ids a line is
about (``extra={"backup_id": …, "project_id": …}``) as ``key=value`` pairs."""

from __future__ import annotations

import logging
from typing import Any

# The fields a log call may pass in ``extra`` to say what the line is about, in this order.
CONTEXT_FIELDS = ("project_id", "instance_id", "backup_id", "job_id")
FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s%(context)s"
# Libraries that say too much at INFO for a command-line tool (alembic: nine lines a run).
QUIET = (
    "alembic",
    "celery",
    "kombu",
    "amqp",
    "botocore",
    "urllib3",
    "swiftclient",
    "httpx",
    "httpcore",
)


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped: a message may quote
    what a tenant chose (a table's name in a tool's error), which must not start a log line
    of its own that reads as the service's."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else control_escaped(char) for char in text)


def control_escaped(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


class ContextFilter(logging.Filter):
    """Renders the context fields of a record as ``[project_id=… backup_id=…]``, and keeps
    the message on its line."""

    def filter(self, record: logging.LogRecord) -> bool:
        pairs = [
            f"{name}={one_line(str(value))}"
            for name in CONTEXT_FIELDS
            if (value := getattr(record, name, None)) is not None
        ]
        record.context = f" [{' '.join(pairs)}]" if pairs else ""
        message = record.getMessage()
        if not message.isprintable():
            record.msg, record.args = one_line(message), None
        return True


class Formatter(logging.Formatter):
    """A traceback's lines are each marked as its own, so text a tenant put in an
    exception's message cannot pass for a log line either."""

    def formatException(self, ei: Any) -> str:
        return _marked(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _marked(super().formatStack(stack_info))


def _marked(text: str) -> str:
    return "\n".join(f"  | {one_line(line)}" for line in text.splitlines())


def configure(level: int = logging.INFO) -> None:
    """Every log line goes to standard error in FORMAT."""
    handler = logging.StreamHandler()
    handler.setFormatter(Formatter(FORMAT))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
