"""FLV and Enhanced RTMP v2 media tags and codec configuration records."""
