"""How sources and streams are named in output URLs and on disk.

A sourceId or stream path component is percent-encoded, and the names that
would collide or climb directories (`_`, which names the default source,
`.`, `..`, dotted names) are encoded further, so HLS URLs, the HLS disk copy
and recordings can use them as they are.

On disk a component must also fit a file name: file systems refuse one over
`MAX_FILE_NAME_BYTES` (ENAMETOOLONG), and writers add temporary suffixes. A
component whose encoded form is longer than `MAX_DISK_COMPONENT_BYTES` is
stored as its first `HASHED_PREFIX_CHARS` encoded characters (never cutting a
`%XX` escape), `~`, and the first 32 hex digits of the SHA-256 of the original
text (UTF-8). That is stable across restarts and machines (the same stream
always maps to the same folder), and two long names sharing a prefix still
differ (a chance collision is 2^-128). URLs keep the full encoded name.
"""

from __future__ import annotations

import hashlib
from urllib.parse import quote

#: the default source ("") in URLs and paths (the API uses it too)
DEFAULT_SOURCE_IN_PATH = "_"
#: NAME_MAX of ext4, xfs, btrfs, tmpfs (bytes of one path component)
MAX_FILE_NAME_BYTES = 255
#: the longest component written as it is: leaves room for the writers' temporary
#: suffixes (`.<pid>.<thread id>.<n>.tmp`, up to 45 bytes) under MAX_FILE_NAME_BYTES
MAX_DISK_COMPONENT_BYTES = MAX_FILE_NAME_BYTES - 55
#: encoded characters kept in front of the hash of a name too long for a file name
HASHED_PREFIX_CHARS = 120
#: hex digits of the SHA-256 kept in a hashed name (128 bits)
HASH_HEX_DIGITS = 32


def path_component(text: str) -> str:
    """`text` as one URL path / file name component: percent-encoded, and never `_`, `.`,
    `..` or hidden (those are encoded too), so it cannot collide or climb directories."""
    encoded = quote(text, safe="")
    if encoded == DEFAULT_SOURCE_IN_PATH or encoded.startswith("."):
        encoded = encoded.replace("_", "%5F").replace(".", "%2E")
    return encoded


def disk_component(text: str) -> str:
    """`path_component(text)` made to fit a file name (hashed when longer than
    `MAX_DISK_COMPONENT_BYTES`; see the module comment)."""
    encoded = path_component(text)
    if len(encoded) <= MAX_DISK_COMPONENT_BYTES:
        return encoded
    head = encoded[:HASHED_PREFIX_CHARS]
    cut = head.rfind("%", len(head) - 2)
    if cut >= 0:
        head = head[:cut]  #: never half an escape
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{head}~{digest[:HASH_HEX_DIGITS]}"


def source_segment(source_id: str) -> str:
    """A source's path component in HLS URLs (`_` for the default source)."""
    return path_component(source_id) if source_id else DEFAULT_SOURCE_IN_PATH


def disk_source_segment(source_id: str) -> str:
    """A source's folder name on disk (`_` for the default source), fit for a file name."""
    return disk_component(source_id) if source_id else DEFAULT_SOURCE_IN_PATH


def disk_path(stream_path: str) -> str:
    """A stream path as a relative directory path (each component made safe and short)."""
    return "/".join(disk_component(part) if part else "%00" for part in stream_path.split("/"))
