"""What one client may make the core compute or hold through Bayeux itself (issue 10, items 4,
5, 9, 11 and 14), on both stacks, over long-polling and WebSocket: no request whose cost grows
with the square of its size, channel names bounded in bytes and segments, data nested no deeper
than ``max_data_depth``, subscriptions per session and channels in all bounded, and no
subscription under ``/meta``.

The tests of quadratic paths assert no time: each is of a size where the quadratic version takes
minutes, far past its own timeout, while the linear one takes a second or two.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from starlette_cometd import (
    InvalidChannelError,
    LongPollingServiceContextBuilder,
    MessageRefused,
    ServerSession,
)
from starlette_cometd.hooks import Message as HookMessage
from support.servers import ServeFactory, Server
from support.sessions import TRANSPORTS, Message, open_session

MiB = 1024 * 1024


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def nested(depth: int) -> Any:
    """A value whose lists nest ``depth`` deep: ``nested(2) == [[1]]``."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


async def other_client_is_served(server: Server) -> Message:
    """A second client handshakes, subscribes, publishes and receives its message."""
    async with open_session(server, "long-polling") as other:
        [subscribed] = await other.send(
            {"channel": "/meta/subscribe", "subscription": "/meanwhile"}
        )
        assert subscribed["successful"] is True
        [published] = await other.send({"channel": "/meanwhile", "data": "served"})
        assert published["successful"] is True
        [message] = await other.delivered()
        return message


# Item 4: quadratic unsubscribe.


@pytest.mark.timeout(60)
async def test_subscribing_and_unsubscribing_very_many_channels_at_once_stays_linear(
    serve: ServeFactory, transport: str
) -> None:
    # 80,000 names in one unsubscribe took 6.7 s while each name was searched for in the
    # session's list; 400,000 would take 25 times as long, minutes.
    count = 400_000
    builder = (
        LongPollingServiceContextBuilder()
        .max_body_size(32 * MiB)
        .max_subscriptions_per_session(count)
        .max_channels(count + 1)
    )
    server = await serve(builder)
    names = [f"/c/{i}" for i in range(count)]
    async with open_session(server, transport) as heavy:
        meanwhile = asyncio.ensure_future(other_client_is_served(server))
        [subscribed] = await heavy.send({"channel": "/meta/subscribe", "subscription": names})
        assert subscribed["successful"] is True
        assert server.context.stats()["channels"] >= count
        [unsubscribed] = await heavy.send({"channel": "/meta/unsubscribe", "subscription": names})
        assert unsubscribed["successful"] is True
        info = server.context.session_info(heavy.client_id)
        assert info is not None and info["subscriptions"] == []
        message = await asyncio.wait_for(meanwhile, 30)
        assert message == {"channel": "/meanwhile", "data": "served"}


# Item 5: quadratic publish to a deep channel, and channel names bounded.


@pytest.mark.timeout(60)
async def test_publishing_to_a_very_deep_channel_stays_linear(
    serve: ServeFactory, transport: str
) -> None:
    # With any /** subscription, a publish looked up every ancestor of its channel, hashing
    # n * n bytes for n segments: 11 s for 1 MB; this 4 MB channel would take minutes. The
    # limits on names are lifted here to show the cost itself is gone.
    segments = 2_000_000
    deep = "/a" * segments
    builder = (
        LongPollingServiceContextBuilder()
        .max_body_size(32 * MiB)
        .max_channel_length(len(deep))
        .max_channel_segments(segments)
    )
    server = await serve(builder)
    async with open_session(server, transport) as listener:
        [subscribed] = await listener.send({"channel": "/meta/subscribe", "subscription": "/**"})
        assert subscribed["successful"] is True
        meanwhile = asyncio.ensure_future(other_client_is_served(server))
        [published] = await listener.send({"channel": deep, "data": "deep", "id": "d"})
        assert published["successful"] is True
        assert await asyncio.wait_for(meanwhile, 30) == {"channel": "/meanwhile", "data": "served"}
        received: list[Message] = []
        while not any(m["channel"] == deep for m in received):
            received += await listener.delivered()
        assert {"channel": deep, "data": "deep"} in received


NAME_LIMITS = {
    # limit: (at the limit, just past it, a service channel past it, the reason named)
    "length": ("/abcdefghijklmno", "/abcdefghijklmnop", "/service/abcdefgh", "channel_too_long"),
    "segments": ("/a/b/c", "/a/b/c/d", "/service/a/b/c", "channel_too_many_segments"),
}


