"""The WHIP HTTP surface (RFC 9725) against a stand-in service: statuses, headers, tokens."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from types import SimpleNamespace
from typing import Any

import attrs
import httpx
import pytest
from starlette.applications import Starlette

from rtmp_ingest.api import publish, whip
from rtmp_ingest.config import WebrtcConfig
from rtmp_ingest.server.webrtc_link import WhipError

OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"


@attrs.define
class FakeFeed:
    feed_id: int = 7


@attrs.define
class FakeSession:
    location: str = "Zx81"
    answer: str = "v=0\r\nanswer\r\n"
    feed: FakeFeed = attrs.Factory(FakeFeed)


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
        assert response.headers["feed-id"] == "7"  #: the feed in the API and its events
        assert "Location" in response.headers["access-control-expose-headers"]
        assert "Feed-Id" in response.headers["access-control-expose-headers"]
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


def page_client(*, webrtc: bool) -> httpx.AsyncClient:
    server = SimpleNamespace(config=SimpleNamespace(webrtc=WebrtcConfig(enabled=webrtc)))
    app = Starlette(routes=publish.routes(server))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_the_publish_page_and_its_script_come_from_this_server_only() -> None:
    async with page_client(webrtc=True) as http:
        page = await http.get("/publish/live/show?sourceId=cam")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp
        scripts = re.findall(r'<script src="([^"]+)"', page.text)
        assert scripts == [publish.script()[1]] and scripts[0].startswith("/assets/publish-")
        config = re.search(r'<script type="application/json" id="config">(.*?)</script>', page.text)
        assert config is not None
        assert json.loads(config.group(1)) == {"stream": "live/show", "whip": True}
        code = await http.get(scripts[0])
        assert code.status_code == 200 and code.headers["content-type"].startswith(
            "text/javascript"
        )
        assert "immutable" in code.headers["cache-control"]
        text = code.text
        #: what the page promises: WHIP POST with a bearer token, H.264 first, no trickle,
        #: DELETE on stop and pagehide
        for needle in (
            '"/whip/"',
            "Bearer ",
            "setCodecPreferences",
            "iceGatheringState",
            '"DELETE"',
            '"pagehide"',
            "getDisplayMedia",
            "getUserMedia",
            "getStats",
        ):
            assert needle in text, needle
        assert "http://" not in text and "https://" not in text, "no script from elsewhere"


async def test_the_publish_page_refuses_odd_paths_and_says_when_whip_is_off() -> None:
    async with page_client(webrtc=False) as http:
        off = await http.get("/publish/live/show")
        assert off.status_code == 200
        assert '"whip": false' in off.text
        for bad in ("/publish/live", "/publish/live/<script>", "/publish/live/../x"):
            assert (await http.get(bad)).status_code == 400, bad
    assert publish.valid_path("live/a.b-c_d/e")
    assert not publish.valid_path("live/" + "x" * publish.MAX_PATH_CHARS)


@pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")
def test_the_publish_script_is_valid_javascript() -> None:
    result = subprocess.run(
        ["node", "--check", str(publish.SCRIPT_FILE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
