"""What the hostile tests send and how they watch: raw RTMP bytes, a timed player, feeds.

Attack bytes are built by hand (not by our client core, which refuses to frame
what the server must refuse): a simple handshake, chunks of any declared length,
AMF0 bodies of any size. `Watch` is an RTMP player that notes when each video
message arrives, so a test can assert the longest gap a viewer saw.
"""

from __future__ import annotations

import os
import struct
import subprocess
from typing import Any

import trio

from rtmp_ingest.rtmp import events as ev
from tests.tools.flv_media import Tag, encode_tags
from tests.tools.rtmp_client import TrioRtmpClient

#: RTMP message types (RTMP 1.0 §5.4, §7.1)
SET_CHUNK_SIZE, AUDIO, VIDEO, DATA_AMF0, COMMAND_AMF0 = 1, 8, 9, 18, 20


# -- raw bytes ---------------------------------------------------------------------------


def amf_string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    if len(data) > 0xFFFF:
        return b"\x0c" + struct.pack(">I", len(data)) + data
    return b"\x02" + struct.pack(">H", len(data)) + data


def amf_number(value: float) -> bytes:
    return b"\x00" + struct.pack(">d", value)


def amf_object(props: dict[str, Any]) -> bytes:
    out = b"\x03"
    for key, value in props.items():
        raw = key.encode()
        out += struct.pack(">H", len(raw)) + raw
        out += amf_number(value) if isinstance(value, (int, float)) else amf_string(value)
    return out + b"\x00\x00\x09"


def connect_body(app: str, *extra: bytes) -> bytes:
    return (
        amf_string("connect")
        + amf_number(1)
        + amf_object({"app": app, "tcUrl": f"rtmp://127.0.0.1/{app}"})
        + b"".join(extra)
    )


def many_items_body(total_bytes: int) -> bytes:
    """A connect command whose extra argument is a strict array of ~total/4 tiny strings."""
    count = total_bytes // 4
    return connect_body("live", b"\x0a" + struct.pack(">I", count) + b"\x02\x00\x01a" * count)


def chunk(
    csid: int,
    type_id: int,
    body: bytes,
    *,
    msid: int = 0,
    ts: int = 0,
    chunk_size: int = 128,
    declared: int | None = None,
) -> bytes:
    """One message as chunks (fmt 0 then fmt 3); `declared` overrides the length field."""
    assert 2 <= csid < 64
    length = len(body) if declared is None else declared
    header = (
        bytes([csid])
        + min(ts, 0xFFFFFF).to_bytes(3, "big")
        + length.to_bytes(3, "big")
        + bytes([type_id])
        + struct.pack("<I", msid)
    )
    out = [header, body[:chunk_size]]
    for start in range(chunk_size, len(body), chunk_size):
        out.append(bytes([0xC0 | csid]))
        out.append(body[start : start + chunk_size])
    return b"".join(out)


def set_chunk_size(size: int) -> bytes:
    return chunk(2, SET_CHUNK_SIZE, struct.pack(">I", size))


async def raw_handshake(stream: trio.SocketStream) -> None:
    """The simple (non-digest) handshake: C0 C1, read S0 S1 S2, C2 = S1."""
    await stream.send_all(b"\x03" + bytes(8) + os.urandom(1528))
    data = b""
    with trio.fail_after(10):
        while len(data) < 3073:
            more = await stream.receive_some(65536)
            if not more:
                raise ConnectionError("closed during handshake")
            data += more
    await stream.send_all(data[1:1537])


async def send_until_closed(stream: trio.SocketStream, data: bytes, *, piece: int = 1 << 20) -> int:
    """Sends `data` until the peer stops taking it; returns the bytes the kernel took."""
    view = memoryview(data)
    sent = 0
    try:
        for start in range(0, len(view), piece):
            await stream.send_all(view[start : start + piece])
            sent = min(len(view), start + piece)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    return sent


async def wait_closed(stream: trio.SocketStream, timeout_s: float) -> bool:
    """Reads and discards until EOF/reset; False when `timeout_s` passes first."""
    with trio.move_on_after(timeout_s):
        try:
            while await stream.receive_some(65536):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        return True
    return False


