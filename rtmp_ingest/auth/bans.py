"""Temporary publish bans: a kicked source kept away from the client that published it.

The kick API's `ban_s` (docs/spec.md §3.3) bars new publishes of one source of one
stream from one client address for a while, so an encoder that reconnects on its
own (OBS does by default) can be sent away for good. A ban is keyed by
(stream path, source id, client IP) — other sources, other streams and other
clients are untouched — and ends by itself at its expiry (Unix seconds, so the
API can show it). The list is pure and synchronous: the policy consults it in
`decide()`, the API adds and lifts bans; expired bans are dropped lazily through a
heap, and the list holds at most `max_bans` entries (the soonest to expire go first).
"""

from __future__ import annotations

import heapq
import ipaddress

import attrs

#: A ban is an operator's "go away for now", not an access list; a week at most.
MAX_BAN_S = 7 * 86400.0
#: Bans held at once; bounds memory against an API client banning in a loop.
MAX_BANS = 10_000


def normalize_ip(remote_ip: str) -> str:
    """The canonical text of an address (IPv4-mapped IPv6 as IPv4); other text unchanged."""
    try:
        address = ipaddress.ip_address(remote_ip.strip("[]"))
    except ValueError:
        return remote_ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


@attrs.frozen
class BanKey:
    stream_path: str
    source_id: str
    remote_ip: str


@attrs.frozen(kw_only=True)
class Ban:
    """One ban: new publishes of `source_id` on `stream_path` from `remote_ip` are refused."""

    stream_path: str
    source_id: str
    remote_ip: str
    #: Unix seconds
    until_s: float

    def to_json(self) -> dict[str, object]:
        return {
            "stream": self.stream_path,
            "sourceId": self.source_id,
            "remoteIp": self.remote_ip,
            "until": self.until_s,
        }


class BanList:
    """The bans in force; every method takes the current Unix time."""

    def __init__(self, *, max_bans: int = MAX_BANS, max_ban_s: float = MAX_BAN_S) -> None:
        if max_bans < 1 or not max_ban_s > 0:
            raise ValueError("max_bans and max_ban_s must be positive")
        self.max_bans = max_bans
        self.max_ban_s = max_ban_s
        self._bans: dict[BanKey, float] = {}
        #: (until_s, key); entries whose key was re-banned or lifted are skipped when popped
        self._expiry: list[tuple[float, str, str, str]] = []

    def __len__(self) -> int:
        return len(self._bans)

    @staticmethod
    def _key(stream_path: str, source_id: str, remote_ip: str) -> BanKey:
        return BanKey(stream_path, source_id, normalize_ip(remote_ip))

    def _expire(self, now_s: float) -> None:
        expiry = self._expiry
        while expiry and expiry[0][0] <= now_s:
            until_s, path, source, ip = heapq.heappop(expiry)
            key = BanKey(path, source, ip)
            if self._bans.get(key) == until_s:
                del self._bans[key]
        if len(expiry) > 4 * len(self._bans) + 64:  #: lifted/re-banned leftovers: rebuild
            self._expiry = [
                (u, k.stream_path, k.source_id, k.remote_ip) for k, u in self._bans.items()
            ]
            heapq.heapify(self._expiry)

    def ban(
        self, *, stream_path: str, source_id: str, remote_ip: str, duration_s: float, now_s: float
    ) -> Ban:
        """Adds (or extends or shortens) a ban; ValueError for a duration out of (0, max_ban_s]."""
        if not 0 < duration_s <= self.max_ban_s:  #: also false for NaN
            raise ValueError(f"a ban lasts more than 0 and at most {self.max_ban_s:.0f} seconds")
        self._expire(now_s)
        key = self._key(stream_path, source_id, remote_ip)
        until_s = now_s + duration_s
        while key not in self._bans and len(self._bans) >= self.max_bans:
            #: full: the ban closest to its end makes room (the heap's first live entry)
            old_until_s, path, source, ip = heapq.heappop(self._expiry)
            old = BanKey(path, source, ip)
            if self._bans.get(old) == old_until_s:
                del self._bans[old]
        self._bans[key] = until_s
        heapq.heappush(self._expiry, (until_s, key.stream_path, key.source_id, key.remote_ip))
        return Ban(
            stream_path=key.stream_path,
            source_id=key.source_id,
            remote_ip=key.remote_ip,
            until_s=until_s,
        )

    def lift(self, *, stream_path: str, source_id: str, remote_ip: str) -> bool:
        """Ends a ban early; False if there was none."""
        return self._bans.pop(self._key(stream_path, source_id, remote_ip), None) is not None

    def banned_until(
        self, *, stream_path: str, source_id: str, remote_ip: str, now_s: float
    ) -> float | None:
        """The Unix time the matching ban ends, or None when this publish is not banned."""
        until_s = self._bans.get(self._key(stream_path, source_id, remote_ip))
        if until_s is None or until_s <= now_s:
            return None
        return until_s

    def active(self, *, now_s: float) -> list[Ban]:
        """The bans in force, soonest to end first."""
        self._expire(now_s)
        return sorted(
            (
                Ban(
                    stream_path=k.stream_path,
                    source_id=k.source_id,
                    remote_ip=k.remote_ip,
                    until_s=u,
                )
                for k, u in self._bans.items()
            ),
            key=lambda ban: ban.until_s,
        )
