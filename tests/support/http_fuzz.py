"""Random and mutated HTTP/1.1 byte streams for the native protocol, and a strict reader of
what a server writes back.

A stream is a few requests, pipelined: to the endpoint and to the route beside it, with bodies
framed by Content-Length or chunked (random chunk sizes and extensions), and mutations of
every kind a request smuggler tries: duplicate or contradictory Content-Length and
Transfer-Encoding, bad chunk sizes, bad request lines, header folding, bare LFs, non-ASCII,
huge values, ``Expect: 100-continue``, and streams cut short."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field

from support.bayeux_fuzz import BatchMaker
from support.fuzz import encode

HANDSHAKE = json.dumps(
    [{"channel": "/meta/handshake", "supportedConnectionTypes": ["long-polling"]}]
)
TARGETS = [
    "/cometd",
    "/cometd",
    "/cometd/handshake",
    "/cometd/",
    "/hello",
    "/hello",
    "/hello?x=1",
    "/other",
    "*",
    "http://x/cometd",
    "/cometd?jsonp=cb&message=%5B%5D",
    "/co%6Detd",
    "/\xe9",
    "/cometd#x",
    "",
]
METHODS = ["POST"] * 6 + ["GET", "GET", "OPTIONS", "PUT", "post", "P OST", "GET\x00", "CONNECT", ""]
VERSIONS = ["HTTP/1.1"] * 10 + [
    "HTTP/1.0",
    "HTTP/2.0",
    "HTTP/1.2",
    "HTTP/1",
    "http/1.1",
    "HTTP/1.1 x",
    "HTTP/0.9",
]
FRAMINGS = (
    ["length"] * 5
    + ["chunked"] * 4
    + [
        "none",
        "length-short",
        "length-long",
        "length-twice",
        "length-twice-different",
        "length-list",
        "length-bad",
        "length-and-chunked",
        "chunked-twice",
        "chunked-variant",
        "chunked-not-last",
        "chunked-bad-size",
        "chunked-no-crlf",
        "chunked-overlong",
    ]
)


@dataclass
class Stream:
    """What a client writes on one connection, and how it ends."""

    data: bytes = b""
    requests: int = 0  # request lines written (each one may be answered at most once)
    # A CONNECT or an upgrade uvicorn does not take: it reads the bytes after the head as new
    # requests (on its own protocol too), so more answers than requests are no smuggling.
    tunnels: bool = False
    cuts: list[int] = field(default_factory=list)  # where the writes split it
    end: str = "open"  # or "eof" (the client shuts its write side) or "abort" (it resets)


class StreamMaker:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.batches = BatchMaker(rng, "long-polling", [])

    def stream(self, prefix: bytes = b"") -> Stream:
        """A stream; ``prefix`` is a request written first (a connect the server holds)."""
        rng = self.rng
        stream = Stream(requests=1 if prefix else 0)
        parts = [prefix]
        for _ in range(rng.choice([1, 1, 2, 3, 5])):
            parts.append(self.request())
            stream.requests += 1
        data = b"".join(parts)
        stream.tunnels = b"CONNECT" in data or b"upgrade:" in data
        roll = rng.random()
        if roll < 0.08:
            data = data[: rng.randrange(len(data) + 1)]  # cut short
        elif roll < 0.12:
            flipped = bytearray(data)
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
            data = bytes(flipped)
        stream.data = data
        count = rng.choice([0, 1, 2, 5, 20])
        stream.cuts = sorted(rng.sample(range(1, len(data)), min(count, max(len(data) - 1, 0))))
        stream.end = rng.choice(["open"] * 8 + ["eof", "abort"])
        return stream

    def body(self) -> bytes:
        rng = self.rng
        roll = rng.random()
        if roll < 0.4:
            return HANDSHAKE.encode()
        if roll < 0.7:
            return self.batches.batch()
        if roll < 0.8:
            return b""
        if roll < 0.95:
            return rng.randbytes(rng.randint(1, 300))
        return b"x" * rng.choice([70_000, 1_100_000])  # past the forward buffer, or max_body_size

    def request(self) -> bytes:
        rng = self.rng
        eol = b"\r\n" if rng.random() < 0.95 else b"\n"
        method = rng.choice(METHODS)
        target = rng.choice(TARGETS)
        version = rng.choice(VERSIONS)
        line = encode(f"{method} {target} {version}") if rng.random() < 0.97 else self.garbage()
        headers: list[bytes] = [b"host: x"]
        body = self.body() if method != "GET" or rng.random() < 0.1 else b""
        framing = rng.choice(FRAMINGS)
        headers += self.framing_headers(framing, len(body))
        headers += self.extra_headers()
        rng.shuffle(headers)
        head = line + eol + b"".join(header + eol for header in headers) + eol
        return head + self.framed(framing, body)

    def garbage(self) -> bytes:
        return self.rng.choice(
            [b"", b"GET", b"GET /", b" / HTTP/1.1", b"\x16\x03\x01\x02\x00", self.rng.randbytes(20)]
        )

    def framing_headers(self, framing: str, length: int) -> list[bytes]:
        rng = self.rng
        te = b"transfer-encoding: chunked"
        cl = b"content-length: %d" % length
        if framing == "length":
            return [cl]
        if framing == "chunked":
            return [te]
        if framing == "none":
            return []
        if framing == "length-short":
            return [b"content-length: %d" % max(length - rng.randint(1, 10), 0)]
        if framing == "length-long":
            return [b"content-length: %d" % (length + rng.randint(1, 10))]
        if framing == "length-twice":
            return [cl, cl]
        if framing == "length-twice-different":
            return [cl, b"content-length: %d" % (length + 1)]
        if framing == "length-list":
            return [b"content-length: %d, %d" % (length, length)]
        if framing == "length-bad":
            return [
                rng.choice(
                    [
                        b"content-length: -1",
                        b"content-length: +%d" % length,
                        b"content-length: 0x10",
                        b"content-length:  %d " % length,
                        b"content-length: 99999999999999999999999",
                        b"content-length: \xe9",
                    ]
                )
            ]
        if framing == "length-and-chunked":
            return [cl, te]
        if framing == "chunked-twice":
            return [te, te]
        if framing == "chunked-variant":
            return [
                rng.choice(
                    [
                        b"transfer-encoding: Chunked",
                        b"transfer-encoding:  chunked",
                        b"transfer-encoding: gzip, chunked",
                        b"transfer-encoding: chunked, gzip",
                        b"transfer-encoding: identity",
                        b"transfer-encoding: chunked\x0b",
                        b"transfer-encoding : chunked",
                        b"transfer-encoding:\tchunked",
                    ]
                )
            ]
        if framing == "chunked-not-last":
            return [b"transfer-encoding: chunked", b"transfer-encoding: identity"]
        return [te]  # the chunks themselves are bad

    def extra_headers(self) -> list[bytes]:
        rng = self.rng
        headers = []
        if rng.random() < 0.5:
            headers.append(b"content-type: application/json")
        if rng.random() < 0.15:
            headers.append(b"expect: 100-continue")
        if rng.random() < 0.1:
            headers.append(
                rng.choice(
                    [
                        b"connection: close",
                        b"connection: keep-alive",
                        b"connection: upgrade\r\nupgrade: h2c",
                    ]
                )
            )
        if rng.random() < 0.05:
            headers.append(b"x-folded: a\r\n b")  # obs-fold, refused by RFC 9112
        if rng.random() < 0.05:
            headers.append(b"x-bytes: " + rng.randbytes(8).replace(b"\n", b"").replace(b"\r", b""))
        if rng.random() < 0.05:
            headers.append(b"x-\xe9: \xc3\xa9")
        if rng.random() < 0.03:
            headers.append(b"x-huge: " + b"h" * rng.choice([10_000, 70_000]))
        if rng.random() < 0.05:
            headers.append(
                rng.choice(
                    [b"no-colon", b": empty-name", b"x y: z", b"cookie: BAYEUX_BROWSER=\xff"]
                )
            )
        return headers

    def framed(self, framing: str, body: bytes) -> bytes:
        rng = self.rng
        if not framing.startswith("chunked") and framing != "length-and-chunked":
            return body
        chunks = []
        rest = body
        while rest:
            size = rng.randint(1, max(1, min(len(rest), rng.choice([1, 7, 100, 5000, 100_000]))))
            piece, rest = rest[:size], rest[size:]
            size_text = (b"%x" if rng.random() < 0.5 else b"%X") % len(piece)
            if rng.random() < 0.2:
                size_text = b"000" + size_text
            if rng.random() < 0.15:
                size_text += rng.choice([b";ext", b";a=b", b';a="q;x"', b" ;x", b";" + b"e" * 200])
            chunks.append(size_text + b"\r\n" + piece + b"\r\n")
        last = b"0\r\n" + (b"trailer: t\r\n" if rng.random() < 0.1 else b"") + b"\r\n"
        if framing == "chunked-bad-size" and chunks:
            index = rng.randrange(len(chunks))
            bad = rng.choice([b"xyz", b"-1", b"ffffffffffffffffffff", b" 5", b"0x5", b"", b"5 5"])
            chunks[index] = bad + chunks[index][chunks[index].index(b"\r\n") :]
        elif framing == "chunked-no-crlf" and chunks:
            chunks[-1] = chunks[-1][:-2]
        elif framing == "chunked-overlong" and chunks:
            chunks[-1] = chunks[-1][:-2] + b"extra\r\n"
        return b"".join(chunks) + last


# --- Reading responses ---------------------------------------------------------------------

STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9]) [^\r\n]*")
HEADER = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\r\n]*?)[ \t]*")


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        values = [value for key, value in self.headers if key.lower() == name]
        return values[0] if len(values) == 1 else None


class Malformed(Exception):
    pass


def read_responses(data: bytes) -> tuple[list[Response], bytes]:
    """The complete responses at the start of ``data``, and what is left (a response still
    coming); raises :class:`Malformed` for anything that is not a well-formed response."""
    responses: list[Response] = []
    while data:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if not b"HTTP/1.1 ".startswith(data[:9]) and not data.startswith(b"HTTP/1."):
                raise Malformed(f"not a status line: {data[:100]!r}")
            return responses, data
        lines = data[:end].split(b"\r\n")
        status = STATUS_LINE.fullmatch(lines[0])
        if status is None:
            raise Malformed(f"not a status line: {lines[0][:100]!r}")
        headers = []
        for line in lines[1:]:
            header = HEADER.fullmatch(line)
            if header is None:
                raise Malformed(f"not a header: {line[:100]!r}")
            headers.append((header.group(1).lower(), header.group(2)))
        response = Response(int(status.group(1)), headers, b"")
        rest = data[end + 4 :]
        if response.status < 200 or response.status in (204, 304):
            responses.append(response)
            data = rest
            continue
        length = response.header(b"content-length")
        chunked = response.header(b"transfer-encoding") == b"chunked"
        if sum(1 for key, _ in headers if key in (b"content-length", b"transfer-encoding")) != 1:
            raise Malformed(f"not one framing header: {headers}")
        if length is not None:
            if not length.isdigit():
                raise Malformed(f"content-length {length!r}")
            if len(rest) < int(length):
                return responses, data
            response.body, data = rest[: int(length)], rest[int(length) :]
        elif chunked:
            parsed = read_chunked(rest)
            if parsed is None:
                return responses, data
            response.body, data = parsed
        else:
            raise Malformed(f"transfer-encoding {response.header(b'transfer-encoding')!r}")
        responses.append(response)
    return responses, b""


def read_chunked(data: bytes) -> tuple[bytes, bytes] | None:
    body = b""
    while True:
        end = data.find(b"\r\n")
        if end < 0:
            return None
        size_text = data[:end].split(b";")[0]
        if not re.fullmatch(rb"[0-9a-fA-F]+", size_text):
            raise Malformed(f"chunk size {size_text[:20]!r}")
        size = int(size_text, 16)
        if size == 0:
            trailer_end = data.find(b"\r\n\r\n", end)
            if data[end : end + 4] == b"\r\n\r\n":
                return body, data[end + 4 :]
            if trailer_end < 0:
                return None
            return body, data[trailer_end + 4 :]
        if len(data) < end + 2 + size + 2:
            return None
        if data[end + 2 + size : end + 4 + size] != b"\r\n":
            raise Malformed("a chunk without its CRLF")
        body += data[end + 2 : end + 2 + size]
        data = data[end + 4 + size :]
