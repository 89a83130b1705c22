"""CometD inside a FastAPI application, with an HTTP endpoint that publishes to a channel.

Run: uvicorn examples.fastapi_app:app --port 8000
Then: curl -X POST localhost:8000/announce/hello
"""

from fastapi import FastAPI

from starlette_cometd import LongPollingServiceContextBuilder, RouterBuilder, mount

context = LongPollingServiceContextBuilder().build()
app = FastAPI(lifespan=context.lifespan)
mount(app, "/cometd", RouterBuilder().build(context))


@app.post("/announce/{text}")
async def announce(text: str) -> dict[str, int]:
    """Sends ``text`` to every subscriber of /announcements."""
    await context.send("/announcements", {"text": text})
    return {"sessions": context.stats()["sessions"]}
