"""Random and mutated Bayeux batches, and the shape every reply to them must have.

A batch starts as valid messages of every meta channel and publishes, then is mutated: fields
deleted, retyped, duplicated or made huge, client ids that are wrong or someone else's, random
channels, ext and advice, nested data, numbers and strings Python does not round-trip, and
batches mixing good messages with bad ones, truncated or not JSON at all."""

from __future__ import annotations

import random
import re
import string
from typing import Any

from support.fuzz import Obj, Raw, encode, write

CHANNELS = [
    "/fuzz",
    "/fuzz/a",
    "/fuzz/a/b",
    "/fuzz/*",
    "/fuzz/**",
    "/**",
    "/*",
    "/meta/handshake",
    "/meta/connect",
    "/meta/foo",
    "/meta/*",
    "/service/echo",
    "/service/other",
    "/service/**",
    "",
    "/",
    "//",
    "fuzz",
    "/fuzz/",
    "/fuzz//a",
    "/fu zz",
    "/fuzz/\u00e9",
    "/fuzz/\ud800",
    "/fuzz/\x00",
    "/fuzz/{x}",
    "/fuzz/a*",
    "/fuzz/**/a",
]
NUMBERS = ["1e999", "-1e400", "-0", "1E5", "0.1e1", "1.50", "9" * 400, "-" + "7" * 5000, "2e-400"]
STRINGS = [
    "",
    "x",
    "\u00e9t\u00e9",
    "\ud800",
    "\udfff\ud800",
    "\ud83d\ude00",
    "a\x00b",
    "\x7f",
    "\u2028",
]
CONNECTION_TYPES = ["long-polling", "callback-polling", "websocket", "iframe", ""]


class BatchMaker:
    """Makes batches for one client. ``sessions`` are client ids the server gave this client
    (kept up to date by the caller); ``others`` are ids it must not be able to use."""

    def __init__(self, rng: random.Random, transport: str, others: list[str]) -> None:
        self.rng = rng
        self.transport = transport
        self.sessions: list[str] = []
        self.others = others

    # Values

    def client_id(self) -> Any:
        rng = self.rng
        roll = rng.random()
        if roll < 0.6 and self.sessions:
            return rng.choice(self.sessions)
        if roll < 0.7 and self.others:
            return rng.choice(self.others)
        return rng.choice(
            [
                "".join(rng.choice("0123456789abcdef") for _ in range(40)),
                "".join(rng.choice("0123456789ABCDEF") for _ in range(40)),
                "0" * 39,
                "\ud800" * 40,
                "\u00e9" * 20,
                self.sessions[0][:-1] + "\u00e9" if self.sessions else "",
                Raw(rng.choice(NUMBERS)),
                None,
            ]
        )

    def channel(self) -> str:
        rng = self.rng
        if rng.random() < 0.8:
            return rng.choice(CHANNELS)
        segments = rng.randint(1, 6 if rng.random() < 0.9 else 300)
        alphabet = string.ascii_letters + string.digits + "!#$()*+-._@{}~ /\u00e9"
        return "".join(
            "/" + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
            for _ in range(segments)
        )

    def value(self, depth: int = 0) -> Any:
        rng = self.rng
        kinds = ["null", "bool", "int", "float", "number", "string", "list", "object"]
        kind = rng.choice(kinds if depth < 4 else kinds[:6])
        if kind == "null":
            return None
        if kind == "bool":
            return rng.random() < 0.5
        if kind == "int":
            return rng.choice([0, 1, -1, 2**53, 2**64, -(2**63) - 1, rng.randint(-1000, 1000)])
        if kind == "float":
            return rng.choice([0.5, -0.0, 1e300, 5e-324, rng.random()])
        if kind == "number":
            return Raw(rng.choice(NUMBERS))
        if kind == "string":
            return self.string()
        if kind == "list":
            return [self.value(depth + 1) for _ in range(rng.randint(0, 4))]
        return Obj([(self.string(), self.value(depth + 1)) for _ in range(rng.randint(0, 4))])

    def string(self) -> str:
        rng = self.rng
        if rng.random() < 0.5:
            return rng.choice(STRINGS)
        return "".join(
            rng.choice(string.printable + "\u00e9\u4e2d\ud800") for _ in range(rng.randint(0, 20))
        )

    def nested(self) -> Raw:
        """A value nested around the depth limits (data 128, a message 256) or far beyond."""
        depth = self.rng.choice([3, 50, 127, 128, 129, 254, 255, 256, 300, 2000])
        inner = write(self.value(4))
        if self.rng.random() < 0.5:
            return Raw("[" * depth + inner + "]" * depth)
        return Raw('{"k":' * depth + inner + "}" * depth)

    def huge(self) -> str:
        return "x" * self.rng.choice([1000, 30_000, 200_000])

    def ext(self) -> Any:
        rng = self.rng
        return rng.choice(
            [
                {"ack": rng.choice([True, False, 0, 7, -1, "x", 2**70])},
                {"timesync": {"tc": rng.randint(0, 2**41), "l": 1, "o": 0}},
                {"timesync": {"tc": "x"}},
                self.value(),
            ]
        )

    def advice(self) -> Any:
        rng = self.rng
        return rng.choice(
            [
                {"timeout": rng.choice([0, 10, 100, 1000, -1, 1e999, "x", None])},
                {"interval": 0, "reconnect": "retry"},
                self.value(),
            ]
        )

    # Messages

    def message(self) -> Obj:
        rng = self.rng
        kind = rng.choice(
            ["handshake", "connect", "subscribe", "unsubscribe", "disconnect", "publish", "service"]
        )
        fields: list[tuple[str, Any]] = []
        if kind == "handshake":
            fields += [
                ("channel", "/meta/handshake"),
                ("version", "1.0"),
                ("supportedConnectionTypes", [self.transport, "long-polling"]),
            ]
        elif kind == "connect":
            fields += [
                ("channel", "/meta/connect"),
                ("clientId", self.client_id()),
                ("connectionType", self.transport),
            ]
            if rng.random() < 0.7:
                fields.append(("advice", {"timeout": rng.choice([0, 0, 50])}))
        elif kind in ("subscribe", "unsubscribe"):
            names: Any = (
                self.channel() if rng.random() < 0.6 else [self.channel() for _ in range(3)]
            )
            fields += [
                ("channel", f"/meta/{kind}"),
                ("clientId", self.client_id()),
                ("subscription", names),
            ]
        elif kind == "disconnect":
            fields += [("channel", "/meta/disconnect"), ("clientId", self.client_id())]
        else:
            channel = (
                rng.choice(["/service/echo", "/service/other"])
                if kind == "service"
                else self.channel()
            )
            fields += [("channel", channel), ("clientId", self.client_id()), ("data", self.value())]
        if rng.random() < 0.7:
            fields.append(
                ("id", rng.choice([str(rng.randint(0, 99)), rng.randint(0, 99), self.value()]))
            )
        if rng.random() < 0.2:
            fields.append(("ext", self.ext()))
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
            self.mutate(fields)
        return Obj(fields)

    def mutate(self, fields: list[tuple[str, Any]]) -> None:
        rng = self.rng
        mutation = rng.choice(
            [
                "delete",
                "retype",
                "duplicate",
                "huge",
                "unknown",
                "channel",
                "client",
                "ext",
                "advice",
                "nest",
                "null",
            ]
        )
        index = rng.randrange(len(fields)) if fields else 0
        if mutation == "delete" and fields:
            del fields[index]
        elif mutation == "retype" and fields:
            fields[index] = (fields[index][0], self.value())
        elif mutation == "duplicate" and fields:
            fields.append(
                (fields[index][0], self.value() if rng.random() < 0.5 else fields[index][1])
            )
        elif mutation == "huge" and fields:
            fields[index] = (fields[index][0], self.huge())
        elif mutation == "unknown":
            fields.append(
                (
                    rng.choice(["bogus", "", "\ud800", "successful", "error", "timestamp"]),
                    self.value(),
                )
            )
        elif mutation == "channel":
            fields.append(("channel", self.channel()))
        elif mutation == "client":
            fields.append(("clientId", self.client_id()))
        elif mutation == "ext":
            fields.append(("ext", self.ext()))
        elif mutation == "advice":
            fields.append(("advice", self.advice()))
        elif mutation == "nest":
            fields.append(
                (rng.choice(["data", "ext", "advice", "id", "subscription"]), self.nested())
            )
        elif mutation == "null" and fields:
            fields[index] = (fields[index][0], None)

    def batch(self) -> bytes:
        """One request body: mostly a batch of messages, good and bad; sometimes not one."""
        rng = self.rng
        roll = rng.random()
        messages: Any = [self.message() for _ in range(rng.choice([1, 1, 1, 2, 3, 5]))]
        if roll < 0.05:
            messages = []
        elif roll < 0.1:
            messages = messages[0]  # one object, not in an array
        elif roll < 0.15:
            messages = [*messages, self.value()]
        text = encode(write(messages, ascii_only=rng.random() < 0.7))
        roll = rng.random()
        if roll < 0.04:
            return text[: rng.randrange(len(text) + 1)]
        if roll < 0.07:
            flipped = bytearray(text)
            for _ in range(rng.randint(1, 3)):
                flipped[rng.randrange(len(flipped))] = rng.randrange(256)
            return bytes(flipped)
        if roll < 0.08:
            return rng.randbytes(rng.randint(0, 64))
        if roll < 0.09:
            return b"[" + text + b"," + text + b"]"
        return text


