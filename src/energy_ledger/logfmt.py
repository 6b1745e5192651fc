"""Log formats for the handlers the command line sets up (``--log-format text|json``).

Only ``cli`` imports this: library modules, the daemon's included, just get loggers.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "t": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(obj).decode()


def text_formatter() -> logging.Formatter:
    """The human-readable format: time, level, logger, message."""
    return logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
