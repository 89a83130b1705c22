"""Client messages as Python values for the application's hooks, and back to JSON.

The core reads a batch without building values: numbers and strings stay as the client wrote
them. Python's json module cannot always give them back: a number beyond a float's range
becomes ``inf`` and would be written ``Infinity`` (not JSON), and an integer of more than 4,300
digits is refused. So a message the hooks leave alone goes on as the client's own text, exactly
as on the fast path, and one they change is written by :func:`dumps`, which keeps such numbers'
text. Which messages the hooks see at all is the core's call (``Engine.split``): only those it can
read as messages, and those nest no deeper than Python's reader can follow.
"""

from __future__ import annotations

import json
import math
from typing import Any

_COMPACT = (",", ":")


class ExactNumber(float):
    """A number Python cannot hold exactly (beyond a float's range, or an integer too long for
    ``int()``): to the hooks a float (``inf`` or ``-inf``), written back as the client wrote it."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> ExactNumber:
        number = super().__new__(cls, text)
        number.text = text
        return number


def _int(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:  # more digits than int() converts (sys.get_int_max_str_digits)
        return ExactNumber(text)


def _float(text: str) -> float:
    number = float(text)
    return number if math.isfinite(number) else ExactNumber(text)


def read(raw: bytes) -> tuple[Any, str]:
    """A JSON text the core has read, as Python values (numbers Python cannot hold exactly as
    :class:`ExactNumber`), and as :func:`dumps` writes them."""
    try:
        value = json.loads(raw)
        return value, json.dumps(value, allow_nan=False, separators=_COMPACT)
    except ValueError:
        # Rare: a number beyond a float's range (read as inf above), or too long an integer.
        value = json.loads(raw, parse_int=_int, parse_float=_float)
        return value, _write(value)


def dumps(value: Any) -> str:
    """``value`` as compact JSON; an :class:`ExactNumber` as its text. Anything else JSON cannot
    hold (a non-finite float, a set) raises."""
    try:
        return json.dumps(value, allow_nan=False, separators=_COMPACT)
    except ValueError:
        if not _holds_exact_number(value):
            raise
        return _write(value)


def _holds_exact_number(value: Any) -> bool:
    if isinstance(value, ExactNumber):
        return True
    if isinstance(value, dict):
        return any(_holds_exact_number(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_holds_exact_number(item) for item in value)
    return False


def _write(value: Any) -> str:
    if isinstance(value, ExactNumber):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(_key(key) + _write(item) for key, item in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_write(item) for item in value) + "]"
    return json.dumps(value, allow_nan=False, separators=_COMPACT)


def _key(key: Any) -> str:
    """``"key":`` as json writes a key (a number, bool or None made into a string)."""
    return json.dumps({key: 0}, separators=_COMPACT)[1:-2]


class TrackedMessage:
    """A message as the core wrote or read it, and the value the hooks see and may change."""

    __slots__ = ("_before", "raw", "value")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.value: Any
        self.value, self._before = read(raw)

    def text(self) -> bytes:
        """The message as it goes on: the client's own text unless the hooks changed it."""
        after = dumps(self.value)
        return self.raw if after == self._before else after.encode()
