"""Logs: what an operator reads of the server's life, as uvicorn logs its own.

``starlette_cometd.sessions`` logs one line per session lifecycle event at INFO (a handshake, an
end with its reason), nothing per message; ``starlette_cometd`` and ``starlette_cometd.cluster``
log what goes wrong. ``log_config`` is the CLI's logging configuration: uvicorn's own, with
these loggers beside uvicorn's, as text or one JSON object per line."""

from __future__ import annotations

import copy
import json
import logging
from datetime import UTC, datetime
from typing import Any

from uvicorn.config import LOGGING_CONFIG

sessions_log = logging.getLogger("starlette_cometd.sessions")


def log_session_events(events: list[tuple[str, str, Any]]) -> None:
    """One INFO line per session made or ended among a batch's events."""
    for kind, client_id, detail in events:
        if kind == "session_added":
            sessions_log.info("session %s: handshake", client_id)
        elif kind == "session_removed":
            sessions_log.info("session %s: ended (%s)", client_id, detail)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, and the
    exception's traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def log_config(level: str, fmt: str) -> dict[str, Any]:
    """uvicorn's logging configuration with this package's loggers at ``level`` beside its
    own, as ``fmt`` ("text" or "json") says."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["starlette_cometd"] = {
        "handlers": ["default"],
        "level": level.upper() if level != "trace" else "DEBUG",
        "propagate": False,
    }
    # Every other library's warnings (asyncio's, redis-py's) in the same format.
    config["root"] = {"handlers": ["default"], "level": "WARNING"}
    if fmt == "json":
        for formatter in config["formatters"].values():
            formatter.clear()
            formatter["()"] = "starlette_cometd.logs.JsonFormatter"
    return config
