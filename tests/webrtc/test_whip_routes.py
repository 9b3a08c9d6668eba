"""The WHIP HTTP surface (RFC 9725) against a stand-in service: statuses, headers, tokens."""

from __future__ import annotations

from typing import Any

import attrs
import httpx
from starlette.applications import Starlette

from rtmp_ingest.api import whip
from rtmp_ingest.config import WebrtcConfig
from rtmp_ingest.server.webrtc_link import WhipError

OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"


@attrs.define
class FakeSession:
    location: str = "Zx81"
    answer: str = "v=0\r\nanswer\r\n"


class FakeService:
    def __init__(self, config: WebrtcConfig) -> None:
        self.config = config
        self.calls: list[dict[str, Any]] = []
        self.deleted: list[str] = []

    async def publish(self, **kwargs: Any) -> FakeSession:
        self.calls.append(kwargs)
        if kwargs["token"] == "refuse":
            raise WhipError(403, "Publish refused: token expired.")
        return FakeSession()

    def delete(self, location: str) -> bool:
        self.deleted.append(location)
        return location == "Zx81"


def client(service: FakeService) -> httpx.AsyncClient:
    app = Starlette(routes=whip.routes(service))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


SDP = {"Content-Type": "application/sdp"}


async def test_publish_answers_201_with_location_and_the_token_from_either_place() -> None:
    service = FakeService(WebrtcConfig())
    async with client(service) as http:
        response = await http.post(
            "/whip/live/show?sourceId=cam&priority=2&x=1",
            content=OFFER,
            headers={**SDP, "Authorization": "Bearer T1"},
        )
        assert response.status_code == 201
        assert response.headers["content-type"] == "application/sdp"
        assert response.headers["location"] == "/whip-session/Zx81"
        assert "Location" in response.headers["access-control-expose-headers"]
        assert response.text == "v=0\r\nanswer\r\n"
        await http.post("/whip/live/show?token=T2", content=OFFER, headers=SDP)
    first, second = service.calls
    assert (first["app"], first["stream"], first["token"]) == ("live", "show", "T1")
    assert first["query"] == {"sourceId": "cam", "priority": "2", "x": "1"}
    assert second["token"] == "T2" and "token" not in second["query"]


async def test_errors_are_plain_text_with_their_status() -> None:
    service = FakeService(WebrtcConfig())
    async with client(service) as http:
        refused = await http.post("/whip/live/s?token=refuse", content=OFFER, headers=SDP)
        assert refused.status_code == 403
        assert refused.text == "Publish refused: token expired.\n"
        assert refused.headers["content-type"].startswith("text/plain")
        assert (await http.post("/whip/live/s", content=OFFER)).status_code == 415
        assert (await http.post("/whip/live/s", content="x=1", headers=SDP)).status_code == 400
        big = "v=0\r\n" + "a=x\r\n" * 20000
        assert (await http.post("/whip/live/s", content=big, headers=SDP)).status_code == 413
        bad = await http.post("/whip/live/s?priority=high", content=OFFER, headers=SDP)
        assert bad.status_code == 400 and "priority" in bad.text
        assert (await http.post("/whip/live", content=OFFER, headers=SDP)).status_code == 400
        assert (await http.post("/whip/live/s", content=b"v=0\xff", headers=SDP)).status_code == 400
    assert service.calls == [] or all(c["token"] == "refuse" for c in service.calls)


async def test_options_delete_patch_and_ice_server_links() -> None:
    config = WebrtcConfig(
        ice_servers=["stun:stun.example.net:3478", "turn:turn.example.net:3478"],
        turn_username="u",
        turn_credential="p",
    )
    service = FakeService(config)
    async with client(service) as http:
        options = await http.options("/whip/live/s")
        assert options.status_code == 204
        assert options.headers["accept-post"] == "application/sdp"
        links = options.headers.get_list("link")
        assert links[0] == '<stun:stun.example.net:3478>; rel="ice-server"'
        assert 'username="u"' in links[1] and 'credential="p"' in links[1]
        created = await http.post("/whip/live/s", content=OFFER, headers=SDP)
        assert len(created.headers.get_list("link")) == 2
        assert (await http.delete("/whip-session/Zx81")).status_code == 200
        assert (await http.delete("/whip-session/nope")).status_code == 404
        patch = await http.patch("/whip-session/Zx81", content="a=end-of-candidates")
        assert patch.status_code == 405 and "DELETE" in patch.headers["allow"]