# --- What every answer must look like -----------------------------------------------------

ERROR = re.compile(r"[0-9]{3}:[^:]*:.*", re.DOTALL)
# Errors about a message so malformed that its channel is not known.
WITHOUT_CHANNEL = {
    "400::json_malformed",
    "400::message_not_an_object",
    "400::message_malformed",
    "400::channel_missing",
    "400:id:invalid_type",
    "400:channel:invalid_type",
}


def check_messages(messages: Any) -> list[str]:
    """What is wrong with a reply array (empty if nothing): each item is a reply (``successful``,
    with ``channel`` unless its message had none, and an ``error`` when unsuccessful) or a
    delivered message (``channel`` and ``data``)."""
    if not isinstance(messages, list):
        return [f"not an array: {messages!r:.200}"]
    problems = []
    for item in messages:
        if not isinstance(item, dict):
            problems.append(f"not an object: {item!r:.200}")
        elif "successful" in item:
            if not isinstance(item["successful"], bool):
                problems.append(f"successful is not a bool: {item!r:.200}")
            error = item.get("error")
            if item["successful"] is False and not (
                isinstance(error, str) and ERROR.fullmatch(error)
            ):
                problems.append(f"an unsuccessful reply without a Bayeux error: {item!r:.200}")
            unnamed = error in WITHOUT_CHANNEL or str(error).endswith(":unknown_field")
            if not isinstance(item.get("channel"), str) and not unnamed:
                problems.append(f"a reply without a channel: {item!r:.200}")
        elif not isinstance(item.get("channel"), str) or "data" not in item:
            problems.append(f"neither a reply nor a delivered message: {item!r:.200}")
    return problems


def replies(messages: list[Any]) -> int:
    return sum(1 for item in messages if isinstance(item, dict) and "successful" in item)
