"""An MPEG-TS feed → the bundle's frames (FLV / E-RTMP tag bodies, like an RTMP feed).

`TsMedia.receive(data)` takes the bytes an SRT caller sent (any split) and
returns the frames they completed; `receive(b"")` at end of stream flushes the
last video frame. Tracks are numbered in PMT order per media: the first video
stream is "video0", the first audio stream "audio0", as for RTMP.

Frames carry what an RTMP publisher would have sent, so every output (RTMP
play, HTTP-FLV, HLS, recording) takes them unchanged:

- H.264: legacy AVC tags (0x17/0x27): the AVCDecoderConfigurationRecord built
  from in-band SPS/PPS (a config frame whenever they change), samples with
  4-byte NAL lengths, AUD/SPS/PPS removed, keyframes = IDR access units.
- HEVC: E-RTMP `hvc1` tags, the record from VPS/SPS/PPS, keyframes = IRAP.
- AAC: legacy AAC tags (0xAF): the AudioSpecificConfig from the ADTS header,
  one frame per ADTS frame, timed 1024 samples apart from the PES's PTS.
- Opus: E-RTMP `Opus` tags, OpusHead from the PMT's channel count, one frame
  per Opus packet. MP3: legacy MP3 tags, one frame per MPEG audio frame.

Timestamps: PTS/DTS (90 kHz, 33 bits) are unwrapped on one clock shared by
all tracks (so A/V stay in step across the 26.5 h wrap), then given in ms.

Damage never ends the feed: a PES that lost a packet is dropped; after a lost
video frame the track skips to its next keyframe (a freeze instead of smeared
pictures); a PES whose payload is not what the PMT says is dropped and counted.
Stream types no output carries (AC-3, subtitles, SCTE-35, KLV…) are ignored.
`TsError` (the input is not MPEG-TS at all) is the only exception.
"""

from __future__ import annotations

from rtmp_ingest.bundle import Frame, Media, TrackInfo
from rtmp_ingest.flv import codecs
from rtmp_ingest.ts import es
from rtmp_ingest.ts.packets import NEED_DATA, ElementaryStream, Lost, Pes, Program, TsDemuxer

#: ISO/IEC 13818-1 Table 2-34 stream_type values (0x06 = PES private data: Opus by its
#: registration descriptor)
STREAM_TYPES = {
    0x1B: "h264",
    0x24: "hevc",
    0x0F: "aac",
    0x03: "mp3",
    0x04: "mp3",
}
PRIVATE_DATA = 0x06
TIMESTAMP_BITS = 33
_WRAP = 1 << TIMESTAMP_BITS
_HALF = 1 << (TIMESTAMP_BITS - 1)
_MASK = _WRAP - 1
CLOCK_HZ = 90_000
_MEDIA_OF = {"h264": Media.VIDEO, "hevc": Media.VIDEO}


class _Track:
    __slots__ = (
        "channels",
        "codec",
        "config",
        "media",
        "needs_keyframe",
        "params",
        "track_id",
    )

    def __init__(self, track_id: str, codec: str, media: Media, channels: int = 0) -> None:
        self.track_id = track_id
        self.codec = codec
        self.media = media
        self.config = b""  #: the last configuration record sent
        self.params: dict[int, bytes] = {}  #: parameter sets by NAL type (video)
        self.needs_keyframe = False
        self.channels = channels


