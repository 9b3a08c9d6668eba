"""Chunk decoding throughput: ours vs pyrtmp, on the same bytes, in one run.

    .venv/bin/python bench/bench_chunks.py [--seconds 10] [--repeat 3] [--read-bytes 65536]

The session (tests/support/bench_pyrtmp_oracle.py): 10 s of 30 fps video messages of
~25 KB on chunk stream 6 and AAC messages of ~400 B on chunk stream 4, message
stream 1, as one type-0 chunk + type-3 continuations each, at chunk size 128 and at
4096 (a SetChunkSize first). For each chunk size it measures

- ours_mb_s: `ChunkDecoder.feed` over the bytes in socket-sized reads (messages out);
- ours_events_mb_s: the whole server connection (handshake, connect, publish, then
  the same chunks) up to media events, as the daemon consumes it;
- pyrtmp_mb_s: pyrtmp's own chunk reader over the same bytes;
- encoder_mb_s: our `ChunkEncoder` writing the session's messages;

best of --repeat, MB = 10^6 bytes of input. Prints one JSON object per chunk size,
then a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rtmp_ingest.rtmp import NEED_DATA, ClientConnection, ServerConnection
from rtmp_ingest.rtmp import events as ev
from rtmp_ingest.rtmp.chunk import ChunkDecoder, ChunkEncoder
from tests.support.bench_pyrtmp_oracle import synthetic_messages, synthetic_session
from tests.support.pyrtmp_oracle import decode_messages, decode_throughput


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _slices(data: bytes, read_bytes: int) -> list[bytes]:
    return [data[i : i + read_bytes] for i in range(0, len(data), read_bytes)]


def ours_decoder(data: bytes, read_bytes: int, repeat: int, expected: int) -> float:
    reads = _slices(data, read_bytes)

    def run() -> None:
        decoder = ChunkDecoder()
        count = 0
        for piece in reads:
            count += len(decoder.feed(piece))
        assert count == expected, (count, expected)

    return len(data) / _best(run, repeat) / 1e6


def _session_prefix() -> tuple[bytes, bytes]:
    """Client bytes up to an accepted publish, and the server's handshake reply."""
    client = ClientConnection(digest_handshake=False)
    server = ServerConnection()
    client.connect("live", tc_url="rtmp://127.0.0.1/live")
    client.create_stream()
    client.publish(1, "bench?sourceId=cam1")
    prefix = client.data_to_send()  #: C0+C1
    server.receive_data(prefix)
    client.receive_data(server.data_to_send())  #: S0+S1+S2 → C2 + the pipelined commands
    return prefix + client.data_to_send(), b""


def ours_events(data: bytes, read_bytes: int, repeat: int, expected: int) -> float:
    prefix, _ = _session_prefix()
    reads = _slices(data, read_bytes)

    def run() -> None:
        server = ServerConnection()
        server.receive_data(prefix)
        media = 0
        for piece in [None, *reads]:
            if piece is not None:
                server.receive_data(piece)
            while True:
                event = server.next_event()
                if event is NEED_DATA:
                    break
                cls = type(event)
                if cls is ev.VideoData or cls is ev.AudioData:
                    media += 1
                elif cls is ev.ConnectRequested:
                    server.accept_connect()
                elif cls is ev.PublishRequested:
                    server.accept_publish(event.stream_id)
            server.data_to_send()
        assert media == expected, (media, expected)

    return len(data) / _best(run, repeat) / 1e6


def ours_encoder(messages: list, chunk_size: int, repeat: int) -> float:
    total = sum(len(m[4]) for m in messages)

    def run() -> None:
        encoder = ChunkEncoder()
        encoder.set_chunk_size(chunk_size)
        out = bytearray()
        for csid, type_id, msid, timestamp, body in messages:
            encoder.encode(csid, msid, type_id, timestamp, body, out)
            if len(out) > 1 << 20:
                out.clear()

    return total / _best(run, repeat) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--read-bytes", type=int, default=65536, help="bytes per socket read")
    args = parser.parse_args()
    messages = synthetic_messages(args.seconds)
    rows = []
    for chunk_size in (128, 4096):
        data = synthetic_session(chunk_size, args.seconds)
        expected = len(decode_messages(data, initial_chunk_size=128))
        row = {
            "chunk_size": chunk_size,
            "bytes": len(data),
            "ours_mb_s": round(ours_decoder(data, args.read_bytes, args.repeat, expected), 1),
            "pyrtmp_mb_s": round(
                decode_throughput(data, initial_chunk_size=128, repeat=args.repeat), 2
            ),
            "ours_events_mb_s": round(
                ours_events(data, args.read_bytes, args.repeat, len(messages)), 1
            ),
            "encoder_mb_s": round(ours_encoder(messages, chunk_size, args.repeat), 1),
        }
        row["ratio"] = round(row["ours_mb_s"] / row["pyrtmp_mb_s"], 1)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print()
    print(
        f"{'chunk':>6} {'ours MB/s':>10} {'pyrtmp MB/s':>12} {'ratio':>7} {'events MB/s':>12} {'encoder MB/s':>13}"
    )
    for r in rows:
        print(
            f"{r['chunk_size']:>6} {r['ours_mb_s']:>10} {r['pyrtmp_mb_s']:>12} {r['ratio']:>7} "
            f"{r['ours_events_mb_s']:>12} {r['encoder_mb_s']:>13}"
        )


if __name__ == "__main__":
    main()
