"""The parts of uvicorn's internals the native protocol and the CLI rely on, checked against the
installed uvicorn. pyproject.toml bounds uvicorn to the versions these pass on; when a new
release changes one of them, the test that fails names what changed and which of our modules
relies on it, rather than leaving it to a confusing failure deep in the native tests."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from starlette_cometd import LongPollingServiceContextBuilder, RouterBuilder, native_http_protocol
from starlette_cometd.transports.native_http import CometdHttpProtocol
from support.servers import free_port, start_uvicorn, stop_uvicorn

VERSION = uvicorn.__version__

# What uvicorn passes to an ``http`` protocol class, and what the native protocol passes on to
# uvicorn's own when it hands a connection over: CometdHttpProtocol.__init__'s parameters.
PROTOCOL_PARAMETERS = ["config", "server_state", "app_state", "_loop"]


def changed(what: str, relied_on_by: str) -> str:
    return f"uvicorn {VERSION} changed {what} ({relied_on_by} relies on it)"


def parameters(function: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(function).parameters)


def test_our_protocol_takes_what_it_is_documented_to() -> None:
    # The list below is the contract; it must stay the native protocol's own signature.
    assert list(parameters(CometdHttpProtocol.__init__))[1:] == PROTOCOL_PARAMETERS


def test_httptools_protocol_is_constructed_as_the_handover_does() -> None:
    # native_http.py's _hand_over: HttpToolsProtocol(config=, server_state=, app_state=, _loop=).
    params = parameters(HttpToolsProtocol.__init__)
    missing = [name for name in PROTOCOL_PARAMETERS if name not in params]
    assert not missing, changed(
        f"HttpToolsProtocol.__init__: no parameter {missing}, it has {list(params)[1:]}",
        "native_http.py's hand-over",
    )
    required = [
        name
        for name, p in params.items()
        if name != "self"
        and name not in PROTOCOL_PARAMETERS
        and p.default is inspect.Parameter.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    assert not required, changed(
        f"HttpToolsProtocol.__init__: new required parameters {required}",
        "native_http.py's hand-over",
    )
    positional_only = [
        n for n in PROTOCOL_PARAMETERS if params[n].kind is params[n].POSITIONAL_ONLY
    ]
    assert not positional_only, changed(
        f"HttpToolsProtocol.__init__: {positional_only} became positional-only",
        "native_http.py's hand-over, passing them by name",
    )


def test_httptools_protocol_has_the_callbacks_forwarded_to_it() -> None:
    # native_http.py passes these on to uvicorn's protocol while it re-frames a request.
    for name in (
        "connection_made",
        "data_received",
        "connection_lost",
        "eof_received",
        "pause_writing",
        "resume_writing",
        "shutdown",
    ):
        assert callable(getattr(HttpToolsProtocol, name, None)), changed(
            f"HttpToolsProtocol: no method {name}", "native_http.py's hand-over"
        )


def test_server_state_keeps_connections_and_counts_requests() -> None:
    state = ServerState()
    connections = getattr(state, "connections", None)
    assert isinstance(connections, set), changed(
        f"ServerState.connections: {connections!r} is not a set",
        "native_http.py and native_websocket.py, to track their connections",
    )
    total = getattr(state, "total_requests", None)
    assert isinstance(total, int), changed(
        f"ServerState.total_requests: {total!r} is not a count",
        "native_http.py, to count the requests it answers",
    )


def test_config_takes_what_the_cli_gives_it() -> None:
    params = parameters(uvicorn.Config.__init__)
    for name in ("app", "host", "port", "log_level", "access_log", "proxy_headers", "http"):
        assert name in params, changed(f"Config.__init__: no parameter {name}", "cli.py")
    cometd = RouterBuilder().build(LongPollingServiceContextBuilder().build())
    protocol = native_http_protocol(cometd, "/cometd")
    config = uvicorn.Config(cometd, http=protocol, timeout_keep_alive=7)
    config.load()
    assert config.http_protocol_class is protocol, changed(
        "Config(http=...): a protocol class is not used as given",
        "cli.py and applications passing native_http_protocol(...)",
    )
    assert config.timeout_keep_alive == 7, changed(
        "Config.timeout_keep_alive", "native_http.py's idle timer"
    )


def test_server_exit_handler_is_there_to_extend() -> None:
    handler = getattr(uvicorn.Server, "handle_exit", None)
    assert handler is not None, changed("Server: no handle_exit", "cli.py's _Server")
    assert list(parameters(handler))[1:] == ["sig", "frame"], changed(
        f"Server.handle_exit{inspect.signature(handler)}", "cli.py's _Server"
    )


class _Recorder(asyncio.Protocol):
    """An ``http`` protocol that notes how uvicorn builds it and whether it asks it to stop."""

    built: ClassVar[list[dict[str, Any]]] = []
    shut_down: ClassVar[list[_Recorder]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.built.append(kwargs)
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.kwargs["server_state"].connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.kwargs["server_state"].connections.discard(self)

    def shutdown(self) -> None:
        self.shut_down.append(self)
        assert self.transport is not None
        self.transport.close()


async def test_a_real_server_builds_and_stops_protocols_as_the_native_one_expects() -> None:
    _Recorder.built.clear()
    _Recorder.shut_down.clear()
    port = free_port()
    server, task = await start_uvicorn(
        RouterBuilder().build(LongPollingServiceContextBuilder().build()), port, http=_Recorder
    )
    stopped = False
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(500):
            if _Recorder.built:
                break
            await asyncio.sleep(0.01)
        assert _Recorder.built, changed("Server: a connection made no http protocol", "the CLI")
        kwargs = _Recorder.built[0]
        assert sorted(kwargs) == sorted(PROTOCOL_PARAMETERS), changed(
            f"how Server builds an http protocol: with {sorted(kwargs)}",
            "native_http.py's CometdHttpProtocol.__init__",
        )
        state = kwargs["server_state"]
        assert state is server.server_state and kwargs["config"] is server.config, changed(
            "the server state or config given to an http protocol", "native_http.py"
        )
        # A held connect and an open native WebSocket are answered when uvicorn stops only if
        # it calls shutdown() on every connection in server_state.connections.
        await stop_uvicorn(server, task)
        stopped = True
        assert _Recorder.shut_down, changed(
            "Server shutdown: connections' shutdown() is not called",
            "native_http.py and native_websocket.py, to answer held connects at a stop",
        )
        writer.close()
    finally:
        if not stopped:
            await stop_uvicorn(server, task)
