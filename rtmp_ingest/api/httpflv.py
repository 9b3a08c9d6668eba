"""HTTP-FLV: `GET /APP/STREAM.flv[?sourceId=ID][&layer=N]`, one source as an endless FLV.

The same play loop as RTMP play (server/play.py): instant start from the GOP
cache, continuous timestamps through supersedes and reconnects, waiting for a
stream that is not live yet, skipping to a keyframe when the client reads too
slowly. Chunked transfer; CORS comes from the app's middleware, so browser
players (mpegts.js, flv.js) can read it. A player that stops reading is dropped
after `http.write_timeout_s` by the listener (api/serve.py).

This module is the one part of api/ that imports `rtmp_ingest.server`: it is a
play driver over `server.play`'s functions, which take the server's `Feeds` service.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from rtmp_ingest.api.defs import ApiServer
from rtmp_ingest.outputs.flv import PlayerTrack, flv_header, flv_tag
from rtmp_ingest.server.play import Player, play_batches, resolve_source, wait_for_source

log = logging.getLogger("rtmp_ingest.flv")


#: HTTP-FLV tags go out in writes of about this many bytes (see `body` below).
FLV_WRITE_BYTES = 256 * 1024


def routes(server: ApiServer) -> list[Any]:
    #: server.play's functions take the Feeds service, which ApiServer does not declare
    feeds = cast(Any, server).feeds

    async def stream_flv(request: Request) -> Response:
        path = request.path_params["path"].strip("/")
        requested = request.query_params.get("sourceId")
        layer = request.query_params.get("layer", "0") or "0"
        if "/" not in path or not layer.isdigit():
            return JSONResponse(
                {"error": "use /APP/STREAM.flv[?sourceId=ID][&layer=N]"}, status_code=400
            )
        wait_s = server.config.rtmp.play_wait_s
        if (
            resolve_source(feeds, path, requested) is None
            and await wait_for_source(feeds, path, requested, wait_s) is None
        ):
            what = (
                f"source {requested!r} of {path!r}" if requested is not None else f"stream {path!r}"
            )
            return JSONResponse({"error": f"{what} is not live"}, status_code=404)
        remote = f"{request.client.host}:{request.client.port}" if request.client else "unknown"
        player = Player(
            "flv", path, requested, remote, PlayerTrack(video_track=f"video{int(layer)}")
        )

        async def body() -> AsyncIterator[bytes]:
            yield flv_header()
            log.info(
                "play stream=%s sourceId=%r remote=%s layer=%s http-flv",
                path,
                requested,
                remote,
                layer,
            )
            try:
                async with contextlib.aclosing(
                    play_batches(feeds, player, wait_s=wait_s)
                ) as batches:
                    async for batch in batches:
                        # in writes of about FLV_WRITE_BYTES: a player whose socket is full
                        # then holds one such copy, not a copy of its whole start GOP
                        pending: list[bytes] = []
                        size = 0
                        for message in batch:
                            tag = flv_tag(*message)
                            pending.append(tag)
                            size += len(tag)
                            if size >= FLV_WRITE_BYTES:
                                yield b"".join(pending)
                                pending, size = [], 0
                        if pending:
                            yield b"".join(pending)
            finally:
                log.info(
                    "play end stream=%s sourceId=%r remote=%s reason=%s bytes=%d dropped=%d "
                    "http-flv",
                    path,
                    requested,
                    remote,
                    player.end_reason,
                    player.track.bytes,
                    player.dropped(),
                )

        return StreamingResponse(
            body(), media_type="video/x-flv", headers={"Cache-Control": "no-cache"}
        )

    return [Route("/{path:path}.flv", stream_flv, methods=["GET"])]
