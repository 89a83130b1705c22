"""The ``--demo`` chat page: a small browser client on the CometD JavaScript library.

The page (``index.html``, ``chat.js``, ``style.css`` next to this module) imports the library
as the bare module ``cometd``; an import map in the page points that name either at a public
CDN or, with ``cometd_js``, at a local copy of the npm package served under ``/cometd-js/``.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

COMETD_JS_VERSION = "9.0.0"
"""The npm ``cometd`` version the page is written for."""

CDN_URL = f"https://cdn.jsdelivr.net/npm/cometd@{COMETD_JS_VERSION}/cometd.js"
"""Where the page loads the library from by default."""

LOCAL_PREFIX = "/cometd-js"
"""Where a local copy of the library is served (``--cometd-js DIR``)."""

_HERE = Path(__file__).resolve().parent
_ASSETS = ("chat.js", "style.css")
_NO_CACHE = {"cache-control": "no-cache"}


def path_conflict(cometd_path: str) -> str | None:
    """Why the CometD endpoint cannot live at ``cometd_path`` next to the demo, or ``None``."""
    path = "/" + cometd_path.strip("/")
    taken = ["/", *(f"/{name}" for name in _ASSETS), LOCAL_PREFIX]
    for used in taken:
        if path == used or (used != "/" and path.startswith(used + "/")):
            return f"the demo serves {used}; choose another --path than {cometd_path!r}"
    return None


def library_problem(directory: Path) -> str | None:
    """Why ``directory`` is not a copy of the npm ``cometd`` package, or ``None``."""
    if not (directory / "cometd.js").is_file():
        return f"{directory} has no cometd.js (expected the npm cometd package's directory)"
    return None


def render_index(cometd_path: str, library_url: str) -> str:
    """The page, pointed at the CometD endpoint and at the library."""
    template = (_HERE / "index.html").read_text(encoding="utf-8")
    import_map = json.dumps({"imports": {"cometd": library_url}}, indent=2)
    # Nothing inside the <script> element may close it.
    import_map = import_map.replace("<", "\\u003c")
    endpoint = html.escape("/" + cometd_path.strip("/"), quote=True)
    return template.replace("{{import_map}}", import_map).replace("{{cometd_path}}", endpoint)


def serves(path: str) -> bool:
    """Whether ``path`` is one of the demo's (its page, assets, or the local library's)."""
    names = {"", *(f"/{name}" for name in _ASSETS)}
    return path in names or path == LOCAL_PREFIX or path.startswith(LOCAL_PREFIX + "/")


def demo_routes(cometd_path: str, cometd_js: Path | None = None) -> list[BaseRoute]:
    """The demo's routes: the page at ``/``, its script and style, and the library when
    ``cometd_js`` (a directory holding the npm ``cometd`` package's files) is given."""
    library_url = f"{LOCAL_PREFIX}/cometd.js" if cometd_js is not None else CDN_URL
    page = render_index(cometd_path, library_url)

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers=_NO_CACHE)

    def asset(name: str) -> Route:
        async def serve(request: Request) -> Response:
            return FileResponse(_HERE / name, headers=_NO_CACHE)

        return Route(f"/{name}", serve, methods=["GET", "HEAD"])

    routes: list[BaseRoute] = [Route("/", index, methods=["GET", "HEAD"])]
    routes += [asset(name) for name in _ASSETS]
    if cometd_js is not None:
        library = StaticFiles(directory=cometd_js)
        routes.append(Mount(LOCAL_PREFIX, library, name="cometd-js"))
    return routes


__all__ = ["CDN_URL", "COMETD_JS_VERSION", "LOCAL_PREFIX", "demo_routes"]