@pytest.mark.parametrize("limit", NAME_LIMITS)
async def test_channel_names_are_bounded_wherever_they_are_used(
    serve: ServeFactory, transport: str, limit: str
) -> None:
    # 16 bytes, 3 segments: "/meta/unsubscribe" is longer, and still works.
    builder = LongPollingServiceContextBuilder().max_channel_length(16).max_channel_segments(3)
    server = await serve(builder)
    at_limit, past, service, reason = NAME_LIMITS[limit]
    async with open_session(server, transport) as session:
        [subscribed] = await session.send(
            {"channel": "/meta/subscribe", "subscription": [at_limit]}
        )
        assert subscribed["successful"] is True
        [published] = await session.send({"channel": at_limit, "data": 1})
        assert published["successful"] is True
        assert await session.delivered() == [{"channel": at_limit, "data": 1}]
        for meta in ("/meta/subscribe", "/meta/unsubscribe"):
            [refused] = await session.send(
                {"channel": meta, "subscription": ["/ok", past], "id": "s"}
            )
            assert refused == {
                "channel": meta,
                "successful": False,
                "error": f"403:{reason}:subscription_invalid",
                "subscription": ["/ok", past],
                "id": "s",
            }
        for channel in (past, service):
            [refused] = await session.send({"channel": channel, "data": 1, "id": "p"})
            assert refused == {
                "channel": channel,
                "successful": False,
                "error": f"405:{reason}:channel_invalid",
                "id": "p",
            }
        [unsubscribed] = await session.send(
            {"channel": "/meta/unsubscribe", "subscription": at_limit}
        )
        assert unsubscribed["successful"] is True
        with pytest.raises(InvalidChannelError, match=reason):
            await server.context.send(past, 1)
        with pytest.raises(InvalidChannelError, match=reason):
            await server.context.send_to_client(past, session.client_id, 1)
        await server.context.send_to_client(at_limit, session.client_id, 2)
        assert await session.delivered() == [{"channel": at_limit, "data": 2}]
    assert server.context.stats()["channels"] == 0


async def test_channel_names_are_1_kib_and_64_segments_at_most_by_default(
    server: Server,
) -> None:
    cases = [
        ("/" + "x" * 1023, "/" + "x" * 1024, "channel_too_long"),
        ("/a" * 64, "/a" * 65, "channel_too_many_segments"),
    ]
    async with open_session(server, "long-polling") as session:
        for at_limit, past, reason in cases:
            [subscribed, published] = await session.send(
                {"channel": "/meta/subscribe", "subscription": at_limit},
                {"channel": at_limit, "data": 1},
            )
            assert subscribed["successful"] is True and published["successful"] is True
            [refused, also_refused] = await session.send(
                {"channel": "/meta/subscribe", "subscription": past},
                {"channel": past, "data": 1},
            )
            assert refused["error"] == f"403:{reason}:subscription_invalid"
            assert also_refused["error"] == f"405:{reason}:channel_invalid"


async def test_the_channel_limits_are_checked_before_the_hooks(serve: ServeFactory) -> None:
    server = await serve(LongPollingServiceContextBuilder().max_channel_length(16))
    seen: list[str] = []

    @server.context.service("/service/**")
    async def serve_anything(session: ServerSession, message: HookMessage) -> str:
        seen.append(message["channel"])
        return "served"

    async with open_session(server, "long-polling") as session:
        [served, refused] = await session.send(
            {"channel": "/service/abcdefg", "data": 1},
            {"channel": "/service/abcdefgh", "data": 1},
        )
    assert served["successful"] is True and served["data"] == "served"
    assert refused["error"] == "405:channel_too_long:channel_invalid"
    assert seen == ["/service/abcdefg"]


# Item 9: data nested without bound.


