"""What a WHIP publisher (process.py) and a WHEP viewer (sender.py) session share.

One peer connection per session, in the WebRTC process's asyncio loop:

- the offer is parsed first: a malformed one, or one without an audio or video
  section, is answered with an error message (the HTTP status to give) and the
  session is closed before any peer connection exists;
- the peer connection uses the configured ICE servers (`webrtc.ice_servers`; none by
  default: nothing leaves the host for STUN);
- `connected` is set, and the daemon told (`{"op": "connected"}`), when ICE and DTLS
  are up; a connection that fails or closes ends the session (`ice-failed` /
  `ice-closed`), and one that is not up within the connect timeout ends it too
  (`connect-timeout`);
- background tasks (the connect deadline, a deferred close) are referenced so the
  loop does not drop them.

Each kind says what else happens when it connects (`_on_connected`) and how it closes
(`close`).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc import sdp as aiortc_sdp

Message = dict[str, Any]


class PeerBase(abc.ABC):
    """One session's peer connection and the life cycle above (see the module docstring)."""

    def __init__(
        self, session_id: int, config: Message, send_control: Callable[[Message], None]
    ) -> None:
        self.session_id = session_id
        self.config = config
        self.send_control = send_control
        self.pc: RTCPeerConnection | None = None
        self.connected = asyncio.Event()
        self.closed = False
        self._tasks: set[asyncio.Future[Any]] = set()

    def _parse_offer(self, offer: str) -> list[Any] | Message:
        """The offer's audio and video sections, or the error message to answer with."""
        try:
            description = aiortc_sdp.SessionDescription.parse(offer)
        except Exception as exc:  # noqa: BLE001 - any parse failure is the offer's fault
            return self._error(400, f"Malformed SDP offer: {exc}")
        media = [m for m in description.media if m.kind in ("audio", "video")]
        if not media:
            return self._error(400, "The SDP offer has no audio or video section.")
        return media

    def _open_pc(self) -> RTCPeerConnection:
        """The session's peer connection, with the configured ICE servers."""
        servers = [
            RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
            for s in self.config.get("ice_servers", [])
        ]
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        pc.on("connectionstatechange", self._state_changed)
        return pc

    def _error(self, status: int, text: str) -> Message:
        self.closed = True
        return {"op": "error", "session": self.session_id, "status": status, "text": text}

    async def _state_changed(self) -> None:
        pc = self.pc
        if pc is None or self.closed:
            return
        if pc.connectionState == "connected" and not self.connected.is_set():
            self.connected.set()
            self.send_control({"op": "connected", "session": self.session_id})
            await self._on_connected()
        elif pc.connectionState in ("failed", "closed"):
            await self.close(f"ice-{pc.connectionState}")

    @abc.abstractmethod
    async def _on_connected(self) -> None:
        """What the kind does once ICE and DTLS are up."""

    def _start_connect_deadline(self, timeout_s: float) -> None:
        self._spawn(self._connect_deadline(timeout_s))

    async def _connect_deadline(self, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self.connected.wait(), timeout_s)
        except TimeoutError:
            await self.close("connect-timeout")

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close_soon(self, reason: str) -> None:
        self._spawn(self.close(reason))

    @abc.abstractmethod
    async def close(self, reason: str) -> None:
        """Ends the session (once): the peer connection closed, the daemon told why."""

    async def _close_pc(self) -> None:
        pc, self.pc = self.pc, None
        if pc is not None:
            with contextlib.suppress(Exception):
                await pc.close()
