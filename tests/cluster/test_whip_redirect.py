"""WHIP in a cluster (docs/spec.md §9): a stream another node owns gets 307 to that node's
WHIP URL, query included (RFC 9725 §4.5: the client follows it); no owner now → 503."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette

from rtmp_ingest.api import whip
from rtmp_ingest.server.placement import PlacementError

OFFER = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


def client(owner_url) -> httpx.AsyncClient:
    app = Starlette(routes=whip.routes(None, owner_url))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b:8080")


async def test_a_stream_owned_elsewhere_is_redirected_there_with_its_query():
    asked = []

    async def owner_url(path: str) -> str | None:
        asked.append(path)
        return "http://10.0.0.7:8080"

    async with client(owner_url) as http:
        response = await http.post(
            "/whip/live/show?sourceId=cam1&token=T",
            content=OFFER,
            headers={"content-type": "application/sdp"},
        )
    assert response.status_code == 307
    assert (
        response.headers["location"] == "http://10.0.0.7:8080/whip/live/show?sourceId=cam1&token=T"
    )
    assert asked == ["live/show"]


async def test_no_reachable_owner_is_503_with_the_reason():
    async def owner_url(path: str) -> str | None:
        raise PlacementError("The cluster registry cannot be reached; try again later.")

    async with client(owner_url) as http:
        response = await http.post(
            "/whip/live/show", content=OFFER, headers={"content-type": "application/sdp"}
        )
    assert response.status_code == 503
    assert "registry cannot be reached" in response.text
