"""An SRT caller on our binding (what an encoder's libsrt does), for tests and benches."""

from __future__ import annotations

import attrs

from rtmp_ingest.srt import lib


@attrs.define
class Rejected(Exception):
    """srt_connect was rejected; `reason` is the listener's reject reason (1403, ...)."""

    reason: int


def connect(
    port: int,
    stream_id: str,
    *,
    passphrase: str = "",
    host: str = "127.0.0.1",
    timeout_ms: int = 3000,
) -> int:
    """A connected caller socket (blocking connect); Rejected with the reason on refusal."""
    lib.startup()
    sock = lib.create_socket()
    lib.set_option(sock, lib.Opt.STREAMID, stream_id)
    if passphrase:
        lib.set_option(sock, lib.Opt.PASSPHRASE, passphrase)
    lib.set_option(sock, lib.Opt.SENDER, True)
    try:
        lib.set_option(sock, lib.Opt.CONNTIMEO, timeout_ms)
        lib.connect(sock, host, port)
    except lib.SrtError as exc:
        reason = lib.reject_reason(sock)
        lib.close(sock)
        lib.cleanup()
        if exc.code == lib.ECONNREJ:
            raise Rejected(reason) from None
        raise
    return sock


def send_ts(sock: int, data: bytes) -> None:
    """Sends a transport stream as SRT live messages of 7 TS packets."""
    step = lib.LIVE_PAYLOAD_BYTES
    for pos in range(0, len(data), step):
        lib.sendmsg(sock, data[pos : pos + step])


def close(sock: int) -> None:
    lib.close(sock)
    lib.cleanup()
