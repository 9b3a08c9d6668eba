# Theory of operation
# -------------------
# Admission decides whether a publish request may start a feed, before the
# registry touches any state (docs/spec.md §3.7, §3.8): a refused publish changes
# nothing.  The checks run from cheapest and most specific to the publisher
# (malformed names) to the ones that depend on the bundle's occupancy (limits),
# and the first failing check names the refusal.
#
# Every refusal carries a `RefusalCode` for programs and a sentence for people:
# the driver sends it as the status description (`NetStream.Publish.BadName`
# for malformed names, `NetStream.Publish.Rejected` otherwise), so it ends up in
# the encoder's log, and logs it for the operator.  Sentences quote names with
# `repr`-style escaping because they are publisher-controlled data.
from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from rtmp_ingest.bundle.records import (
    BundleConfig,
    FeedState,
    PublishRequest,
    RefusalCode,
)

if TYPE_CHECKING:
    from rtmp_ingest.bundle.feed import Feed


@attrs.frozen
class Admitted:
    """The publish is accepted; `feed` is the handle for `push_frame`/`end_feed`."""

    feed: Feed
    state: FeedState


@attrs.frozen
class Refused:
    """The publish is refused; nothing in the registry changed."""

    code: RefusalCode
    reason: str


def _quote(name: str) -> str:
    # ascii() escapes control and non-printable characters so a hostile name
    # cannot forge log lines; the quotes make an empty name visible.
    return ascii(name)


def _has_control_characters(text: str) -> bool:
    # C0, DEL and C1 controls (Unicode category Cc).
    return any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in text)


def check_names(request: PublishRequest, config: BundleConfig) -> Refused | None:
    """Refuse a malformed stream path or source id (docs/spec.md §2)."""
    path = request.stream_path
    if not path or len(path.encode("utf-8", "surrogatepass")) > config.max_stream_path_bytes:
        return Refused(
            RefusalCode.INVALID_STREAM_PATH,
            f"Stream name {_quote(path)} is empty or longer than "
            f"{config.max_stream_path_bytes} bytes.",
        )
    if _has_control_characters(path):
        return Refused(
            RefusalCode.INVALID_STREAM_PATH,
            f"Stream name {_quote(path)} contains control characters.",
        )
    source_id = request.source_id
    #: docs/spec.md §2 — any UTF-8 text up to 128 bytes without control characters.
    try:
        size = len(source_id.encode("utf-8"))
    except UnicodeEncodeError:
        return Refused(
            RefusalCode.INVALID_SOURCE_ID,
            f"Source id {_quote(source_id)} is not valid UTF-8 text.",
        )
    if size > config.max_source_id_bytes:
        return Refused(
            RefusalCode.INVALID_SOURCE_ID,
            f"Source id {_quote(source_id[:40])}... is {size} bytes long; "
            f"the limit is {config.max_source_id_bytes} bytes.",
        )
    if _has_control_characters(source_id):
        return Refused(
            RefusalCode.INVALID_SOURCE_ID,
            f"Source id {_quote(source_id)} contains control characters.",
        )
    return None


def check_permissions(request: PublishRequest) -> Refused | None:
    """Refuse what the publisher's app configuration or token does not grant (docs/spec.md §3.7)."""
    source_id = request.source_id
    permissions = request.permissions
    if source_id != "":
        #: docs/spec.md §3.7 — two gates, both required for a non-default source.
        if not permissions.app_multisource:
            return Refused(
                RefusalCode.MULTISOURCE_NOT_PERMITTED,
                f"Multisource is not enabled for this application; publish without "
                f"sourceId (source id {_quote(source_id)} was given).",
            )
        if not permissions.token_multisource:
            return Refused(
                RefusalCode.MULTISOURCE_NOT_PERMITTED,
                f"The publish token does not grant multisource; publish without "
                f"sourceId (source id {_quote(source_id)} was given).",
            )
    allowed = permissions.allowed_source_ids
    if allowed is not None and source_id not in allowed:
        shown = "the default source" if source_id == "" else f"source id {_quote(source_id)}"
        return Refused(
            RefusalCode.SOURCE_ID_NOT_ALLOWED,
            f"The publish token does not allow {shown} on this stream.",
        )
    return None


def refuse_too_many_streams(config: BundleConfig) -> Refused:
    return Refused(
        RefusalCode.TOO_MANY_STREAMS,
        f"The server already carries {config.max_streams} streams; try again later.",
    )


def refuse_too_many_sources(request: PublishRequest, config: BundleConfig) -> Refused:
    #: docs/spec.md §3.8 — max sources per stream; nothing else in the stream is disturbed.
    return Refused(
        RefusalCode.TOO_MANY_SOURCES,
        f"Stream {_quote(request.stream_path)} already has "
        f"{config.max_sources_per_stream} sources, the limit; source id "
        f"{_quote(request.source_id)} cannot be added.",
    )


def refuse_too_many_feeds(request: PublishRequest, config: BundleConfig) -> Refused:
    return Refused(
        RefusalCode.TOO_MANY_FEEDS,
        f"Source {_quote(request.source_id)} of stream {_quote(request.stream_path)} "
        f"already has {config.max_feeds_per_source} feeds connected (on air and "
        f"standby); close one first.",
    )