@pytest.mark.parametrize("hooks", [False, True], ids=["fast-path", "hooks"])
async def test_data_nested_deeper_than_the_limit_is_refused_and_its_batch_goes_on(
    serve: ServeFactory, transport: str, hooks: bool
) -> None:
    server = await serve()
    listened: list[str] = []
    if hooks:

        @server.context.listener("/deep")
        async def moderate(session: ServerSession, message: HookMessage) -> bool:
            listened.append(message["id"])
            return bool(message["data"] != "spam")

    async with open_session(server, transport) as session:
        [subscribed] = await session.send({"channel": "/meta/subscribe", "subscription": "/deep"})
        assert subscribed["successful"] is True

        def publish(id: str, data: str, ext: str | None = None) -> str:
            extra = "" if ext is None else f',"ext":{ext}'
            head = f'{{"channel":"/deep","clientId":"{session.client_id}","id":"{id}"'
            return f'{head},"data":{data}{extra}}}'

        far = 100_000
        batch = [
            publish("at", json.dumps(nested(128))),
            publish("past", json.dumps(nested(129))),
            publish("ext", "1", ext=json.dumps({"a": nested(128)})),
            # Python's json gives up on this one: it must not carry its batch past the hooks.
            publish("far", "[" * far + "]" * far),
            publish("spam", '"spam"'),
            publish("after", '"after"'),
        ]
        replies = await session.send_text("[" + ",".join(batch) + "]", len(batch))
        by_id = {reply["id"]: reply for reply in replies}
        assert by_id["at"] == {"channel": "/deep", "successful": True, "id": "at"}
        for id, field in (("past", "data"), ("ext", "ext"), ("far", "data")):
            assert by_id[id] == {
                "channel": "/deep",
                "successful": False,
                "error": f"400:{field}:too_deep",
                "id": id,
            }
        if hooks:
            assert by_id["spam"]["error"] == "404::message_deleted"
        else:
            assert by_id["spam"]["successful"] is True
        assert by_id["after"]["successful"] is True
        expected = [nested(128), "after"] if hooks else [nested(128), "spam", "after"]
        delivered = await session.delivered(len(expected))
        assert [m["data"] for m in delivered] == expected
    if hooks:
        # The listener never saw what was refused for its depth.
        assert listened == ["at", "spam", "after"]


async def test_the_depth_limit_has_a_setter_and_send_uses_it(serve: ServeFactory) -> None:
    server = await serve(LongPollingServiceContextBuilder().max_data_depth(4))
    async with open_session(server, "long-polling") as session:
        [subscribed, at_limit, past] = await session.send(
            {"channel": "/meta/subscribe", "subscription": "/x"},
            {"channel": "/x", "data": {"a": nested(3)}},
            {"channel": "/x", "data": {"a": nested(4)}},
        )
        assert subscribed["successful"] is True and at_limit["successful"] is True
        assert past["error"] == "400:data:too_deep"
        await server.context.send("/x", nested(4))
        with pytest.raises(TypeError, match="deeper than 4 levels"):
            await server.context.send("/x", nested(5))
        with pytest.raises(TypeError, match="deeper than 4 levels"):
            await server.context.send_to_client("/x", session.client_id, [nested(4)])
        assert [m["data"] for m in await session.delivered(2)] == [{"a": nested(3)}, nested(4)]


async def test_send_refuses_data_deeper_than_128_by_default(server: Server) -> None:
    await server.context.send("/x", nested(128))
    with pytest.raises(TypeError, match="deeper than 128 levels"):
        await server.context.send("/x", nested(129))


def test_the_depth_limit_stays_within_what_python_s_json_reads() -> None:
    LongPollingServiceContextBuilder().max_data_depth(512)
    with pytest.raises(ValueError, match="at most 512"):
        LongPollingServiceContextBuilder().max_data_depth(513)
    with pytest.raises(ValueError):
        LongPollingServiceContextBuilder().max_data_depth(0)


# Item 11, in part: subscriptions per session, channels in all.


async def test_subscriptions_per_session_are_bounded(serve: ServeFactory, transport: str) -> None:
    server = await serve(LongPollingServiceContextBuilder().max_subscriptions_per_session(3))
    async with open_session(server, transport) as session:
        # A repeat counts once, a service channel not at all: this reaches the limit.
        [first, second] = await session.send(
            {"channel": "/meta/subscribe", "subscription": ["/a", "/b/*", "/a"]},
            {"channel": "/meta/subscribe", "subscription": ["/c", "/service/x"]},
        )
        assert first["successful"] is True and second["successful"] is True
        [again, past] = await session.send(
            {"channel": "/meta/subscribe", "subscription": "/a"},
            {"channel": "/meta/subscribe", "subscription": ["/a", "/d"], "id": "s"},
        )
        assert again["successful"] is True
        assert past == {
            "channel": "/meta/subscribe",
            "successful": False,
            "error": "403:too_many_subscriptions:subscribe_denied",
            "subscription": ["/a", "/d"],
            "id": "s",
        }
        info = server.context.session_info(session.client_id)
        assert info is not None and info["subscriptions"] == ["/a", "/b/*", "/c"]
        [unsubscribed, subscribed] = await session.send(
            {"channel": "/meta/unsubscribe", "subscription": "/c"},
            {"channel": "/meta/subscribe", "subscription": "/d"},
        )
        assert unsubscribed["successful"] is True and subscribed["successful"] is True


async def test_a_session_may_subscribe_to_1000_channels_by_default(server: Server) -> None:
    async with open_session(server, "long-polling") as session:
        names = [f"/n/{i}" for i in range(1000)]
        [at_limit, past] = await session.send(
            {"channel": "/meta/subscribe", "subscription": names},
            {"channel": "/meta/subscribe", "subscription": "/n/1000"},
        )
        assert at_limit["successful"] is True
        assert past["error"] == "403:too_many_subscriptions:subscribe_denied"


