"""How sources and streams are named in output URLs and on disk.

A sourceId or stream path component is percent-encoded, and the names that
would collide or climb directories (`_`, which names the default source,
`.`, `..`, dotted names) are encoded further, so HLS URLs, the HLS disk copy
and recordings can use them as they are.
"""

from __future__ import annotations

from urllib.parse import quote

#: the default source ("") in URLs and paths (the API uses it too)
DEFAULT_SOURCE_IN_PATH = "_"


def path_component(text: str) -> str:
    """`text` as one URL path / file name component: percent-encoded, and never `_`, `.`,
    `..` or hidden (those are encoded too), so it cannot collide or climb directories."""
    encoded = quote(text, safe="")
    if encoded == DEFAULT_SOURCE_IN_PATH or encoded.startswith("."):
        encoded = encoded.replace("_", "%5F").replace(".", "%2E")
    return encoded


def source_segment(source_id: str) -> str:
    """A source's path component in HLS URLs and on disk (`_` for the default source)."""
    return path_component(source_id) if source_id else DEFAULT_SOURCE_IN_PATH


def disk_path(stream_path: str) -> str:
    """A stream path as a relative directory path (each component made safe)."""
    return "/".join(path_component(part) if part else "%00" for part in stream_path.split("/"))
