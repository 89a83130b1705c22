"""Moves the handshake to /cometd/node/0/handshake and the connect to /cometd/node/1/connect.

Run: uvicorn examples.custom_base_paths:app --port 8000
"""

from starlette.applications import Starlette

from starlette_cometd import CometdRoute, LongPollingServiceContextBuilder, RouterBuilder

context = LongPollingServiceContextBuilder().build()

cometd = RouterBuilder().handshake_base_path("/node/0").connect_base_path("/node/1").build(context)

app = Starlette(routes=[CometdRoute("/cometd", cometd)], lifespan=context.lifespan)
