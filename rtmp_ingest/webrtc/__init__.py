"""WebRTC (WHIP) ingest: the aiortc process, its link to the daemon, RTP depacketizers.

`link`, `h264`, `opus` and `clock` are sans-IO and import neither asyncio nor
aiortc; `stack`, `receiver` and `process` are the aiortc side, which runs only
in the WebRTC process (`python -m rtmp_ingest.webrtc.process`, docs/spec.md §7).
"""
