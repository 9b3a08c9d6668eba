"""Bans from the kick API's ban_s: one source, one stream, one client, for a while."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtmp_ingest.auth.bans import BanList, normalize_ip

NOW = 1_000_000.0


def _until(bans, path="live/a", source="cam1", ip="10.0.0.1", now=NOW):
    return bans.banned_until(stream_path=path, source_id=source, remote_ip=ip, now_s=now)


def test_a_ban_covers_exactly_its_source_stream_and_client():
    bans = BanList()
    ban = bans.ban(
        stream_path="live/a", source_id="cam1", remote_ip="10.0.0.1", duration_s=60, now_s=NOW
    )
    assert ban.until_s == NOW + 60
    assert _until(bans) == NOW + 60
    assert _until(bans, source="cam2") is None
    assert _until(bans, source="") is None
    assert _until(bans, path="live/b") is None
    assert _until(bans, ip="10.0.0.2") is None
    assert _until(bans, ip="::ffff:10.0.0.1") == NOW + 60  #: same client over a dual-stack socket


def test_a_ban_ends_by_itself_and_can_be_lifted():
    bans = BanList()
    bans.ban(stream_path="live/a", source_id="", remote_ip="::1", duration_s=30, now_s=NOW)
    assert _until(bans, source="", ip="::1", now=NOW + 29.9) is not None
    assert _until(bans, source="", ip="::1", now=NOW + 30) is None
    assert bans.active(now_s=NOW + 30) == [] and len(bans) == 0
    bans.ban(stream_path="live/a", source_id="", remote_ip="::1", duration_s=30, now_s=NOW)
    assert bans.lift(stream_path="live/a", source_id="", remote_ip="0:0:0:0:0:0:0:1")
    assert not bans.lift(stream_path="live/a", source_id="", remote_ip="::1")
    assert _until(bans, source="", ip="::1") is None


def test_banning_again_replaces_the_expiry():
    bans = BanList()
    bans.ban(stream_path="s/a", source_id="x", remote_ip="1.1.1.1", duration_s=100, now_s=NOW)
    bans.ban(stream_path="s/a", source_id="x", remote_ip="1.1.1.1", duration_s=10, now_s=NOW)
    assert _until(bans, "s/a", "x", "1.1.1.1") == NOW + 10
    assert _until(bans, "s/a", "x", "1.1.1.1", now=NOW + 50) is None
    assert len(bans.active(now_s=NOW)) == 1


@pytest.mark.parametrize("duration", [0, -1, math.nan, math.inf, 7 * 86400 + 1])
def test_a_ban_duration_outside_its_range_is_refused(duration):
    with pytest.raises(ValueError, match="ban lasts"):
        BanList().ban(
            stream_path="s/a", source_id="", remote_ip="1.1.1.1", duration_s=duration, now_s=NOW
        )


def test_a_full_list_drops_the_ban_closest_to_its_end():
    bans = BanList(max_bans=3)
    for i, duration in enumerate([50, 10, 30]):
        bans.ban(
            stream_path="s/a", source_id=str(i), remote_ip="1.1.1.1", duration_s=duration, now_s=NOW
        )
    bans.ban(stream_path="s/a", source_id="new", remote_ip="1.1.1.1", duration_s=40, now_s=NOW)
    assert sorted(b.source_id for b in bans.active(now_s=NOW)) == ["0", "2", "new"]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["ban", "lift", "tick"]),
            st.sampled_from(["a", "b", "c"]),
            st.integers(1, 100),
        ),
        max_size=60,
    )
)
def test_the_list_agrees_with_a_plain_dict_model(steps):
    bans = BanList(max_bans=1000)
    model: dict[str, float] = {}
    now = NOW
    for op, source, amount in steps:
        if op == "ban":
            bans.ban(
                stream_path="s/x",
                source_id=source,
                remote_ip="1.1.1.1",
                duration_s=amount,
                now_s=now,
            )
            model[source] = now + amount
        elif op == "lift":
            bans.lift(stream_path="s/x", source_id=source, remote_ip="1.1.1.1")
            model.pop(source, None)
        else:
            now += amount
        for s in "abc":
            expected = model.get(s)
            expected = expected if expected is not None and expected > now else None
            assert _until(bans, "s/x", s, "1.1.1.1", now=now) == expected
        assert {b.source_id for b in bans.active(now_s=now)} == {
            s for s, u in model.items() if u > now
        }


def test_normalize_ip():
    assert normalize_ip("::ffff:192.0.2.1") == "192.0.2.1"
    assert normalize_ip("[::1]") == "::1"
    assert normalize_ip("2001:DB8::1") == "2001:db8::1"
    assert normalize_ip("not an ip") == "not an ip"
