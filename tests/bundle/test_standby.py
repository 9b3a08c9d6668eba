"""docs/spec.md §3.3 (changed): a superseded feed stays as a standby; kicks; disconnect mode."""

from __future__ import annotations

import pytest

from rtmp_ingest.bundle import (
    Active,
    BundleConfig,
    EndReason,
    FeedState,
    Reconnecting,
    Registry,
    Superseded,
)
from tests.bundle.helpers import coded, payloads, publish, video

OBS = "198.51.100.7:50000"
OBS_AGAIN = "198.51.100.7:50002"  # the same encoder's reconnect: same host, new port
SPARE = "203.0.113.9:40000"
SPARE_2 = "203.0.113.10:40000"


@pytest.fixture
def registry() -> Registry:
    return Registry(wall_origin_s=1_700_000_000.0)


def on_air(registry: Registry, feed, *, now_s: float, tag: bytes = b"") -> None:
    registry.push_frame(feed, video(int(now_s * 1000), key=True, tag=tag), now_s=now_s)


def test_superseded_feed_stays_connected_as_a_standby_below_its_successor(registry):
    old = publish(registry, "cam1", remote_addr=OBS)
    on_air(registry, old, now_s=0.0)
    spare = publish(registry, "cam1", remote_addr=SPARE, now_s=1.0)
    on_air(registry, spare, now_s=1.0)
    assert spare.state is FeedState.ON_AIR
    assert old.state is FeedState.STANDBY and old.end_reason is None
    assert registry.find_feed(old.feed_id) is old
    superseded = [e for e in registry.drain_events() if isinstance(e, Superseded)]
    assert superseded == [
        Superseded(
            stream_path="live/show",
            source_id="cam1",
            feed_id=old.feed_id,
            by_feed_id=spare.feed_id,
            disconnect=False,
        )
    ]


def test_standby_keyframes_never_take_the_source_back(registry):
    old = publish(registry, "cam1", remote_addr=OBS)
    reader = registry.subscribe("live/show", "cam1")
    on_air(registry, old, now_s=0.0, tag=b"old-0")
    spare = publish(registry, "cam1", remote_addr=SPARE, now_s=1.0)
    on_air(registry, spare, now_s=1.0, tag=b"spare-0")
    on_air(registry, old, now_s=1.1, tag=b"old-1")
    on_air(registry, spare, now_s=1.2, tag=b"spare-1")
    assert payloads(coded(reader.drain_nowait())) == [b"old-0", b"spare-0", b"spare-1"]


def test_superseded_standby_takes_over_when_the_spare_ends(registry):
    old = publish(registry, "cam1", remote_addr=OBS)
    reader = registry.subscribe("live/show", "cam1")
    on_air(registry, old, now_s=0.0, tag=b"old-0")
    spare = publish(registry, "cam1", remote_addr=SPARE, now_s=1.0)
    on_air(registry, spare, now_s=1.0, tag=b"spare-0")
    registry.drain_events()
    registry.end_feed(spare, EndReason.DISCONNECT, now_s=2.0)
    on_air(registry, old, now_s=2.1, tag=b"old-back")
    assert old.state is FeedState.ON_AIR
    assert payloads(coded(reader.drain_nowait()))[-1] == b"old-back"
    assert [type(e) for e in registry.drain_events()] == [Reconnecting, Active]


def test_auto_reconnecting_superseded_encoder_does_not_ping_pong_with_the_spare(registry):
    """OBS reconnects by default: its new feed ranks below the spare that replaced it."""
    old = publish(registry, "cam1", remote_addr=OBS)
    reader = registry.subscribe("live/show", "cam1")
    on_air(registry, old, now_s=0.0)
    spare = publish(registry, "cam1", remote_addr=SPARE, now_s=10.0)
    on_air(registry, spare, now_s=10.0, tag=b"spare-0")
    registry.end_feed(old, EndReason.DISCONNECT, now_s=12.0)  # its network blips
    again = publish(registry, "cam1", remote_addr=OBS_AGAIN, now_s=14.0)  # and it comes back
    assert again.state is FeedState.STANDBY
    on_air(registry, again, now_s=14.1, tag=b"obs-again")
    on_air(registry, spare, now_s=14.2, tag=b"spare-1")
    assert spare.state is FeedState.ON_AIR
    assert payloads(coded(reader.drain_nowait()))[-2:] == [b"spare-0", b"spare-1"]
    registry.end_feed(spare, EndReason.UNPUBLISH, now_s=20.0)  # it still is the backup
    on_air(registry, again, now_s=20.1, tag=b"obs-takes-over")
    assert again.state is FeedState.ON_AIR