class TsMedia:
    """Demuxing and framing state of one MPEG-TS feed."""

    def __init__(self) -> None:
        self.demux = TsDemuxer()
        self._tracks: dict[int, _Track] = {}
        self._last_raw: int | None = None
        self._ext = 0
        self.dropped = 0  #: frames dropped (lost packets, bad payloads, waiting for a keyframe)
        self.lost = 0  #: PES dropped for lost/damaged packets
        self.ignored_streams: list[tuple[int, int]] = []  #: (pid, stream_type) not carried
        self.first_error: str | None = None

    # -- input ----------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Frame]:
        """Frames completed by `data`; raises TsError only if this is not MPEG-TS."""
        demux = self.demux
        demux.receive_data(data)
        frames: list[Frame] = []
        while True:
            event = demux.next_event()
            if event is NEED_DATA:
                return frames
            if type(event) is Pes:
                track = self._tracks.get(event.pid)
                if track is not None:
                    self._pes(track, event, frames)
            elif type(event) is Lost:
                self._lost(event)
            elif type(event) is Program:
                self._program(event)

    def _error(self, text: str) -> None:
        self.dropped += 1
        if self.first_error is None:
            self.first_error = text

    def _program(self, program: Program) -> None:
        counts = {Media.VIDEO: 0, Media.AUDIO: 0}
        tracks: dict[int, _Track] = {}
        self.ignored_streams = []
        for stream in program.streams:
            codec = _codec_of(stream)
            if codec is None:
                self.ignored_streams.append((stream.pid, stream.stream_type))
                continue
            media = _MEDIA_OF.get(codec, Media.AUDIO)
            track_id = f"{media.value}{counts[media]}"
            counts[media] += 1
            old = self._tracks.get(stream.pid)
            if old is not None and old.codec == codec and old.track_id == track_id:
                tracks[stream.pid] = old
                continue
            channels = es.opus_channels(stream.descriptors) if codec == "opus" else 0
            tracks[stream.pid] = _Track(track_id, codec, media, channels)
        self._tracks = tracks

    def _lost(self, event: Lost) -> None:
        self.lost += 1
        self._error(f"PES lost on PID {event.pid}: {event.reason}")
        track = self._tracks.get(event.pid)
        if track is not None and track.media is Media.VIDEO:
            track.needs_keyframe = True

    # -- timestamps -----------------------------------------------------------------

    def _unwrap(self, raw: int) -> int:
        last = self._last_raw
        if last is None:
            self._ext = raw
        else:
            delta = (raw - last) & _MASK
            if delta >= _HALF:
                delta -= _WRAP
            self._ext += delta
        self._last_raw = raw
        return self._ext

    # -- elementary streams ---------------------------------------------------------

    def _pes(self, track: _Track, pes: Pes, frames: list[Frame]) -> None:
        if pes.pts is None or pes.dts is None:
            self._error(f"{track.track_id}: PES without a PTS")
            return
        dts = self._unwrap(pes.dts)
        cts = (pes.pts - pes.dts) & _MASK
        if cts >= _HALF:
            cts -= _WRAP
        try:
            if track.media is Media.VIDEO:
                self._video(track, pes.data, dts, cts, frames)
            elif track.codec == "aac":
                self._aac(track, pes.data, dts, frames)
            elif track.codec == "opus":
                self._opus(track, pes.data, dts, frames)
            else:
                self._mp3(track, pes.data, dts, frames)
        except es.EsError as exc:
            self._error(f"{track.track_id} ({track.codec}): {exc}")
            if track.media is Media.VIDEO:
                track.needs_keyframe = True

    def _video(self, track: _Track, data: bytes, dts: int, cts: int, frames: list[Frame]) -> None:
        hevc = track.codec == "hevc"
        fresh: dict[int, bytes] = {}
        samples = []
        keyframe = False
        for unit in es.split_annex_b(data):
            if hevc:
                kind = (unit[0] >> 1) & 0x3F
                if es.HEVC_VPS <= kind <= es.HEVC_PPS:
                    fresh.setdefault(kind, unit)  #: the first of each kind in this AU
                    continue
                if kind == es.HEVC_AUD:
                    continue
                keyframe = keyframe or kind in es.HEVC_IRAP
            else:
                kind = unit[0] & 0x1F
                if kind == es.AVC_SPS or kind == es.AVC_PPS:
                    fresh.setdefault(kind, unit)
                    continue
                if kind == es.AVC_AUD:
                    continue
                keyframe = keyframe or kind == es.AVC_IDR
            samples.append(unit)
        dts_ms = dts // 90
        cts_ms = (dts + cts) // 90 - dts_ms
        if fresh:
            track.params.update(fresh)
            self._video_config(track, dts_ms, frames)
        if not samples:
            return
        if not track.config:
            self._error(f"{track.track_id}: coded frame before the parameter sets")
            return
        if track.needs_keyframe:
            if not keyframe:
                self.dropped += 1
                return
            track.needs_keyframe = False
        body = es.length_prefixed(samples)
        cts_bytes = (cts_ms & 0xFFFFFF).to_bytes(3, "big")
        if hevc:
            head = b"\x91hvc1" if keyframe else b"\xa1hvc1"
        else:
            head = b"\x17\x01" if keyframe else b"\x27\x01"
        frames.append(
            Frame(
                track.track_id,
                Media.VIDEO,
                track.codec,
                dts_ms,
                head + cts_bytes + body,
                keyframe,
                False,
                cts_ms,
            )
        )

    def _video_config(self, track: _Track, dts_ms: int, frames: list[Frame]) -> None:
        params = track.params
        if track.codec == "hevc":
            vps, sps, pps = (params.get(k) for k in (es.HEVC_VPS, es.HEVC_SPS, es.HEVC_PPS))
            if vps is None or sps is None or pps is None:
                return
            record, parsed = es.hevc_record(vps, sps, pps)
            info = TrackInfo(width=parsed.width, height=parsed.height)
            body = b"\x90hvc1" + record
        else:
            sps, pps = params.get(es.AVC_SPS), params.get(es.AVC_PPS)
            if sps is None or pps is None:
                return
            record = es.avc_record(sps, pps)
            info = None
            body = b"\x17\x00\x00\x00\x00" + record
        if record == track.config:
            return
        described = codecs.describe_config(track.codec, record)
        profile = described.get("profile")
        info = TrackInfo(
            width=info.width if info else None,
            height=info.height if info else None,
            profile=str(profile) if profile is not None else None,
        )
        track.config = record
        frames.append(
            Frame(track.track_id, Media.VIDEO, track.codec, dts_ms, body, False, True, 0, info)
        )

    def _aac(self, track: _Track, data: bytes, dts: int, frames: list[Frame]) -> None:
        at = dts
        for frame in es.split_adts(data):
            if frame.config != track.config:
                track.config = frame.config
                described = codecs.describe_config("aac", frame.config)
                info = TrackInfo(
                    sample_rate=frame.sample_rate,
                    channels=frame.channels or None,
                    profile=str(described.get("profile", "")) or None,
                )
                frames.append(
                    Frame(
                        track.track_id,
                        Media.AUDIO,
                        "aac",
                        at // 90,
                        b"\xaf\x00" + frame.config,
                        False,
                        True,
                        0,
                        info,
                    )
                )
            frames.append(
                Frame(track.track_id, Media.AUDIO, "aac", at // 90, b"\xaf\x01" + frame.data, True)
            )
            at += frame.blocks * 1024 * CLOCK_HZ // frame.sample_rate

    def _opus(self, track: _Track, data: bytes, dts: int, frames: list[Frame]) -> None:
        at = dts
        for packet in es.split_opus(data):
            if not track.config:
                track.config = es.opus_head(track.channels or 2)
                info = TrackInfo(sample_rate=es.OPUS_SAMPLE_RATE, channels=track.channels or 2)
                frames.append(
                    Frame(
                        track.track_id,
                        Media.AUDIO,
                        "opus",
                        at // 90,
                        b"\x90Opus" + track.config,
                        False,
                        True,
                        0,
                        info,
                    )
                )
            frames.append(
                Frame(track.track_id, Media.AUDIO, "opus", at // 90, b"\x91Opus" + packet, True)
            )
            at += es.opus_packet_samples(packet) * CLOCK_HZ // es.OPUS_SAMPLE_RATE

    def _mp3(self, track: _Track, data: bytes, dts: int, frames: list[Frame]) -> None:
        at = dts
        for frame in es.split_mp3(data):
            info = None
            if not track.config:
                track.config = b"mp3"
                info = TrackInfo(sample_rate=frame.sample_rate, channels=frame.channels)
            header = 0x2F if frame.channels == 2 else 0x2E  #: MP3, "44 kHz", 16-bit
            frames.append(
                Frame(
                    track.track_id,
                    Media.AUDIO,
                    "mp3",
                    at // 90,
                    bytes((header,)) + frame.data,
                    True,
                    False,
                    0,
                    info,
                )
            )
            at += frame.samples * CLOCK_HZ // frame.sample_rate


def _codec_of(stream: ElementaryStream) -> str | None:
    codec = STREAM_TYPES.get(stream.stream_type)
    if codec is not None:
        return codec
    if stream.stream_type == PRIVATE_DATA and stream.registration() == b"Opus":
        return "opus"
    return None
