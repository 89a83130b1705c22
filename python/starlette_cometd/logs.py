"""Logs: what an operator reads of the server's life, as uvicorn logs its own.

``starlette_cometd.sessions`` logs one line per session lifecycle event at INFO (a handshake, an
end with its reason), nothing per message; ``starlette_cometd.errors`` one line per unsuccessful
reply at INFO (the session, the channel, the Bayeux error), at most ``REFUSALS_PER_SECOND`` a
second so that a flood of bad requests cannot flood the log (the metrics count them all);
``starlette_cometd`` and ``starlette_cometd.cluster`` log what goes wrong in the server.

``log_config`` is the CLI's logging configuration: uvicorn's own, with these loggers beside
uvicorn's, as text or one JSON object per line."""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from uvicorn.config import LOGGING_CONFIG

server_log = logging.getLogger("starlette_cometd")
sessions_log = logging.getLogger("starlette_cometd.sessions")
errors_log = logging.getLogger("starlette_cometd.errors")

REFUSALS_PER_SECOND = 20
# What a client wrote is cut to this many characters in a line.
_LONGEST_QUOTED = 200


def log_session_events(events: list[tuple[str, str, Any]]) -> None:
    """One INFO line per session made or ended among a batch's events."""
    for kind, client_id, detail in events:
        extra = {"client_id": client_id}
        if kind == "session_added":
            sessions_log.info("session %s: handshake", client_id, extra=extra)
        elif kind == "session_removed":
            sessions_log.info("session %s: ended (%s)", client_id, detail, extra=extra)


def printable(text: str) -> str:
    """``text``, which a client wrote, fit for one log line: control characters escaped, cut
    to ``_LONGEST_QUOTED`` characters."""
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    return text[:_LONGEST_QUOTED]


class _LinesPerSecond:
    """At most ``limit`` lines a second (in each process); how many were left out is logged in
    the next second, by the next line or by ``flush``, which the sweeper calls every second."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._second = 0
        self._logged = 0
        self._left_out = 0

    def _admit(self) -> bool:
        """Whether one more line fits in this second (else it is counted as left out)."""
        if self._logged >= self._limit:
            self._left_out += 1
            return False
        self._logged += 1
        return True

    def flush(self) -> None:
        """Starts a new second if this one is over, logging how many the last left out."""
        second = int(time.monotonic())
        if second == self._second:
            return
        if self._left_out:
            self._log_left_out(self._left_out)
        self._second, self._logged, self._left_out = second, 0, 0

    def _log_left_out(self, count: int) -> None:
        raise NotImplementedError


class RefusalLog(_LinesPerSecond):
    """Logs unsuccessful replies, at most ``REFUSALS_PER_SECOND`` lines a second."""

    def __init__(self) -> None:
        super().__init__(REFUSALS_PER_SECOND)

    def log(self, refused: Iterable[tuple[str | None, str | None, str]], left_out: int = 0) -> None:
        """Logs ``refused`` (session, channel, error), within the bound; ``left_out`` more
        were not even listed."""
        if not errors_log.isEnabledFor(logging.INFO):
            return
        self.flush()
        self._left_out += left_out
        for client_id, channel, error in refused:
            if not self._admit():
                continue
            client_id = printable(client_id) if client_id is not None else None
            channel = printable(channel) if channel is not None else None
            error = printable(error)
            errors_log.info(
                "session %s: %s refused: %s",
                client_id or "-",
                channel or "a message",
                error,
                extra={"client_id": client_id, "channel": channel, "error": error},
            )

    def _log_left_out(self, count: int) -> None:
        errors_log.info("%d more unsuccessful replies were not logged", count)


class OutageLog(_LinesPerSecond):
    """Logs what met the cluster's Redis away (a request answered unavailable, a delivery or
    attributes not recorded): the first of each second with its error, and how many more there
    were. Thousands of clients retrying while Redis is away write a line a second, not one
    each."""

    def __init__(self) -> None:
        super().__init__(1)

    def log(self, error: BaseException) -> None:
        self.flush()
        if self._admit():
            server_log.warning("the cluster's Redis is unavailable: %s", error)

    def _log_left_out(self, count: int) -> None:
        server_log.warning("the cluster's Redis is unavailable: met %d more times since", count)


class TextFormatter(logging.Formatter):
    """The line uvicorn's default formatter writes (``INFO:     message``), without its copy
    of every record (nor its colours): this package's lines are the busiest."""

    def format(self, record: logging.LogRecord) -> str:
        level = record.levelname
        line = f"{level}:{' ' * (8 - len(level))} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


# What a line may be about, as fields of its JSON object (``extra`` of the logging call).
_FIELDS = ("client_id", "channel", "error")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the session,
    channel and Bayeux error a line is about, and the exception's traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in _FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                line[field] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def skip_unused_record_fields() -> None:
    """Stops every log record from reading what no formatter of ``log_config`` writes: the
    process and thread ids and names, and the caller's file and line (Python's logging
    HOWTO, "Optimization"). Each is a system call or a walk up the stack per line: on this
    project's benchmark machine they were most of a session's logging cost. For the CLI,
    which owns its process; an application keeps Python's defaults."""
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # the HOWTO's own advice


def log_config(level: str, fmt: str) -> dict[str, Any]:
    """uvicorn's logging configuration with this package's loggers at ``level`` beside its
    own, as ``fmt`` ("text" or "json") says."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["starlette_cometd"] = {"()": "starlette_cometd.logs.TextFormatter"}
    config["handlers"]["starlette_cometd"] = {
        **config["handlers"]["default"],
        "formatter": "starlette_cometd",
    }
    config["loggers"]["starlette_cometd"] = {
        "handlers": ["starlette_cometd"],
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
