"""HLS over HTTP, served from memory (LL-HLS: blocking reloads, preload hints).

    GET /hls/APP/STREAM/index.m3u8                     multivariant: every live source
    GET /hls/APP/STREAM/SOURCE/index.m3u8              one source's multivariant playlist
    GET /hls/APP/STREAM/SOURCE/TRACK.m3u8              media playlist (?_HLS_msn=N[&_HLS_part=P])
    GET /hls/APP/STREAM/SOURCE/TRACK/init-I.mp4        init segment
    GET /hls/APP/STREAM/SOURCE/TRACK/seg-N.m4s         segment
    GET /hls/APP/STREAM/SOURCE/TRACK/part-N.P.m4s      part (blocks while it is being made)

SOURCE is the percent-encoded sourceId, `_` for the default source; TRACK is
`video0`, `video1`, … (multitrack layers) or `audio0`, … . The path is parsed
from the raw (still percent-encoded) request path, so a sourceId may hold any
character. Segments and parts have unique URLs (media sequence numbers
start at the timeline's origin), so they are cacheable; playlists are not.

Every request counts as a sighting of a viewer of its stream (`viewer_seen`). On a
cluster node that starts or keeps the stream's on-demand pull (docs/spec.md §9); a
request that finds nothing while that pull is starting waits, up to
`cluster.pull_wait_s`, for what it asked for instead of answering 404 at once: ffplay
gives up on a 404, while hls.js and ffmpeg wait for a slow playlist (hls.js up to its
load timeout of 10-20 s), so a slow first answer is the one both survive.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rtmp_ingest.api.defs import ApiServer, HlsView
from rtmp_ingest.outputs.hls import TrackHls
from rtmp_ingest.outputs.multivariant import multivariant, rendition_reports
from rtmp_ingest.outputs.names import DEFAULT_SOURCE_IN_PATH

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
NO_CACHE = {"Cache-Control": "no-cache"}
IMMUTABLE = {"Cache-Control": "public, max-age=3600"}
_FILE = re.compile(
    r"^(?:init-(\d{1,18})\.mp4|seg-(\d{1,18})\.m4s|part-(\d{1,18})\.(\d{1,6})\.m4s)$"
)
_NUMBER = re.compile(r"^[0-9]{1,18}$")


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=NO_CACHE)


def _source_id(component: str) -> str:
    return "" if component == DEFAULT_SOURCE_IN_PATH else unquote(component)


def routes(server: ApiServer) -> list[Any]:
    service = server.hls

    def find_track(stream_path: str, source_component: str, track_name: str) -> TrackHls | None:
        source = service.sources.get((stream_path, _source_id(source_component)))
        if source is None:
            return None
        track = source.tracks.get(track_name)
        return track if track is not None and track.spec is not None else None

    def media_playlist(track: TrackHls, key: tuple[str, str]) -> Response:
        text = track.playlist()
        source = service.sources.get(key)
        if source is not None and not track.ended:
            text += rendition_reports(service.stream_sources(key[0]), source, track)
        return Response(text, media_type=PLAYLIST_TYPE, headers=NO_CACHE)

    async def blocking_playlist(
        track: TrackHls, key: tuple[str, str], request: Request
    ) -> Response:
        msn_text = request.query_params.get("_HLS_msn")
        part_text = request.query_params.get("_HLS_part")
        if msn_text is None:
            if part_text is not None:
                return error(400, "_HLS_part needs _HLS_msn")
            return media_playlist(track, key)
        if not _NUMBER.match(msn_text) or (part_text is not None and not _NUMBER.match(part_text)):
            return error(400, "_HLS_msn and _HLS_part must be non-negative integers")
        msn = int(msn_text)
        part = int(part_text) if part_text is not None else None
        last_msn, _ = track.last_position()
        if msn > max(last_msn, track.next_msn - 1) + 2:
            return error(400, f"_HLS_msn={msn} is more than two segments ahead of the playlist")
        service.requests["blocked"] += 1
        timeout = service.settings.block_timeout_targets * track.target_duration
        with trio.move_on_after(timeout):
            while not track.has(msn, part):
                await service.wait_change(key)
        if not track.has(msn, part):
            return error(503, f"segment {msn} part {part} did not arrive within {timeout:.0f} s")
        return media_playlist(track, key)

    async def hls(request: Request) -> Response:
        raw = request.scope.get("raw_path") or request.url.path.encode()
        path = raw.decode("latin-1").split("?", 1)[0]
        rest = path[len("/hls/") :].strip("/")
        parts = rest.split("/")
        if len(parts) < 2:
            return error(404, "use /hls/APP/STREAM/index.m3u8")
        if not service.enabled:
            return error(404, "HLS is off on this server ([hls] enabled = false)")
        coming = False
        for stream_path in _stream_paths(parts):
            coming = service.viewer_seen(stream_path) or coming
        response = await serve(request, parts)
        if response.status_code != 404 or not coming:
            return response
        #: the stream's pull is starting: wait for what was asked (bounded)
        with trio.move_on_after(server.config.cluster.pull_wait_s):
            while response.status_code == 404:
                await service.wait_any_change()
                response = await serve(request, parts)
        return response

    async def serve(request: Request, parts: list[str]) -> Response:
        name = parts[-1]
        if name == "index.m3u8":
            stream_path = unquote("/".join(parts[:-1]))
            service.requests["playlist"] += 1
            if service.has_stream(stream_path):
                text = service.multivariant(stream_path)
                if text is not None:
                    return Response(text, media_type=PLAYLIST_TYPE, headers=NO_CACHE)
            if len(parts) >= 3:
                stream_path = unquote("/".join(parts[:-2]))
                source = service.sources.get((stream_path, _source_id(parts[-2])))
                if source is not None and not source.ended and source.live_tracks():
                    return Response(
                        multivariant([source], source.source_id, prefix=False),
                        media_type=PLAYLIST_TYPE,
                        headers=NO_CACHE,
                    )
            return error(404, f"no live HLS stream or source at {unquote('/'.join(parts[:-1]))!r}")
        if name.endswith(".m3u8"):
            if len(parts) < 3:
                return error(404, "use /hls/APP/STREAM/SOURCE/TRACK.m3u8")
            stream_path = unquote("/".join(parts[:-2]))
            key = (stream_path, _source_id(parts[-2]))
            track = find_track(stream_path, parts[-2], unquote(name[:-5]))
            service.requests["playlist"] += 1
            if track is not None and not track.ready:
                # a new track's playlist is served from its first complete segment on, when
                # its target durations are fixed for good; a player asking earlier waits
                with trio.move_on_after(
                    service.settings.block_timeout_targets * track.target_duration
                ):
                    while not track.ready and not track.ended:
                        await service.wait_change(key)
                if not track.ready:
                    return error(404, f"HLS track {track.name!r} has no complete segment yet")
            if track is None:
                return error(
                    404,
                    f"no HLS track {unquote(name[:-5])!r} for source {key[1]!r} of {stream_path!r}",
                )
            return await blocking_playlist(track, key, request)
        match = _FILE.match(name)
        if match is None or len(parts) < 4:
            return error(404, "not an HLS file name (init-I.mp4, seg-N.m4s, part-N.P.m4s)")
        stream_path = unquote("/".join(parts[:-3]))
        key = (stream_path, _source_id(parts[-3]))
        track = find_track(stream_path, parts[-3], unquote(parts[-2]))
        if track is None:
            return error(
                404, f"no HLS track {unquote(parts[-2])!r} for source {key[1]!r} of {stream_path!r}"
            )
        init_id, seg, part_msn, part_index = match.groups()
        if init_id is not None:
            service.requests["init"] += 1
            data = track.inits.get(int(init_id))
            if data is None:
                return error(404, f"init segment {init_id} is gone")
            return _media(
                data, "video/mp4" if track.media.value == "video" else "audio/mp4", service, track
            )
        if seg is not None:
            service.requests["segment"] += 1
            segment = track.segment(int(seg))
            if segment is None or not segment.complete or segment.data is None:
                return error(404, f"segment {seg} is not in the playlist window")
            return _media(segment.data, "video/iso.segment", service, track)
        service.requests["part"] += 1
        msn, index = int(part_msn), int(part_index)
        data = track.part(msn, index)
        if data is None and track.part_pending(msn, index):
            # a preload hint names the part being made: answer when it is complete
            service.requests["blocked"] += 1
            with trio.move_on_after(service.settings.block_timeout_targets * track.target_duration):
                while (data := track.part(msn, index)) is None and track.part_pending(msn, index):
                    await service.wait_change(key)
        if data is None:
            return error(404, f"part {msn}.{index} is not in the playlist window")
        return _media(data, "video/iso.segment", service, track)

    return [Route("/hls/{rest:path}", hls, methods=["GET"])]


def _stream_paths(parts: list[str]) -> list[str]:
    """The stream path(s) a request's path components may name (an `index.m3u8` is a
    stream's or a source's)."""
    name = parts[-1]
    if name == "index.m3u8":
        candidates = [parts[:-1], parts[:-2]] if len(parts) >= 3 else [parts[:-1]]
    elif name.endswith(".m3u8"):
        candidates = [parts[:-2]] if len(parts) >= 3 else []
    else:
        candidates = [parts[:-3]] if len(parts) >= 4 else []
    return [unquote("/".join(c)) for c in candidates if len(c) >= 2]


def _media(
    data: bytes | memoryview, media_type: str, service: HlsView, track: TrackHls
) -> Response:
    service.bytes_out += len(data)
    track.bytes_out += len(data)
    return Response(bytes(data), media_type=media_type, headers=IMMUTABLE)
