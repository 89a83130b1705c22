"""The transports: how Bayeux batches arrive and replies leave. Every transport hands its batches
to :func:`batch.submit`, the one path into the core.

- ``asgi_http``, ``asgi_websocket``: long-polling, callback-polling and WebSocket under any
  ASGI server.
- ``native_http``, ``native_websocket``: a uvicorn protocol that serves the endpoint's
  long-polling and WebSocket itself (``native_http_protocol``); ``ws_frames`` is its RFC 6455
  framing.
- ``http_wire``: headers and error bodies every HTTP path writes the same way.
- ``held_connects``: held ``/meta/connect`` requests and why they end.
- ``sockets``: what both WebSockets share (bound sessions, their held connects, pushes).
- ``handover``: the bytes the native HTTP protocol hands on to uvicorn's own protocol.
- ``batch``: the fast path and the hooked path for one request batch.
- ``message_json``: messages as the application's hooks see them, and their JSON written back
  exactly.
"""