def test_reconnect_while_the_superseded_connection_is_still_open_ranks_below_too(registry):
    """A half-dead connection: the encoder reconnects before the server notices."""
    old = publish(registry, "cam1", remote_addr=OBS)
    on_air(registry, old, now_s=0.0)
    spare = publish(registry, "cam1", remote_addr=SPARE, now_s=1.0)
    on_air(registry, spare, now_s=1.0)
    again = publish(registry, "cam1", remote_addr=OBS_AGAIN, now_s=3.0)
    on_air(registry, again, now_s=3.1)
    assert spare.state is FeedState.ON_AIR and again.state is FeedState.STANDBY


def test_reconnect_long_after_the_superseded_encoder_left_is_a_newcomer_again():
    config = BundleConfig(superseded_reconnect_s=30.0)
    registry = Registry(config)
    old = publish(registry, "cam1", remote_addr=OBS)
    on_air(registry, old, now_s=0.0)
    spare = publish(registry, "cam1", remote_addr=SPARE, now_s=1.0)
    on_air(registry, spare, now_s=1.0)
    registry.end_feed(old, EndReason.DISCONNECT, now_s=2.0)
    later = publish(registry, "cam1", remote_addr=OBS_AGAIN, now_s=32.5)
    on_air(registry, later, now_s=32.6)
    assert later.state is FeedState.ON_AIR and spare.state is FeedState.STANDBY


def test_a_second_spare_from_another_address_still_supersedes(registry):
    old = publish(registry, "cam1", remote_addr=OBS)
    on_air(registry, old, now_s=0.0)
    spare = publish(registry, "cam1", remote_addr=SPARE, now_s=1.0)
    on_air(registry, spare, now_s=1.0)
    registry.end_feed(old, EndReason.DISCONNECT, now_s=2.0)
    again = publish(registry, "cam1", remote_addr=OBS_AGAIN, now_s=3.0)
    second = publish(registry, "cam1", remote_addr=SPARE_2, now_s=4.0)
    on_air(registry, second, now_s=4.0)
    assert second.state is FeedState.ON_AIR
    # every feed above a standby must end before it takes over: the first spare
    # outranks the reconnected encoder that it had replaced
    registry.end_feed(second, EndReason.DISCONNECT, now_s=5.0)
    on_air(registry, again, now_s=5.1)
    assert again.state is FeedState.PENDING
    on_air(registry, spare, now_s=5.2)
    assert spare.state is FeedState.ON_AIR and again.state is FeedState.STANDBY


def test_disconnect_mode_cuts_the_superseded_feed():
    registry = Registry(BundleConfig(superseded="disconnect"))
    old = publish(registry, "cam1", remote_addr=OBS)
    on_air(registry, old, now_s=0.0)
    spare = publish(registry, "cam1", remote_addr=SPARE, now_s=1.0)
    on_air(registry, spare, now_s=1.0)
    assert old.state is FeedState.ENDED and old.end_reason is EndReason.SUPERSEDED
    assert registry.find_feed(old.feed_id) is None
    (event,) = [e for e in registry.drain_events() if isinstance(e, Superseded)]
    assert event.disconnect is True and event.feed_id == old.feed_id


def test_disconnect_mode_still_ranks_the_kicked_encoders_reconnect_below_the_spare():
    registry = Registry(BundleConfig(superseded="disconnect"))
    old = publish(registry, "cam1", remote_addr=OBS)
    on_air(registry, old, now_s=0.0)
    spare = publish(registry, "cam1", remote_addr=SPARE, now_s=1.0)
    on_air(registry, spare, now_s=1.0)
    again = publish(registry, "cam1", remote_addr=OBS_AGAIN, now_s=3.0)
    on_air(registry, again, now_s=3.1)
    assert spare.state is FeedState.ON_AIR and again.state is FeedState.STANDBY


