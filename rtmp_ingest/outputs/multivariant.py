"""The playlists that span sources: a stream's multivariant playlist and rendition reports."""

from __future__ import annotations

from urllib.parse import quote

from rtmp_ingest.bundle import Media
from rtmp_ingest.outputs.hls import TrackHls
from rtmp_ingest.outputs.hls_source import SourceHls
from rtmp_ingest.outputs.names import source_segment


def rendition_reports(sources: list[SourceHls], source: SourceHls, track: TrackHls) -> str:
    """EXT-X-RENDITION-REPORT lines for the other live tracks of the stream (LL-HLS): where
    each one's newest part is, so a player switching renditions can ask for the right one."""
    lines = []
    for other_source in sources:
        if other_source.ended:
            continue
        for other in other_source.live_tracks():
            if other is track or other.media is not track.media:
                continue
            msn, part = other.last_position()
            if msn < 0:
                continue
            name = f"{quote(other.name)}.m3u8"
            uri = (
                name
                if other_source is source
                else f"../{source_segment(other_source.source_id)}/{name}"
            )
            lines.append(f'#EXT-X-RENDITION-REPORT:URI="{uri}",LAST-MSN={msn},LAST-PART={part}')
    return "".join(line + "\n" for line in lines)


def _name(source_id: str) -> str:
    return "(default)" if not source_id else source_id.replace('"', "%22")


def _unique(name: str, taken: set[str]) -> str:
    """NAME is unique within a rendition group (RFC 8216 4.4.6.1)."""
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name} ({n})", n + 1
    taken.add(candidate)
    return candidate


def multivariant(
    sources: list[SourceHls], default_source_id: str | None, *, prefix: bool = True
) -> str:
    """The stream's multivariant playlist: every live source as an alternative rendition.

    Video sources are the renditions of a VIDEO group per layer (`video0`,
    `video1`, ...), every layer a variant (BANDWIDTH/RESOLUTION of the default
    source's layer); every audio track is a rendition of the one AUDIO group.
    The default source (or, without one, the first) is DEFAULT=YES. With
    `prefix` False the URIs are relative to a source's own directory (a
    source's multivariant playlist).
    """

    def uri(source: SourceHls, track: TrackHls) -> str:
        name = f"{quote(track.name)}.m3u8"
        return f"{source_segment(source.source_id)}/{name}" if prefix else name

    #: no EXT-X-INDEPENDENT-SEGMENTS here: it would cover video segments, and one cut
    #: between keyframes (outputs/hls.py `_too_long`) starts mid-GOP; audio playlists
    #: say it themselves
    lines = ["#EXTM3U", "#EXT-X-VERSION:9"]
    live = [s for s in sources if not s.ended and s.live_tracks()]
    if default_source_id is None or not any(s.source_id == default_source_id for s in live):
        default_source_id = live[0].source_id if live else None
    audio: list[tuple[SourceHls, TrackHls]] = []
    video: dict[str, list[tuple[SourceHls, TrackHls]]] = {}
    for source in live:
        for track in source.live_tracks():
            if track.media is Media.AUDIO:
                audio.append((source, track))
            else:
                video.setdefault(track.name, []).append((source, track))
    audio_default = next(
        (a for a in audio if a[0].source_id == default_source_id), audio[0] if audio else None
    )
    audio_names: set[str] = set()
    for source, track in audio:
        name = _unique(
            _name(source.source_id) + ("" if track.name == "audio0" else f" {track.name}"),
            audio_names,
        )
        default = "YES" if (source, track) == audio_default else "NO"
        lines.append(
            f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="{name}",DEFAULT={default},'
            f'AUTOSELECT=YES,URI="{uri(source, track)}"'
        )
    audio_codecs = sorted({t.codecs_attr for _, t in audio})
    audio_bw = max((t.bandwidth() for _, t in audio), default=0)
    for layer in sorted(video):
        entries = video[layer]
        main = next((e for e in entries if e[0].source_id == default_source_id), entries[0])
        video_names: set[str] = set()
        for source, track in entries:
            default = "YES" if (source, track) == main else "NO"
            lines.append(
                f'#EXT-X-MEDIA:TYPE=VIDEO,GROUP-ID="{layer}",NAME="{_unique(_name(source.source_id), video_names)}",'
                f"DEFAULT={default},AUTOSELECT=YES,"
                f'URI="{uri(source, track)}"'
            )
    for layer in sorted(video):
        entries = video[layer]
        main_source, main_track = next(
            (e for e in entries if e[0].source_id == default_source_id), entries[0]
        )
        codecs = ",".join(sorted({t.codecs_attr for _, t in entries}) + audio_codecs)
        bandwidth = max(t.bandwidth() for _, t in entries) + audio_bw
        attributes = [f"BANDWIDTH={max(bandwidth, 1)}", f'CODECS="{codecs}"']
        spec = main_track.spec
        if spec is not None and spec.width and spec.height:
            attributes.append(f"RESOLUTION={spec.width}x{spec.height}")
        attributes.append(f'VIDEO="{layer}"')
        if audio:
            attributes.append('AUDIO="audio"')
        lines.append("#EXT-X-STREAM-INF:" + ",".join(attributes))
        lines.append(uri(main_source, main_track))
    if not video and audio_default is not None:
        source, track = audio_default
        lines.append(
            f'#EXT-X-STREAM-INF:BANDWIDTH={max(audio_bw, 1)},CODECS="{",".join(audio_codecs)}",'
            f'AUDIO="audio"'
        )
        lines.append(uri(source, track))
    return "\n".join(lines) + "\n"
