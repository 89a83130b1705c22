"""What a read of the cluster's history means (cluster/history.py and pending_replays.py),
without Redis: which ids can be replayed after, two reads joined across a busy partition, and
a replay spliced into what a session taken over missed."""

from __future__ import annotations

from starlette_cometd.cluster.history import Kept, joined, replayable
from starlette_cometd.cluster.pending_replays import spliced

BASE = 1_796_000_000_000_000


def kept(offsets: list[int], *, head: int, evicted: int | None = BASE, at: int = 1000) -> Kept:
    entries = [(offset, f"m{offset}".encode(), at) for offset in offsets]
    return Kept("e", BASE, head, BASE, evicted, 2000, entries)


def test_ids_are_replayed_after_as_in_memory() -> None:
    read = kept([3, 5], head=9, evicted=BASE + 2)
    assert replayable(read, None, None) == [0, 1]
    assert replayable(read, BASE + 2, None) == [0, 1], "the newest pushed out: nothing lost"
    assert replayable(read, BASE + 1, None) is None, "before it: lost"
    assert replayable(read, BASE + 10, None) is None, "never given"
    assert replayable(read, BASE - 1, None) is None, "from before Redis lost the partition"
    # Past their ttl (kept at 1000, read at 2000): gone, as if pushed out.
    assert replayable(read, None, 500) == []
    assert replayable(read, BASE + 2, 500) is None
    never = kept([], head=9, evicted=None)
    assert replayable(never, BASE + 4, None) == []
    assert replayable(never, BASE - 1, None) is None


def test_a_read_again_joins_or_says_what_went_between() -> None:
    first = kept([3], head=4)
    assert joined(first, kept([6], head=7)) == kept([3, 6], head=7)
    assert joined(first, kept([6], head=7, evicted=BASE + 5)) is None, "pushed out meanwhile"
    assert joined(first, kept([], head=7, evicted=None)) is None, "dropped meanwhile"
    never = kept([], head=4, evicted=None)
    assert joined(never, kept([], head=7, evicted=None)) == kept([], head=7, evicted=None)


def test_a_replay_goes_where_the_first_node_would_have_sent_it() -> None:
    def entry(channel: str, to: str | None = None) -> tuple[str, bytes, None, str | None]:
        return (channel, channel.encode(), None, to)

    missed = [(4, entry("/b")), (5, entry("/a")), (6, entry("/a", "c")), (8, entry("/a"))]
    replay = [entry("/a", "c"), entry("/a", "c")]
    assert spliced(missed, "/a", 6, replay) == [
        (4, entry("/b")),
        (6, entry("/a", "c")),  # sent to the session alone: not the replay's
        (6, replay[0]),
        (6, replay[1]),
        (8, entry("/a")),
    ]
