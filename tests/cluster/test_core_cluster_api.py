"""The core's primitives for a cluster (issue 11): finding the sessions a batch needs from the
shared engine, taking one over, letting one go, and publishes handed back to be carried to every
process. Driven through the compiled module, as the cluster layer drives it."""

from __future__ import annotations

import json

import pytest

from starlette_cometd import ClientNotFoundError, InvalidChannelError
from starlette_cometd._core import Engine


def send(engine: Engine, browser: str, *messages: dict[str, object]) -> list[dict[str, object]]:
    outcome = engine.process(json.dumps(list(messages)).encode(), browser)
    replies: list[dict[str, object]] = json.loads(outcome.body) if outcome.body else []
    return replies


def handshake(engine: Engine, browser: str) -> str:
    reply = send(engine, browser, {"channel": "/meta/handshake", "version": "1.0"})
    client_id = reply[0]["clientId"]
    assert isinstance(client_id, str)
    return client_id


BROWSER = "ab" * 20


def test_named_sessions_names_each_session_once_and_whether_it_is_here() -> None:
    engine = Engine()
    here = handshake(engine, BROWSER)
    elsewhere = "0123456789abcdef" * 2 + "01234567"
    batch = [
        {"channel": "/meta/connect", "clientId": elsewhere},
        {"channel": "/a", "clientId": here, "data": 1},
        {"channel": "/b", "clientId": elsewhere, "data": 2},
        {"channel": "/c", "clientId": "not-an-id", "data": 3},
        {"channel": "/meta/handshake"},
    ]
    named = engine.named_sessions(json.dumps(batch).encode())
    assert named == [(elsewhere, False, True), (here, True, False)], "connects, or not"
    assert engine.named_sessions(b"[{]") == []
    assert engine.named_sessions(b'{"channel":"/a"}') == []


def test_an_adopted_session_serves_its_cookie_with_its_subscriptions() -> None:
    engine = Engine()
    client_id = "fe" * 20
    assert engine.adopt(client_id, BROWSER, ["/chat/**", "/news"], ack=False)
    assert not engine.adopt(client_id, BROWSER, []), "a session already here is not adopted"
    info = engine.session_info(client_id)
    assert info is not None
    assert info["browser"] == BROWSER and info["subscriptions"] == ["/chat/**", "/news"]
    assert engine.stats()["sessions_created"] == 0
    publisher = handshake(engine, BROWSER)
    replies = send(engine, BROWSER, {"channel": "/chat/a", "clientId": publisher, "data": "hi"})
    assert replies[0]["successful"] is True
    assert engine.session_info(client_id)["queued"] == 1  # type: ignore[index]
    with pytest.raises(InvalidChannelError):
        engine.adopt("fd" * 20, BROWSER, ["/meta/connect"])
    assert engine.session_info("fd" * 20) is None


def test_resubscribe_sets_the_subscriptions_another_process_changed() -> None:
    engine = Engine()
    client_id = handshake(engine, BROWSER)
    send(
        engine,
        BROWSER,
        {"channel": "/meta/subscribe", "clientId": client_id, "subscription": ["/a", "/b"]},
    )
    engine.resubscribe(client_id, ["/b", "/c/**"])
    info = engine.session_info(client_id)
    assert info is not None and info["subscriptions"] == ["/b", "/c/**"]
    with pytest.raises(InvalidChannelError):
        engine.resubscribe(client_id, ["/meta/x"])


def test_forget_lets_a_session_go_without_an_event() -> None:
    engine = Engine()
    client_id = handshake(engine, BROWSER)
    outcome = engine.forget(client_id)
    assert outcome.events == []
    assert engine.session_info(client_id) is None
    assert engine.stats()["sessions_removed"] == 0


def test_relayed_publishes_come_back_and_fan_out_checks_what_it_carries() -> None:
    engine = Engine(relay_publishes=True, broadcast_to_publisher=False)
    publisher = handshake(engine, BROWSER)
    subscriber = handshake(engine, BROWSER)
    for client_id in (publisher, subscriber):
        send(
            engine,
            BROWSER,
            {"channel": "/meta/subscribe", "clientId": client_id, "subscription": "/a"},
        )
    outcome = engine.process(
        json.dumps([{"channel": "/a", "clientId": publisher, "data": [1]}]).encode(), BROWSER
    )
    assert json.loads(outcome.body)[0]["successful"] is True
    assert outcome.relayed == [("/a", b'{"channel":"/a","data":[1]}', publisher)]
    assert engine.session_info(subscriber)["queued"] == 0  # type: ignore[index]
    server_side = engine.publish("/a", {"x": 1})
    assert server_side.relayed == [("/a", b'{"channel":"/a","data":{"x":1}}', None)]

    carried = engine.fan_out("/a", b'{"channel":"/a","data":[1]}', publisher)
    assert carried.events == [] and carried.relayed is None
    assert engine.session_info(subscriber)["queued"] == 1  # type: ignore[index]
    assert engine.session_info(publisher)["queued"] == 0  # type: ignore[index]
    for garbage in (b"[1]", b"{", b"", b'"x"'):
        with pytest.raises(ValueError, match="JSON object"):
            engine.fan_out("/a", garbage)
    assert engine.session_info(subscriber)["queued"] == 1  # type: ignore[index]
    assert Engine().process(b"[]").relayed is None


def test_catch_up_queues_what_an_adopted_session_missed_on_its_channels_only() -> None:
    engine = Engine()
    client_id = "ce" * 20
    other = "cd" * 20
    engine.adopt(client_id, BROWSER, ["/chat/*"])
    entries: list[tuple[str, bytes, str | None, bool]] = [
        ("/chat/a", b'{"channel":"/chat/a","data":1}', None, False),
        ("/news", b'{"channel":"/news","data":2}', None, False),
        ("/chat/b", b'{"channel":"/chat/b","data":3}', client_id, False),  # its own, excluded
        ("/chat/c", b"garbage", None, False),
        ("/chat/d", b'{"channel":"/chat/d","data":4}', other, False),
        ("/private", b'{"channel":"/private","data":5}', None, True),  # sent to it alone
    ]
    assert engine.catch_up(client_id, entries) == 3
    replies = send(engine, BROWSER, {"channel": "/meta/connect", "clientId": client_id})
    assert [r["data"] for r in replies if r["channel"] != "/meta/connect"] == [1, 4, 5]
    with pytest.raises(ClientNotFoundError):
        engine.catch_up(other, entries)
