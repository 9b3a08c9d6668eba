"""Internal credentials of a relay (cluster/relay.py): a node vouches for the encoder's
address (and the protocol it used) to the owner; forged, stale or replayed-for-another-stream
ones count for nothing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rtmp_ingest.cluster.relay import (
    HOP_AUTH,
    HOP_KEYS,
    HOP_MAX_AGE_S,
    HOP_PROTOCOL,
    check_hop,
    hop_query,
)
from rtmp_ingest.server.placement import Vouched

SECRET = b"0123456789abcdef0123"
NOW = 1_800_000_000.0


def relayed(protocol: str | None = None, **changes: str) -> dict[str, str]:
    query = {"sourceId": "cam1", "token": "T"}
    query.update(
        hop_query(
            SECRET,
            node_id="B",
            stream_path="live/show",
            remote="203.0.113.9:5000",
            now_s=NOW,
            protocol=protocol,
        )
    )
    query.update(changes)
    return query


def test_valid_credentials_give_the_encoders_address_and_are_removed():
    clean, vouched = check_hop(SECRET, relayed(), stream_path="live/show", now_s=NOW + 1)
    #: credentials that do not name the protocol (an older relay): the connection's own
    assert vouched == Vouched("203.0.113.9:5000", protocol=None)
    assert clean == {"sourceId": "cam1", "token": "T"}


def test_the_encoders_protocol_is_vouched_for_too():
    """An SRT publish relayed over RTMP: the owner is told it was SRT."""
    query = relayed("srt")
    assert query[HOP_PROTOCOL] == "srt"
    clean, vouched = check_hop(SECRET, query, stream_path="live/show", now_s=NOW)
    assert vouched == Vouched("203.0.113.9:5000", protocol="srt")
    assert clean == {"sourceId": "cam1", "token": "T"}


def test_the_protocol_is_signed():
    """It can be neither changed, removed (to pass for an older relay) nor added."""
    changed = relayed("srt", **{HOP_PROTOCOL: "rtmps"})
    removed = relayed("srt")
    del removed[HOP_PROTOCOL]
    added = relayed(**{HOP_PROTOCOL: "srt"})
    for query in (changed, removed, added):
        clean, vouched = check_hop(SECRET, query, stream_path="live/show", now_s=NOW)
        assert vouched is None
        assert clean == {"sourceId": "cam1", "token": "T"}


def test_an_rtmp_publish_goes_unsaid_as_older_versions_relay_it():
    """RTMP is what the relay speaks: its credentials stay those older owners check."""
    assert relayed("rtmp") == relayed()
    assert HOP_PROTOCOL not in relayed("rtmp")


def test_a_protocol_this_version_does_not_know_is_not_shown():
    _, vouched = check_hop(SECRET, relayed("gopher"), stream_path="live/show", now_s=NOW)
    assert vouched == Vouched("203.0.113.9:5000", protocol=None)


def test_an_ordinary_client_has_no_vouched_address():
    clean, vouched = check_hop(SECRET, {"sourceId": "x"}, stream_path="live/show", now_s=NOW)
    assert (clean, vouched) == ({"sourceId": "x"}, None)


def test_forged_stale_or_misdirected_credentials_are_ignored_and_removed():
    for query, path, now in (
        (relayed(**{HOP_AUTH: "0" * 64}), "live/show", NOW),
        (relayed(clusterRemote="198.51.100.1:1"), "live/show", NOW),
        (relayed(), "live/other", NOW),
        (relayed(), "live/show", NOW + HOP_MAX_AGE_S + 1),
        (relayed(), "live/show", NOW - HOP_MAX_AGE_S - 1),
        (relayed("srt"), "live/other", NOW),
    ):
        clean, vouched = check_hop(SECRET, query, stream_path=path, now_s=now)
        assert vouched is None
        assert not set(clean) & HOP_KEYS


def test_another_clusters_secret_is_not_accepted():
    _, vouched = check_hop(b"another-secret-of-16", relayed(), stream_path="live/show", now_s=NOW)
    assert vouched is None


@given(st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=8))
def test_any_query_yields_a_clean_query_never_an_error(query):
    clean, vouched = check_hop(SECRET, query, stream_path="live/show", now_s=NOW)
    assert vouched is None
    assert not set(clean) & HOP_KEYS
