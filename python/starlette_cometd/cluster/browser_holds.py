"""The limit of long-polls one browser may hold at once, counted over the whole cluster.

Each long-poll held over HTTP/1.x ties up one of a browser's few connections to the host, so,
as CometD does, a browser holds one (``max_sessions_per_browser``) and another tab's connect is
answered at once with ``multiple-clients`` advice. On one process the core counts them; in a
cluster a browser's tabs may hold long-polls on different processes, so every one held is also
registered in Redis. That never delays a long-poll: it is held at once, registered with every
other of the same loop turn in one round trip, and answered with the advice as soon as Redis
says another process held one for that browser first. A client polls again as soon as its
long-poll is answered, so an entry is taken out only once its session has held nothing here for
``LINGER``, and written again only for a long-poll that could outlast it: a tab that keeps polling
costs Redis a write every ``LAPSE_GRACE`` seconds or so, not two per poll. While Redis is away,
each process counts its own."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from .connection import REDIS_ERRORS, Connection
from .keys import HOLD, Keys
from .turns import Turns

if TYPE_CHECKING:
    from .._core import Engine, HeldConnect
    from ..transports.held_connects import Parking, Waiter

log = logging.getLogger("starlette_cometd.cluster")

# Seconds an entry outlives its long-poll's timeout: then a node that died holds nothing.
LAPSE_GRACE = 10.0
# Seconds a session's entry stays after its long-poll ended, for the client's next one.
LINGER = 0.25

# A registration (a long-poll held: its time to live in ms and its waiter) or, with no time to
# live, the end of one: (browser, client id, ms, waiter).
_Change = tuple[str, str, int | None, "Waiter | None"]


class BrowserHolds:
    """The long-polls held on this node, as registered in the cluster (see the module)."""

    def __init__(
        self,
        connection: Connection,
        turns: Turns,
        keys: Keys,
        limit: int,
        engine: Engine,
        parking: Parking,
    ) -> None:
        self._hold = connection.script(HOLD)
        # Registrations go to Redis with the requests' writes of their turn.
        self._turns = turns
        self._keys = keys
        self._limit = limit
        self._engine = engine
        self._parking = parking
        # The browser of each session with an entry registered (or on its way) or lingering.
        self._browsers: dict[str, str] = {}
        # When (loop time, a little early) each registered entry lapses in Redis.
        self._lapses_at: dict[str, float] = {}
        # The sessions whose long-poll ended, in that order, and when: their entry goes unless
        # they hold another soon. One timer lets go of those due, rather than one per poll.
        self._lingering: dict[str, float] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._changes: list[_Change] = []
        #: The writes under way (the node waits for them as it stops).
        self.writes: set[asyncio.Task[None]] = set()

    def held(self, held: HeldConnect, waiter: Waiter) -> None:
        """A long-poll is held here: registered at the end of this loop turn, unless the
        session's entry still stands."""
        if not held.counted:
            return  # over a socket, or HTTP/2: it ties up no connection of its own
        client_id = held.client_id
        self._lingering.pop(client_id, None)
        browser = self._browsers.get(client_id)
        if browser is None:
            info = self._engine.session_info(client_id)
            browser = info["browser"] if info is not None else None
            if not browser:
                return
            self._browsers[client_id] = browser
        if asyncio.get_running_loop().time() + held.timeout < self._lapses_at.get(client_id, 0):
            return  # its entry outlasts this long-poll
        self._lapses_at.pop(client_id, None)
        lives = held.timeout + LAPSE_GRACE
        self._queue((browser, client_id, int(lives * 1000), waiter))

    def ended(self, client_id: str) -> None:
        """A long-poll held here ended (answered, released, or its client left)."""
        if client_id in self._browsers and client_id not in self._lingering:
            loop = asyncio.get_running_loop()
            self._lingering[client_id] = loop.time()
            if self._sweep is None:
                self._sweep = loop.call_later(LINGER, self._let_go_lingering)

    def _let_go_lingering(self) -> None:
        """Lets go of the sessions that have held nothing here for ``LINGER`` (at most twice
        that, as the timer goes)."""
        loop = asyncio.get_running_loop()
        due = loop.time() - LINGER
        lingering = self._lingering
        while lingering:
            client_id, since = next(iter(lingering.items()))  # the one that ended first
            if since > due:
                break
            del lingering[client_id]
            self._let_go(client_id)
        self._sweep = loop.call_later(LINGER, self._let_go_lingering) if lingering else None

    def _let_go(self, client_id: str) -> None:
        self._lapses_at.pop(client_id, None)
        browser = self._browsers.pop(client_id, None)
        if browser is not None:
            self._queue((browser, client_id, None, None))

    def close(self) -> None:
        """The node stops: the entries here lapse in Redis by themselves."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        self._lingering.clear()

    def _queue(self, change: _Change) -> None:
        self._changes.append(change)
        if len(self._changes) == 1:
            asyncio.get_running_loop().call_soon(self._write_changes)

    def _write_changes(self) -> None:
        changes, self._changes = self._changes, []
        task = asyncio.create_task(self._write(changes))
        self.writes.add(task)
        task.add_done_callback(self.writes.discard)

    async def _write(self, changes: list[_Change]) -> None:
        try:
            async with self._turns.pipeline() as pipe:
                for browser, client_id, lives, _ in changes:
                    key = self._keys.held_by_browser(browser)
                    if lives is None:
                        pipe.zrem(key, client_id)
                    else:
                        args = [client_id, lives, self._limit]
                        await self._hold(keys=[key], args=args, client=pipe)
                results: list[Any] = await pipe.execute(raise_on_error=False)
        except REDIS_ERRORS as error:
            log.debug("could not register held long-polls: %s", error)
            return
        now = asyncio.get_running_loop().time()
        for (_, client_id, lives, waiter), result in zip(changes, results, strict=True):
            if lives is None:
                continue
            if result == 1 and client_id in self._browsers:
                # Its lifetime is in ms; a second off for the round trip and the clocks.
                self._lapses_at[client_id] = now + lives / 1000 - 1.0
            elif result == 0 and waiter is not None:
                # Another process holds the browser's long-poll: this one is answered now,
                # with the advice, as the core answers one refused on this process.
                self._parking.refuse(client_id, waiter)
            elif isinstance(result, Exception):
                log.warning("Redis refused a held long-poll's registration: %s", result)
