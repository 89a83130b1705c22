"""A session's attributes as a cluster keeps them: in the session's record, one hash field per
attribute (``t:<name>``, its value as JSON), so that processes changing different attributes
of one session at once do not undo each other's changes, and a write sends only what changed.

A session object (``ServerSession``) remembers in ``stored`` each attribute's JSON as last
written or read: what differs from it is what the process changed."""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger("starlette_cometd.cluster")

# The prefix of an attribute's field in a session's record.
FIELD = "t:"
# The most bytes a session's attributes may take in its record (names and JSON values).
MAX_BYTES = 64 * 1024


class NotStorable(Exception):
    """A session's attributes cannot be kept in its record: ``error`` is the Bayeux error that
    names the attributes (``500:<names>:session_attribute_not_json`` or
    ``500:<names>:session_attributes_too_large``)."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def encode(value: Any) -> str:
    """An attribute's value as JSON. Raises ``TypeError`` or ``ValueError`` for anything JSON
    cannot carry (an object, a set, NaN)."""
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


def check(attributes: dict[str, Any], stored: dict[str, str], limit: int = MAX_BYTES) -> None:
    """Raises ``NotStorable`` when ``attributes`` cannot be kept in a record, having first put
    the attributes it names back as ``stored`` has them (so that the session stays as it was
    before the refused change)."""
    encoded: dict[str, str] = {}
    refused: list[Any] = []
    for name, value in attributes.items():
        try:
            if not isinstance(name, str):
                raise TypeError("an attribute's name must be a string")
            encoded[name] = encode(value)
        except (TypeError, ValueError):
            refused.append(name)
    if refused:
        _restore(attributes, stored, refused)
        names = ",".join(str(name) for name in refused)
        raise NotStorable(f"500:{names}:session_attribute_not_json")
    size = sum(len(name.encode()) + len(text.encode()) for name, text in encoded.items())
    if size > limit:
        changed = [name for name, text in encoded.items() if stored.get(name) != text]
        _restore(attributes, stored, changed)
        raise NotStorable(f"500:{','.join(changed)}:session_attributes_too_large")


def changes(attributes: dict[str, Any], stored: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The fields to write (changed or new attributes, by field name) and to delete (removed
    attributes). Attributes that cannot be encoded are left out: ``check`` refuses them."""
    written: dict[str, str] = {}
    for name, value in attributes.items():
        try:
            text = encode(value)
        except (TypeError, ValueError):
            continue
        if isinstance(name, str) and stored.get(name) != text:
            written[name] = text
    removed = [name for name in stored if name not in attributes]
    return written, removed


def merge(attributes: dict[str, Any], stored: dict[str, str], fields: dict[bytes, bytes]) -> None:
    """Brings in, in place, what a record holds (``fields``, as ``HGETALL`` returns them): an
    attribute another process set or removed since ``stored`` was taken is set or removed
    here; one changed here and nowhere else keeps its change."""
    found: dict[str, str] = {}
    for field, raw in fields.items():
        if not field.startswith(b"t:"):
            continue
        try:
            name, text = field[2:].decode(), raw.decode()
            value = json.loads(text)
        except ValueError as error:  # not UTF-8 or not JSON: garbage under the key
            log.error("cluster: an attribute that is not JSON in a record (%s)", error)
            continue
        found[name] = text
        if stored.get(name) != text:
            attributes[name] = value
    for name in stored:
        if name not in found:
            attributes.pop(name, None)
    stored.clear()
    stored.update(found)


def _restore(attributes: dict[Any, Any], stored: dict[str, str], names: list[Any]) -> None:
    for name in names:
        if name in stored:
            attributes[name] = json.loads(stored[name])
        else:
            attributes.pop(name, None)