# -- media -------------------------------------------------------------------------------


def media_tags(seconds: float = 4.0) -> tuple[Tag, ...]:
    """Real H.264/AAC FLV tags (cached by flv_media): config tags at ts 0, then frames."""
    return encode_tags(seconds)


def is_video_config(tag: Tag) -> bool:
    return tag.kind == 9 and tag.body[1:2] == b"\x00"


def is_keyframe(tag: Tag) -> bool:
    return tag.kind == 9 and tag.body[0] >> 4 == 1 and tag.body[1:2] == b"\x01"


def padded_keyframe(tag: Tag, pad_bytes: int) -> bytes:
    """`tag`'s AVC keyframe with a filler NAL unit (type 12) of `pad_bytes` appended."""
    filler = b"\x0c" + b"\xff" * (pad_bytes - 2) + b"\x80"
    return tag.body + struct.pack(">I", len(filler)) + filler


async def open_publisher(
    port: int, app: str, name: str, **props: Any
) -> tuple[TrioRtmpClient, int]:
    client = await TrioRtmpClient.open(port)
    await client.connect(app, properties=props or None)
    stream_id = await client.create_stream()
    status = await client.publish(stream_id, name)
    if status is None or status.code != "NetStream.Publish.Start":
        raise AssertionError(f"publish of {app}/{name} refused: {status}")
    return client, stream_id


async def publish_loop(
    port: int, app: str, name: str, *, stop: trio.Event, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    """Publishes real media in real time, looping its timestamps on, until `stop`."""
    tags = media_tags()
    client, sid = await open_publisher(port, app, name)
    task_status.started()
    started = trio.current_time()
    loop_ms = tags[-1].ts_ms + 40
    lap = 0
    try:
        while not stop.is_set():
            for tag in tags:
                if lap and ((tag.ts_ms == 0 and tag.kind != 9) or is_video_config(tag)):
                    continue
                ts = tag.ts_ms + lap * loop_ms
                await trio.sleep_until(started + ts / 1000)
                if stop.is_set():
                    break
                send = {9: client.conn.send_video, 8: client.conn.send_audio}.get(tag.kind)
                if send is None:
                    client.conn.send_data(sid, ts, tag.body)
                else:
                    send(sid, ts, tag.body)
                await client.flush()
            lap += 1
    finally:
        await client.aclose()


# -- watching ----------------------------------------------------------------------------


class Watch:
    """An RTMP player noting when each video message arrives."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.closed_at: float | None = None
        self.first = trio.Event()

    async def run(
        self, port: int, app: str, name: str, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        client = await TrioRtmpClient.open(port)
        try:
            await client.connect(app)
            sid = await client.create_stream()
            await client.play(sid, name)
            task_status.started()
            while not client.closed:
                try:
                    await client._read_once()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    break
                for event in client.events:
                    if isinstance(event, ev.VideoData):
                        self.arrivals.append(trio.current_time())
                        self.first.set()
                client.events.clear()
        finally:
            self.closed_at = trio.current_time()
            await client.aclose()

    def longest_gap_s(self, since: float, until: float) -> float:
        """Longest time without a video message between `since` and `until`."""
        times = [since] + [t for t in self.arrivals if since < t < until] + [until]
        return max(b - a for a, b in zip(times, times[1:], strict=False))

    def frames_between(self, since: float, until: float) -> int:
        return sum(1 for t in self.arrivals if since <= t <= until)


# -- processes ---------------------------------------------------------------------------


def ffmpeg_publish(url: str, seconds: float, *, loglevel: str = "error") -> list[str]:
    """The ffmpeg CLI publishing a small test feed (320x180, 25 fps, 1 s GOP, AAC) in real time."""
    return [
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", loglevel, "-re",
        "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-t", str(seconds),
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
        "-g", "25", "-keyint_min", "25", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "64k", "-f", "flv", url,
    ]  # fmt: skip


async def run_logged(argv: list[str], log_path: Any) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
        )


async def wait_exit(process: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    with trio.move_on_after(timeout_s):
        while process.poll() is None:
            await trio.sleep(0.05)
    return process.poll()
