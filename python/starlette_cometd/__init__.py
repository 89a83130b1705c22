"""starlette-cometd: a CometD / Bayeux 1.0 server for Starlette and FastAPI, with a Rust core."""

from ._core import (
    ClientId,
    ClientNotFoundError,
    ContextClosedError,
    InvalidChannelError,
    SendError,
)
from .context import LongPollingServiceContext, LongPollingServiceContextBuilder
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
from .router import CometdApp, CometdRoute, RouterBuilder, mount

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
    "Event",
    "InvalidChannelError",
    "LongPollingServiceContext",
    "LongPollingServiceContextBuilder",
    "RemovalReason",
    "RouterBuilder",
    "SendError",
    "SessionAdded",
    "SessionRemoved",
    "Subscribe",
    "Unsubscribe",
    "mount",
]
