"""rtmp_ingest: an ingest server for multisource streams."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rtmp-ingest")
except PackageNotFoundError:  # pragma: no cover - running from a tree that is not installed
    __version__ = "0+unknown"
