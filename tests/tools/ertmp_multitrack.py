"""Publish an Enhanced RTMP v2 multitrack H.264 feed (simulcast layers), as OBS multitrack video does.

    python -m tests.tools.ertmp_multitrack rtmp://HOST:PORT/APP/STREAM?sourceId=x [--seconds 5]
        [--sizes 320x180,160x90] [--fps 25]

`encode_layers` encodes FFmpeg's testsrc2 once per layer size with libx264 (same
frame rate, same GOP, keyframes aligned), turns the Annex B output into an
AVCDecoderConfigurationRecord plus length-prefixed NAL units. `publish` sends
them with our TrioRtmpClient: onMetaData (with `videoTrackIdInfoMap` for the
extra layers), one multitrack SequenceStart message carrying every layer's
avcC, then one multitrack CodedFrames message per frame time carrying every
layer's frame, paced in real time. Byte layout (docs/ertmp.md):

    byte0 = 0x80 | frameType << 4 | 6 (Multitrack)
    byte1 = AvMultitrackType << 4 | PacketType   (ManyTracks = 1; SequenceStart 0, CodedFrames 1)
    "avc1"
    per track: trackId UI8, size UI24, payload   (CodedFrames payload: SI24 cts + NALUs)
"""

from __future__ import annotations

import argparse
import fractions
import sys
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import av
import trio

from rtmp_ingest.rtmp import NEED_DATA, amf0
from rtmp_ingest.rtmp import events as ev
from tests.tools.rtmp_client import TrioRtmpClient

MULTITRACK = 6
MANY_TRACKS = 1
SEQUENCE_START = 0
CODED_FRAMES = 1
FRAME_KEY = 1
FRAME_INTER = 2


