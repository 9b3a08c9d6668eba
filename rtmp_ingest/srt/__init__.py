"""SRT: a thin typed ctypes binding of libsrt 1.5 (`lib`) and stream id parsing (`streamid`).

The driver that uses them is `rtmp_ingest.server.srt`; docs/spec.md §8 says what SRT
publishing must do.
"""
