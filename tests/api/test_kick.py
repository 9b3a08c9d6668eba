"""Kicks: a source's feed on air, any feed by id, with an optional ban (docs/spec.md §3.3)."""

from __future__ import annotations

import pytest

from tests.api.fake import live_stream


async def test_kicking_a_source_without_a_ban(client, server):
    live_stream(server)
    response = await client.delete("/api/v1/streams/live/show/sources/cam1")
    assert response.status_code == 200
    assert response.json() == {
        "kicked": True,
        "stream": "live/show",
        "sourceId": "cam1",
        "feedId": 1,
        "banS": 0.0,
    }
    assert server.kicks == [("source", "live/show", "cam1", 0.0)]


async def test_kicking_the_default_source_with_a_ban(client, server):
    live_stream(server)
    response = await client.delete("/api/v1/streams/live/show/sources/_?ban_s=300")
    assert response.status_code == 200
    assert response.json()["banS"] == 300.0
    assert server.kicks == [("source", "live/show", "", 300.0)]


@pytest.mark.parametrize("ban", ["-1", "nan", "inf", "1e12", "soon", "1" * 400])
async def test_a_bad_ban_is_refused_with_a_message_and_kicks_nothing(client, server, ban):
    live_stream(server)
    for url in (
        f"/api/v1/streams/live/show/sources/cam1?ban_s={ban}",
        f"/api/v1/streams/live/show/feeds/2?ban_s={ban}",
    ):
        response = await client.delete(url)
        assert response.status_code == 400, url
        assert "ban_s" in response.json()["error"]
    assert server.kicks == []


async def test_a_standby_feed_is_kicked_by_its_id(client, server):
    live_stream(server)
    response = await client.delete("/api/v1/streams/live/show/feeds/2?ban_s=60")
    assert response.status_code == 200
    assert response.json() == {
        "kicked": True,
        "stream": "live/show",
        "sourceId": "cam1",
        "feedId": 2,
        "banS": 60.0,
    }
    assert server.kicks == [("feed", 2, 60.0)]


async def test_a_feed_of_another_stream_or_no_feed_is_404(client, server):
    live_stream(server)
    live_stream(server, "live/other")
    server.registry.streams.pop("live/other")
    assert (await client.delete("/api/v1/streams/live/show/feeds/99")).status_code == 404
    assert (await client.delete("/api/v1/streams/live/nothing/feeds/1")).status_code == 404
    assert server.kicks == []
    server.live_feeds.discard(3)  #: ended between the lookup and the kick
    response = await client.delete("/api/v1/streams/live/show/feeds/3")
    assert response.status_code == 404 and "ended" in response.json()["error"]


@pytest.mark.parametrize("feed_id", ["abc", "-1", "1.5", "9" * 40, "١"])
async def test_a_feed_id_that_is_not_a_number_is_400(client, server, feed_id):
    live_stream(server)
    response = await client.delete(f"/api/v1/streams/live/show/feeds/{feed_id}")
    assert response.status_code == 400
    assert server.kicks == []


async def test_kicking_a_source_without_a_feed_on_air_is_409(client, server):
    live_stream(server)
    server.live_feeds.clear()
    from tests.api.fake import FeedState, feed, source

    server.registry.add(
        "live/gone",
        source(
            "live/gone", "cam", feed(7, path="live/gone", source_id="cam", state=FeedState.STANDBY)
        ),
    )
    response = await client.delete("/api/v1/streams/live/gone/sources/cam")
    assert response.status_code == 409
