"""Baseline benchmark: pyrtmp's chunk reader on a synthetic publish session.

    .venv/bin/python -m tests.support.bench_pyrtmp_oracle [seconds] [repeat]

Session: ``seconds`` (default 10) of 30 fps video messages (~25 KB, csid 6) and AAC
messages (~400 B, ~43/s, csid 4), message stream 1, in timestamp order; each message is
one type-0 chunk + type-3 continuations.  Measured at chunk size 128 and at 4096 (one
SetChunkSize message first).  ``synthetic_session`` is reusable by other benchmarks.
"""

from __future__ import annotations

import random
import struct
import sys

from tests.support.pyrtmp_oracle import decode_messages, decode_throughput


def _encode(csid: int, mtype: int, msid: int, ts: int, payload: bytes, chunk_size: int) -> bytes:
    out = bytearray([csid])  # csid < 64, fmt 0
    out += min(ts, 0xFFFFFF).to_bytes(3, "big") + len(payload).to_bytes(3, "big")
    out += bytes([mtype]) + struct.pack("<I", msid)
    ext = struct.pack(">I", ts) if ts >= 0xFFFFFF else b""
    out += ext + payload[:chunk_size]
    for i in range(chunk_size, len(payload), chunk_size):
        out += bytes([0xC0 | csid]) + ext + payload[i : i + chunk_size]
    return bytes(out)


def synthetic_messages(seconds: float = 10.0, seed: int = 1):
    """[(csid, type, msid, ts_ms, payload)] in timestamp order."""
    rnd = random.Random(seed)
    msgs = []
    for i in range(int(seconds * 30)):
        n = 25_000 + rnd.randint(-2_000, 2_000)
        msgs.append((6, 9, 1, round(i * 1000 / 30), rnd.randbytes(n)))
    for i in range(int(seconds * 44100 / 1024)):
        n = 400 + rnd.randint(-40, 40)
        msgs.append((4, 8, 1, round(i * 1024 * 1000 / 44100), rnd.randbytes(n)))
    msgs.sort(key=lambda m: (m[3], m[0]))
    return msgs


def synthetic_session(chunk_size: int = 128, seconds: float = 10.0) -> bytes:
    out = bytearray()
    if chunk_size != 128:
        out += _encode(2, 1, 0, 0, struct.pack(">I", chunk_size), 128)
    for csid, mtype, msid, ts, payload in synthetic_messages(seconds):
        out += _encode(csid, mtype, msid, ts, payload, chunk_size)
    return bytes(out)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    repeat = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    for cs in (128, 4096):
        data = synthetic_session(cs, seconds)
        n = len(decode_messages(data))  # sanity: pyrtmp decodes it completely
        mbps = decode_throughput(data, initial_chunk_size=128, repeat=repeat)
        print(
            f"chunk size {cs:5d}: {len(data) / 1e6:6.2f} MB, {n} msgs, pyrtmp {mbps:6.2f} MB/s "
            f"({len(data) / 1e6 / mbps:.2f} s for {seconds:g} s of media)"
        )


if __name__ == "__main__":
    main()