def test_unknown_superseded_mode_is_refused():
    with pytest.raises(ValueError, match="superseded"):
        BundleConfig(superseded="cut")


# -- kick ------------------------------------------------------------------------------


def test_kick_ends_the_feed_on_air_and_the_standby_takes_over(registry):
    old = publish(registry, "cam1", remote_addr=OBS)
    on_air(registry, old, now_s=0.0)
    spare = publish(registry, "cam1", remote_addr=SPARE, now_s=1.0)
    on_air(registry, spare, now_s=1.0)
    assert registry.kick_feed(spare.feed_id, now_s=2.0) is spare
    assert spare.state is FeedState.ENDED and spare.end_reason is EndReason.KICKED
    on_air(registry, old, now_s=2.1)
    assert old.state is FeedState.ON_AIR


def test_kick_of_a_standby_leaves_the_feed_on_air_alone(registry):
    old = publish(registry, "cam1", remote_addr=OBS)
    reader = registry.subscribe("live/show", "cam1")
    on_air(registry, old, now_s=0.0)
    spare = publish(registry, "cam1", remote_addr=SPARE, now_s=1.0)
    on_air(registry, spare, now_s=1.0)
    registry.drain_events()
    reader.drain_nowait()
    assert registry.kick_feed(old.feed_id, now_s=2.0) is old
    assert old.end_reason is EndReason.KICKED and spare.state is FeedState.ON_AIR
    assert registry.drain_events() == []
    assert registry.find_feed(old.feed_id) is None
    stats = registry.source_statistics("live/show", "cam1", now_s=2.0)
    assert [f.feed_id for f in stats.feeds] == [spare.feed_id]


def test_kick_of_an_unknown_or_ended_feed_is_none(registry):
    feed = publish(registry, "cam1")
    registry.end_feed(feed, now_s=0.0)
    assert registry.kick_feed(feed.feed_id, now_s=1.0) is None
    assert registry.kick_feed(12345, now_s=1.0) is None


def test_no_double_switch_when_the_feed_on_air_ends(registry):
    """With nothing on air, a standby waits for a connected equal that outranks it."""
    old = publish(registry, "cam1", remote_addr=OBS)
    reader = registry.subscribe("live/show", "cam1")
    on_air(registry, old, now_s=0.0)
    spare = publish(registry, "cam1", remote_addr=SPARE, now_s=1.0)
    on_air(registry, spare, now_s=1.0)
    second = publish(registry, "cam1", remote_addr=SPARE_2, now_s=2.0)
    on_air(registry, second, now_s=2.0)
    reader.drain_nowait()
    registry.end_feed(second, EndReason.DISCONNECT, now_s=3.0)
    on_air(registry, old, now_s=3.1, tag=b"old")
    on_air(registry, spare, now_s=3.2, tag=b"spare")
    assert payloads(coded(reader.drain_nowait())) == [b"spare"]
    assert old.state is FeedState.STANDBY


def test_on_one_machine_the_replaced_encoders_reconnect_still_ranks_below_the_spare(registry):
    """Encoder and spare behind one address (one host, NAT): the address is all there is."""
    old = publish(registry, "cam1", remote_addr="127.0.0.1:50000")
    on_air(registry, old, now_s=0.0)
    spare = publish(registry, "cam1", remote_addr="127.0.0.1:50001", now_s=1.0)
    on_air(registry, spare, now_s=1.0)
    registry.end_feed(old, EndReason.DISCONNECT, now_s=2.0)
    again = publish(registry, "cam1", remote_addr="127.0.0.1:50002", now_s=4.0)
    on_air(registry, again, now_s=4.1)
    assert spare.state is FeedState.ON_AIR and again.state is FeedState.STANDBY
    # the spare's own reconnect takes over from the standby once the spare is gone
    registry.end_feed(spare, EndReason.DISCONNECT, now_s=5.0)
    spare_again = publish(registry, "cam1", remote_addr="127.0.0.1:50003", now_s=5.5)
    assert spare_again.rank > again.rank
