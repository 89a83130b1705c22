"""What the fuzz tests share: the seed and the time budget (from the environment, so that a
failure can be replayed), JSON written by hand (duplicate keys, numbers Python cannot hold,
lone surrogates), and the server's ERROR log records, uvicorn's included.

``FUZZ_SEED=<n>`` replays a run; ``FUZZ_SECONDS=<s>`` fuzzes each case longer (or shorter)."""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

DEFAULT_SEED = 20240610


def seed() -> int:
    return int(os.environ.get("FUZZ_SEED", str(DEFAULT_SEED)))


def seconds(default: float) -> float:
    """How long one fuzz case runs: ``default``, or ``FUZZ_SECONDS``."""
    return float(os.environ.get("FUZZ_SECONDS", str(default)))


def case_rng(*names: object) -> random.Random:
    """The random generator of one case, from the run's seed and the case's names, so that
    each case replays alone."""
    return random.Random(f"{seed()}/{'/'.join(map(str, names))}")


# --- JSON written by hand ---------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text written as it is: ``1e999``, ``-0``, 5,000 digits, or not JSON at all."""

    text: str


@dataclass(frozen=True)
class Obj:
    """An object as a list of fields, so that a key may come twice."""

    fields: list[tuple[str, Any]]


def write(value: Any, ascii_only: bool = True) -> str:
    """``value`` as JSON text; lone surrogates stay lone (escaped, or raw when not
    ``ascii_only``, which then cannot be UTF-8)."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Obj):
        fields = (
            json.dumps(key, ensure_ascii=ascii_only) + ":" + write(item, ascii_only)
            for key, item in value.fields
        )
        return "{" + ",".join(fields) + "}"
    if isinstance(value, dict):
        return write(Obj(list(value.items())), ascii_only)
    if isinstance(value, list):
        return "[" + ",".join(write(item, ascii_only) for item in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def strict_loads(text: bytes | str) -> Any:
    """JSON as the server must write it: ``NaN`` and ``Infinity`` are refused, numbers are read
    exactly (as decimals: no overflow, no limit on digits)."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_float=Decimal, parse_int=Decimal, parse_constant=refuse)


def encode(text: str) -> bytes:
    """UTF-8, except that lone surrogates are encoded as if they were characters."""
    return text.encode("utf-8", "surrogatepass")


# --- Errors logged ---------------------------------------------------------------------------


@contextmanager
def error_records() -> Iterator[list[logging.LogRecord]]:
    """Collects every record logged at ERROR or above during the block, uvicorn's too (its
    loggers do not propagate to the root logger that pytest's caplog watches)."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(logging.ERROR)
    loggers = [logging.getLogger(), logging.getLogger("uvicorn")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield records
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def describe(records: list[logging.LogRecord]) -> list[str]:
    """Each record with its traceback, if it has one."""
    formatter = logging.Formatter("%(name)s: %(message)s")
    return [formatter.format(record) for record in records]
