"""starlette-cometd: a CometD / Bayeux 1.0 server for Starlette and FastAPI, with a Rust core."""

from ._core import (
    ClientId,
    ClientNotFoundError,
    ContextClosedError,
    InvalidChannelError,
    ReplayIdError,
    SendError,
)
from .builder import LongPollingServiceContextBuilder
from .cluster.node import EngineUnavailableError
from .context import LongPollingServiceContext
from .cookies import CookieOptions
from .events import (
    CometdCustomDataSender,
    CometdEventReceiver,
    CustomData,
    Event,
    RemovalReason,
    SessionAdded,
    SessionRemoved,
    Subscribe,
    Unsubscribe,
)
from .gc_tuning import tune_gc
from .health import health_route
from .hooks import Extension, Message, MessageRefused, SecurityPolicy, ServerSession
from .router import CometdApp, CometdRoute, RouterBuilder, mount
from .transports.native_http import native_http_protocol

__all__ = [
    "ClientId",
    "ClientNotFoundError",
    "CometdApp",
    "CometdCustomDataSender",
    "CometdEventReceiver",
    "CometdRoute",
    "ContextClosedError",
    "CookieOptions",
    "CustomData",
    "EngineUnavailableError",
    "Event",
    "Extension",
    "InvalidChannelError",
    "LongPollingServiceContext",
    "LongPollingServiceContextBuilder",
    "Message",
    "MessageRefused",
    "RemovalReason",
    "ReplayIdError",
    "RouterBuilder",
    "SecurityPolicy",
    "SendError",
    "ServerSession",
    "SessionAdded",
    "SessionRemoved",
    "Subscribe",
    "Unsubscribe",
    "health_route",
    "mount",
    "native_http_protocol",
    "tune_gc",
]
