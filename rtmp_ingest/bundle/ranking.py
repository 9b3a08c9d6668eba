# Theory of operation
# -------------------
# How the feeds contending for one source are ordered (docs/spec.md §3.3, §3.4).
#
# A feed's `rank` is `(priority, order)`, compared as tuples: priority first.
# A newcomer's order is `(feed_id, 0)`, so among equal priorities the newest
# ranks highest.  A feed placed just below another one gets
# `below(order_of_that_one, feed_id)`: it sorts under that feed and above every
# feed that one outranks, and the orders stay exact however deep they nest.
#
# Reconnects of a superseded encoder (docs/spec.md §3.3: OBS reconnects by default
# and must not ping-pong with the spare that replaced it).  RTMP gives no
# client identity beyond the address, so the rule keys on the client's host
# (`Feed.client`, the remote address without its port).  When a feed from
# host H is superseded by S, the source remembers "H → S's rank".  A later
# feed from H with S's priority is ranked just below S (a standby, above
# everything S outranked) while a superseded or demoted feed from H is still
# connected — a reconnect often arrives before the server notices that the old
# connection is dead — or within `superseded_reconnect_s` after the last of
# them left.  Later, or once a feed from H went on air again, a feed from H is
# a newcomer like any other.  Behind one address (NAT, one machine) a second
# spare brought up while the replaced encoder is still connected counts as its
# reconnect and waits below the first spare: the operator kicks the first.
# The memory is per source and forgotten when the source's timeline closes.
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rtmp_ingest.bundle.feed import Feed

Order = tuple[int, ...]
Rank = tuple[int, Order]


def newcomer(priority: int, feed_id: int) -> Rank:
    """The rank of a feed that is nobody's reconnect."""
    return (priority, (feed_id, 0))


def below(order: Order, feed_id: int) -> Order:
    """An order just under `order`, above everything `order` outranks."""
    return (*order[:-1], -1, feed_id, 0)


class _Lineage:
    """A host whose feed was superseded: its reconnects rank below `ceiling`."""

    __slots__ = ("ceiling", "until_s")

    def __init__(self, ceiling: Rank) -> None:
        self.ceiling = ceiling
        self.until_s = float("inf")  # while one of its feeds is connected


class Lineages:
    """One source's memory of superseded hosts (see the module comment)."""

    __slots__ = ("_hosts", "_window_s")

    def __init__(self, *, window_s: float) -> None:
        self._window_s = window_s
        self._hosts: dict[str, _Lineage] = {}

    def clear(self) -> None:
        self._hosts.clear()

    def went_on_air(self, feed: Feed) -> None:
        """`feed` is on air: its host's next feeds are newcomers again."""
        feed.superseded = feed.demoted = False
        self._hosts.pop(feed.client, None)

    def superseded(self, loser: Feed, by: Feed) -> None:
        """`by` superseded `loser`: `loser`'s host's reconnects rank below `by`."""
        loser.superseded = True
        self._hosts[loser.client] = _Lineage(by.rank)

    def admit(self, feed: Feed, contenders: Iterable[Feed], now_s: float) -> None:
        """Rank `feed` below its host's successor if it is a superseded encoder's reconnect."""
        lineage = self._hosts.get(feed.client)
        if lineage is None or lineage.ceiling[0] != feed.priority:
            return
        connected = any(f.client == feed.client and (f.superseded or f.demoted) for f in contenders)
        if connected or now_s <= lineage.until_s:
            feed.rank = (feed.priority, below(lineage.ceiling[1], feed.feed_id))
            feed.demoted = True

    def left(self, feed: Feed, now_s: float) -> None:
        """`feed` ended: the reconnect window of its host starts now."""
        lineage = self._hosts.get(feed.client)
        if lineage is not None and (feed.superseded or feed.demoted):
            lineage.until_s = now_s + self._window_s
