"""The ASGI application serving a context's routes, the builder that makes it, and the route
class that mounts it at a path that works with and without a trailing slash."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import ASGIApp, Receive, Scope, Send

from .context import LongPollingServiceContext
from .transports.asgi_http import AdditionalData, resolve_data, send_json, serve_http
from .transports.asgi_websocket import serve_websocket
from .transports.http_wire import error_body


def _base(path: str) -> str:
    """Normalises a base path: leading slash, no trailing slash, empty for the mount root."""
    path = path.strip("/")
    return f"/{path}" if path else ""


def _route_path(scope: Scope) -> str:
    """The request path below the mount point (Starlette keeps the full path in ``path``)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class CometdApp:
    """The ASGI app of one CometD endpoint. Mount it with :class:`CometdRoute` or :func:`mount`."""

    def __init__(
        self,
        context: LongPollingServiceContext,
        paths: frozenset[str],
        data_provider: AdditionalData = None,
        data_value: Any = None,
    ) -> None:
        self.context = context
        self.paths = paths
        self._data_provider = data_provider
        self._data_value = data_value

    @property
    def data_value(self) -> Any:
        return self._data_value

    @property
    def needs_asgi(self) -> bool:
        """True while a request needs the ASGI path: application hooks are registered, or
        events carry data computed from each request."""
        return self.context.hooks.active or self._data_provider is not None

    def full_paths(self, base: str) -> frozenset[str]:
        """Every request path this app answers when mounted at ``base``."""
        base = _base(base)
        paths = {base + path for path in self.paths}
        if "/" in self.paths:
            paths.add(base or "/")
        return frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            if (_route_path(scope) or "/") not in self.paths:
                await send({"type": "websocket.close", "code": 1008})
                return
            data = await resolve_data(scope, self._data_provider, self._data_value)
            await serve_websocket(self.context, scope, receive, send, data)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (_route_path(scope) or "/") not in self.paths:
            await send_json(send, 404, error_body("404::not_found", "no CometD endpoint here"))
            return
        method = scope["method"]
        if method in ("POST", "GET"):
            await serve_http(
                self.context, scope, receive, send, self._data_provider, self._data_value
            )
        elif method == "OPTIONS":
            allowed = self.context.cors.preflight(Headers(scope=scope))
            if allowed is None:
                await send({"type": "http.response.start", "status": 403, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
            await send({"type": "http.response.start", "status": 204, "headers": allowed})
            await send({"type": "http.response.body", "body": b""})
        else:
            body = error_body("405::method_not_allowed", "Bayeux requests are POSTed")
            await send_json(send, 405, body, [(b"allow", b"POST, GET, OPTIONS")])

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        # Used when the app is served on its own; mounted apps rely on the parent's lifespan.
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.context.open()
                except Exception as error:
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.context.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


class RouterBuilder:
    """Builds the CometD ASGI app. Every route accepts any batch and dispatches on each
    message's ``channel``; the paths only exist so that every client's URL scheme works."""

    def __init__(self) -> None:
        self._handshake = ""
        self._subscribe = ""
        self._connect = ""
        self._disconnect = ""

    def handshake_base_path(self, path: str) -> RouterBuilder:
        self._handshake = _base(path)
        return self

    def subscribe_base_path(self, path: str) -> RouterBuilder:
        self._subscribe = _base(path)
        return self

    def connect_base_path(self, path: str) -> RouterBuilder:
        self._connect = _base(path)
        return self

    def disconnect_base_path(self, path: str) -> RouterBuilder:
        self._disconnect = _base(path)
        return self

    def _paths(self) -> frozenset[str]:
        sub = self._subscribe
        return frozenset(
            {
                sub or "/",
                f"{sub}/",
                f"{sub}/subscribe",
                f"{sub}/unsubscribe",
                f"{self._handshake}/handshake",
                f"{self._connect}/connect",
                f"{self._disconnect}/disconnect",
            }
        )

    def build(self, context: LongPollingServiceContext) -> CometdApp:
        return CometdApp(context, self._paths())

    def build_with_additional_data(
        self, context: LongPollingServiceContext, data: Any
    ) -> CometdApp:
        """Like :meth:`build`; events carry ``data``, or ``data(connection)`` when it is
        callable (sync or async): the Starlette ``Request`` of an HTTP request, or the
        ``WebSocket`` of a socket (both are ``HTTPConnection``). The counterpart of axum's
        ``Extension``."""
        if callable(data):
            return CometdApp(context, self._paths(), data_provider=data)
        return CometdApp(context, self._paths(), data_value=data)


class CometdRoute(BaseRoute):
    """Serves a CometD app at ``path`` and everything below it, for HTTP and WebSocket,
    without the redirect Starlette's ``Mount`` gives the bare path."""

    def __init__(self, path: str, app: ASGIApp) -> None:
        self.path = _base(path)
        self.app = app

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] not in ("http", "websocket"):
            return Match.NONE, {}
        path = _route_path(scope)
        if path == self.path or path.startswith(self.path + "/"):
            root = scope.get("root_path", "")
            return Match.FULL, {"root_path": root + self.path, "app_root_path": root}
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NoMatchFound(name, path_params)

    def __repr__(self) -> str:
        return f"CometdRoute(path={self.path!r})"


def mount(app: Any, path: str, cometd: ASGIApp) -> CometdRoute:
    """Adds a CometD app to a Starlette or FastAPI application (or a ``Router``) at ``path``.
    Use this, or put a :class:`CometdRoute` in ``routes``: a plain ``Mount`` redirects
    ``POST /cometd`` and refuses WebSocket upgrades there."""
    route = CometdRoute(path, cometd)
    router = getattr(app, "router", app)
    router.routes.append(route)
    return route


__all__ = ["CometdApp", "CometdRoute", "RouterBuilder", "mount"]
