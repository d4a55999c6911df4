"""How the service's log lines look: time, level, logger, message, then the ids a line is
about (``extra={"backup_id": …, "project_id": …}``) as ``key=value`` pairs."""

from __future__ import annotations

import logging

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


class ContextFilter(logging.Filter):
    """Renders the context fields of a record as ``[project_id=… backup_id=…]``."""

    def filter(self, record: logging.LogRecord) -> bool:
        pairs = [
            f"{name}={value}"
            for name in CONTEXT_FIELDS
            if (value := getattr(record, name, None)) is not None
        ]
        record.context = f" [{' '.join(pairs)}]" if pairs else ""
        return True


def configure(level: int = logging.INFO) -> None:
    """Every log line goes to standard error in FORMAT."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
