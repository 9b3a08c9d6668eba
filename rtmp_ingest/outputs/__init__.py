"""Outputs: what viewers get from the bundle (RTMP play, HTTP-FLV, HLS, recordings)."""
