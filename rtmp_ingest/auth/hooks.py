"""Publish hooks: an HTTP callback on publish, unpublish and play (issue 15).

Like nginx-rtmp's `on_publish` and MediaMTX's `authHTTPAddress`: the server POSTs
a JSON object to `[auth.hooks] url` —

    {"action": "publish" | "unpublish" | "play", "protocol": "rtmp" | "srt" | ...,
     "app": ..., "stream": "APP/STREAM", "sourceId": ..., "query": {...},
     "remoteAddr": "IP:PORT", ...}

— and for publish and play a 2xx answer allows, anything else refuses with the
answer's body (first `MAX_REASON_CHARS`, control characters removed) as the
reason the encoder sees. No answer within `timeout_s`, or no connection, is a
failure, and `on_failure` ("deny" or "allow") decides. Unpublish is a
notification: sent in the background, its answer ignored, dropped (and counted)
when `MAX_PENDING_NOTIFICATIONS` are already in flight.

httpx on trio (via its anyio backend) does the HTTP; one client with a bounded
pool (`MAX_HOOK_CONNECTIONS`) lives as long as `open_hook_client`'s block. At
most `MAX_BODY_BYTES` of an answer are read, redirects are not followed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import attrs
import httpx
import trio

from rtmp_ingest.auth.authorize import HookAnswer, HookSettings, Outcome

log = logging.getLogger("rtmp_ingest.auth.hooks")


#: Bytes of a hook's answer read at most; the reason shown is cut much shorter.
MAX_BODY_BYTES = 4096
#: Characters of a hook's answer shown to the encoder as the refusal reason.
MAX_REASON_CHARS = 200
#: Concurrent connections to the hook; more requests wait for one (within timeout_s).
MAX_HOOK_CONNECTIONS = 32
#: Unpublish notifications in flight at once; beyond it they are dropped and counted.
MAX_PENDING_NOTIFICATIONS = 256


@attrs.frozen(kw_only=True)
class HookStatistics:
    calls: int
    allowed: int
    denied: int
    failures: int
    notifications_dropped: int


def plain_text(data: bytes | str, *, max_chars: int = MAX_REASON_CHARS) -> str:
    """Text safe for a status line: control characters → spaces, collapsed, truncated."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    text = " ".join("".join(" " if _is_control(ch) else ch for ch in text).split())
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def _is_control(ch: str) -> bool:
    code = ord(ch)
    return code < 0x20 or 0x7F <= code <= 0x9F or code in (0x2028, 0x2029)


class HookClient:
    """Asks the hook; made by `open_hook_client`."""

    def __init__(
        self, settings: HookSettings, client: httpx.AsyncClient, nursery: trio.Nursery
    ) -> None:
        self.settings = settings
        self._client = client
        self._nursery = nursery
        self._actions = frozenset(settings.actions) if settings.url else frozenset()
        self._pending = 0
        #: failed calls in a row (the outage is logged when it starts and when it ends)
        self._failing = 0
        self._calls = self._allowed = self._denied = self._failures = self._dropped = 0

    @property
    def on_failure(self) -> str:
        return self.settings.on_failure

    def wants(self, action: str) -> bool:
        return action in self._actions

    def statistics(self) -> HookStatistics:
        return HookStatistics(
            calls=self._calls,
            allowed=self._allowed,
            denied=self._denied,
            failures=self._failures,
            notifications_dropped=self._dropped,
        )

    async def ask(self, action: str, payload: Mapping[str, object]) -> HookAnswer:
        """POSTs the payload; the answer (never raises for the hook's failures)."""
        self._calls += 1
        answer = await self._post({"action": action, **payload})
        if answer.outcome is Outcome.FAILED:
            self._failures += 1
            self._failing += 1
            if self._failing == 1:  #: once per outage, not once per publish
                log.warning(
                    "hook %s failed (%s on failure): %s", action, self.on_failure, answer.reason
                )
            return answer
        if self._failing:
            log.info("hook answers again after %d failed calls", self._failing)
            self._failing = 0
        if answer.outcome is Outcome.ALLOWED:
            self._allowed += 1
        else:
            self._denied += 1
        return answer

    def notify_nowait(self, action: str, payload: Mapping[str, object]) -> bool:
        """Sends a notification in the background; False when it was dropped (or not wanted)."""
        if not self.wants(action):
            return False
        if self._pending >= MAX_PENDING_NOTIFICATIONS:
            self._dropped += 1
            return False
        self._pending += 1
        self._nursery.start_soon(self._notify, action, dict(payload))
        return True

    async def _notify(self, action: str, payload: dict[str, object]) -> None:
        try:
            await self.ask(action, payload)
        finally:
            self._pending -= 1

    async def _post(self, body: Mapping[str, object]) -> HookAnswer:
        #: ASCII JSON: a lone surrogate in client text is escaped, not an encoding error
        content = json.dumps(body, ensure_ascii=True, default=str).encode("ascii")
        with trio.move_on_after(self.settings.timeout_s) as scope:
            try:
                async with self._client.stream(
                    "POST",
                    self.settings.url,
                    content=content,
                    headers={"Content-Type": "application/json", "Accept-Encoding": "identity"},
                ) as response:
                    data = bytearray()
                    #: raw: with identity encoding asked, no decompression bomb to inflate
                    async for chunk in response.aiter_raw():
                        data += chunk
                        if len(data) >= MAX_BODY_BYTES:
                            break
                    status = response.status_code
            except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
                return HookAnswer(
                    outcome=Outcome.FAILED, reason=plain_text(f"{type(exc).__name__}: {exc}")
                )
        if scope.cancelled_caught:
            return HookAnswer(
                outcome=Outcome.FAILED,
                reason=f"no answer within {self.settings.timeout_s:g} s",
            )
        outcome = Outcome.ALLOWED if 200 <= status < 300 else Outcome.DENIED
        return HookAnswer(outcome=outcome, status=status, reason=plain_text(bytes(data)))


@asynccontextmanager
async def open_hook_client(
    settings: HookSettings, *, transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[HookClient]:
    """A `HookClient` for the block's duration; notifications in flight end with the block."""
    timeout = httpx.Timeout(settings.timeout_s)
    limits = httpx.Limits(
        max_connections=MAX_HOOK_CONNECTIONS, max_keepalive_connections=MAX_HOOK_CONNECTIONS
    )
    async with httpx.AsyncClient(
        timeout=timeout,
        limits=limits,
        follow_redirects=False,
        trust_env=False,
        transport=transport,
        headers={"User-Agent": "rtmp-ingest"},
    ) as client:
        async with trio.open_nursery() as nursery:
            yield HookClient(settings, client, nursery)
            nursery.cancel_scope.cancel()