def annexb_nalus(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B byte stream (3- or 4-byte start codes)."""
    out = []
    i = 0
    n = len(data)
    starts = []
    while i + 3 <= n:
        if data[i] == 0 and data[i + 1] == 0 and data[i + 2] == 1:
            starts.append((i, i + 3))
            i += 3
        else:
            i += 1
    for k, (_begin, payload) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else n
        nal = data[payload:end]
        while k + 1 < len(starts) and nal.endswith(b"\x00"):
            nal = nal[:-1]  #: the leading zero of a 4-byte start code
        if nal:
            out.append(nal)
    return out


def length_prefixed(nalus: list[bytes]) -> bytes:
    return b"".join(len(n).to_bytes(4, "big") + n for n in nalus)


def avcc_record(sps: list[bytes], pps: list[bytes]) -> bytes:
    """AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1), 4-byte NAL lengths."""
    first = sps[0]
    out = bytearray((1, first[1], first[2], first[3], 0xFC | 3, 0xE0 | len(sps)))
    for nal in sps:
        out += len(nal).to_bytes(2, "big") + nal
    out.append(len(pps))
    for nal in pps:
        out += len(nal).to_bytes(2, "big") + nal
    return bytes(out)


@dataclass
class EncodedLayer:
    width: int
    height: int
    avcc: bytes = b""
    #: (keyframe, dts ms, cts ms, length-prefixed NAL units)
    frames: list[tuple[bool, int, int, bytes]] = field(default_factory=list)


def encode_layers(
    sizes: list[tuple[int, int]], *, fps: int = 25, seconds: float = 5.0, gop: int | None = None
) -> list[EncodedLayer]:
    """Encodes `seconds` of testsrc2 at each size (blocking; run it in a thread)."""
    gop = gop or fps
    count = round(seconds * fps)
    width, height = sizes[0]
    source = av.open(f"testsrc2=size={width}x{height}:rate={fps}", format="lavfi")
    layers: list[EncodedLayer] = []
    encoders = []
    for w, h in sizes:
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuv420p"
        ctx.time_base = fractions.Fraction(1, fps)
        ctx.framerate = fractions.Fraction(fps, 1)
        ctx.gop_size = gop
        ctx.flags |= av.codec.context.Flags.global_header  #: SPS/PPS in extradata, not in frames
        ctx.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0",
        }
        encoders.append(ctx)
        layers.append(EncodedLayer(w, h))

    def take(layer: EncodedLayer, packets: list[av.Packet]) -> None:
        for packet in packets:
            nalus = [n for n in annexb_nalus(bytes(packet)) if n[0] & 0x1F not in (7, 8, 9)]
            dts_ms = round(packet.dts * 1000 / fps)
            cts_ms = round((packet.pts - packet.dts) * 1000 / fps)
            layer.frames.append((bool(packet.is_keyframe), dts_ms, cts_ms, length_prefixed(nalus)))

    try:
        for index, frame in enumerate(source.decode(video=0)):
            if index >= count:
                break
            for (w, h), ctx, layer in zip(sizes, encoders, layers):
                scaled = frame if (w, h) == (width, height) else frame.reformat(width=w, height=h)
                scaled.pts = index
                scaled.time_base = ctx.time_base
                scaled.pict_type = av.video.frame.PictureType.NONE  #: lavfi marks every frame I
                take(layer, ctx.encode(scaled))
        for ctx, layer in zip(encoders, layers):
            take(layer, ctx.encode(None))
    finally:
        source.close()
    for ctx, layer in zip(encoders, layers):
        nalus = annexb_nalus(bytes(ctx.extradata))
        sps = [n for n in nalus if n[0] & 0x1F == 7]
        pps = [n for n in nalus if n[0] & 0x1F == 8]
        if not sps or not pps:
            raise RuntimeError(f"libx264 extradata has no SPS/PPS: {bytes(ctx.extradata).hex()}")
        layer.avcc = avcc_record(sps, pps)
    keys = [[f[0] for f in layer.frames] for layer in layers]
    if any(k != keys[0] for k in keys):
        raise RuntimeError("layers' keyframes are not aligned")
    return layers


def multitrack_video(frame_type: int, packet_type: int, tracks: list[tuple[int, bytes]]) -> bytes:
    """One E-RTMP ManyTracks video message body for `avc1` tracks [(track id, payload)]."""
    body = bytearray((0x80 | (frame_type << 4) | MULTITRACK, (MANY_TRACKS << 4) | packet_type))
    body += b"avc1"
    for track_id, payload in tracks:
        body.append(track_id)
        body += len(payload).to_bytes(3, "big")
        body += payload
    return bytes(body)


def sequence_start(layers: list[EncodedLayer]) -> bytes:
    return multitrack_video(
        FRAME_KEY, SEQUENCE_START, [(i, layer.avcc) for i, layer in enumerate(layers)]
    )


def coded_frames(layers: list[EncodedLayer], index: int) -> tuple[int, bytes]:
    """(timestamp ms, body) of the multitrack message for frame `index` of every layer."""
    keyframe, dts_ms, _, _ = layers[0].frames[index]
    tracks = []
    for track_id, layer in enumerate(layers):
        _, _, cts_ms, data = layer.frames[index]
        tracks.append((track_id, (cts_ms & 0xFFFFFF).to_bytes(3, "big") + data))
    return dts_ms, multitrack_video(FRAME_KEY if keyframe else FRAME_INTER, CODED_FRAMES, tracks)


def metadata(layers: list[EncodedLayer], fps: int) -> bytes:
    """@setDataFrame onMetaData: layer 0 at the top level, the others in videoTrackIdInfoMap."""
    first = layers[0]
    info = {
        "width": float(first.width),
        "height": float(first.height),
        "framerate": float(fps),
        "videocodecid": float(int.from_bytes(b"avc1", "big")),
        "videoTrackIdInfoMap": {
            str(i): {
                "width": float(layer.width),
                "height": float(layer.height),
                "framerate": float(fps),
            }
            for i, layer in enumerate(layers)
            if i
        },
    }
    return amf0.encode("@setDataFrame", "onMetaData", info)


async def publish(
    port: int,
    app: str,
    name: str,
    layers: list[EncodedLayer],
    *,
    fps: int = 25,
    realtime: bool = True,
    host: str = "127.0.0.1",
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> int:
    """Publishes the layers to rtmp://host:port/app/name; returns the messages sent.

    `task_status.started()` fires once the server accepted the publish. Raises
    RuntimeError when the server refuses the publish.
    """
    client = await TrioRtmpClient.open(port, host)
    try:
        await client.connect(app, properties={"fourCcList": ["avc1"], "capsEx": 2.0})
        stream_id = await client.create_stream()
        status = await client.publish(stream_id, name)
        if status is None or status.code != "NetStream.Publish.Start":
            raise RuntimeError(f"publish refused: {status}")
        task_status.started()
        conn = client.conn
        conn.send_data(stream_id, 0, metadata(layers, fps))
        conn.send_video(stream_id, 0, sequence_start(layers))
        await client.flush()
        sent = 2
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, client)  #: acks, pings and a possible kick
            for index in range(len(layers[0].frames)):
                timestamp_ms, body = coded_frames(layers, index)
                if realtime:
                    await trio.sleep_until(start + timestamp_ms / 1000)
                if client.closed:
                    break
                conn.send_video(stream_id, timestamp_ms, body)
                await client.flush()
                sent += 1
            nursery.cancel_scope.cancel()
        return sent
    finally:
        await client.aclose()


async def _drain(client: TrioRtmpClient) -> None:
    """Reads the server's messages; what they ask us to send goes out with the next frame
    (only the sending task writes to the socket)."""
    while not client.closed:
        data = await client.stream.receive_some(65536)
        if not data:
            client.closed = True
        client.conn.receive_data(data)
        while True:
            event = client.conn.next_event()
            if event is NEED_DATA or isinstance(event, ev.ConnectionClosed):
                break
            if isinstance(event, ev.Status):
                client.events.append(event)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--sizes", default="320x180,160x90")
    parser.add_argument("--fps", type=int, default=25)
    args = parser.parse_args(argv)
    parts = urlsplit(args.url)
    app, _, stream = parts.path.lstrip("/").partition("/")
    name = stream + (f"?{parts.query}" if parts.query else "")
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    layers = encode_layers(sizes, fps=args.fps, seconds=args.seconds)  # type: ignore[arg-type]
    sent = trio.run(
        lambda: publish(
            parts.port or 1935, app, name, layers, fps=args.fps, host=parts.hostname or "127.0.0.1"
        )
    )
    print(f"ertmp_multitrack: sent {sent} messages", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