async def test_channels_in_all_are_bounded(serve: ServeFactory, transport: str) -> None:
    server = await serve(LongPollingServiceContextBuilder().max_channels(3))
    async with open_session(server, transport) as first, open_session(server, transport) as second:
        # A pattern is a channel of its own: this reaches the limit.
        [subscribed] = await first.send(
            {"channel": "/meta/subscribe", "subscription": ["/a", "/a/*", "/b"]}
        )
        assert subscribed["successful"] is True
        assert server.context.stats()["channels"] == 3
        [past, existing] = await second.send(
            {"channel": "/meta/subscribe", "subscription": ["/b", "/c"], "id": "s"},
            {"channel": "/meta/subscribe", "subscription": ["/a", "/a/*"]},
        )
        assert past == {
            "channel": "/meta/subscribe",
            "successful": False,
            "error": "403:too_many_channels:create_denied",
            "subscription": ["/b", "/c"],
            "id": "s",
        }
        # Channels that have subscribers take more of them at any time.
        assert existing["successful"] is True
        [published] = await first.send({"channel": "/a", "data": "both"})
        assert published["successful"] is True
        assert await second.delivered() == [{"channel": "/a", "data": "both"}]
        # A channel whose last subscriber leaves makes room for another.
        [unsubscribed] = await first.send({"channel": "/meta/unsubscribe", "subscription": "/b"})
        assert unsubscribed["successful"] is True
        [subscribed] = await second.send({"channel": "/meta/subscribe", "subscription": "/c"})
        assert subscribed["successful"] is True
    assert server.context.stats()["channels"] == 3


async def test_the_server_holds_100_000_channels_by_default(serve: ServeFactory) -> None:
    # One session fills the table here (its own limit lifted), so that no other limit counts.
    builder = (
        LongPollingServiceContextBuilder()
        .max_subscriptions_per_session(100_001)
        .max_body_size(4 * MiB)
    )
    server = await serve(builder)
    async with open_session(server, "long-polling") as filler:
        names = [f"/k/{i}" for i in range(100_000)]
        [subscribed] = await filler.send({"channel": "/meta/subscribe", "subscription": names})
        assert subscribed["successful"] is True
        assert server.context.stats()["channels"] == 100_000
        async with open_session(server, "long-polling") as session:
            [past, existing] = await session.send(
                {"channel": "/meta/subscribe", "subscription": "/k/new"},
                {"channel": "/meta/subscribe", "subscription": "/k/7"},
            )
        assert past["error"] == "403:too_many_channels:create_denied"
        assert existing["successful"] is True


# Item 14: no subscription under /meta; /service patterns as CometD has them.


async def test_meta_patterns_are_refused_and_service_patterns_are_a_no_op(
    serve: ServeFactory, transport: str
) -> None:
    server = await serve()
    async with open_session(server, transport) as session:
        for name in ("/meta/*", "/meta/**", "/meta/connect/*", "/meta/connect"):
            [refused] = await session.send({"channel": "/meta/subscribe", "subscription": name})
            assert refused["successful"] is False, name
            assert refused["error"] == "403:denied_by_security_policy:subscribe_denied", name
            assert refused["subscription"] == name
        [subscribed] = await session.send(
            {"channel": "/meta/subscribe", "subscription": ["/service/*", "/service/**"]}
        )
        assert subscribed["successful"] is True
        info = server.context.session_info(session.client_id)
        assert info is not None and info["subscriptions"] == []
        assert server.context.stats()["channels"] == 0
        # /** is an ordinary pattern: every broadcast channel, no service or meta message.
        [subscribed, service, broadcast] = await session.send(
            {"channel": "/meta/subscribe", "subscription": "/**"},
            {"channel": "/service/x", "data": "to the server"},
            {"channel": "/x", "data": "to everyone"},
        )
        assert service["successful"] is True and broadcast["successful"] is True
        assert await session.delivered() == [{"channel": "/x", "data": "to everyone"}]


async def test_meta_patterns_are_refused_with_hooks_too(serve: ServeFactory) -> None:
    # The core refuses what the hooks let through.
    server = await serve()

    @server.context.listener("/never")
    async def never(session: ServerSession, message: HookMessage) -> None:
        raise MessageRefused("403::never")

    async with open_session(server, "long-polling") as session:
        [refused] = await session.send({"channel": "/meta/subscribe", "subscription": "/meta/*"})
        assert refused["error"] == "403:denied_by_security_policy:subscribe_denied"
