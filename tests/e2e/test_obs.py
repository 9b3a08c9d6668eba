"""OBS Studio (headless, Xvfb) publishes a source into a stream that already has a PyAV source.

Run with `make test-obs` (sets RUN_OBS=1). Not part of `make test`: OBS needs ~15 s of
start-up and teardown per run and a display server, and segfaults at exit now and then
(docs/clients.md §4). Uses ../shared/realclients/publish_obs.sh.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tools import clients

PUBLISH_OBS = Path(__file__).resolve().parents[3] / "shared" / "realclients" / "publish_obs.sh"
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.environ.get("RUN_OBS") != "1", reason="OBS test: run `make test-obs`"),
    pytest.mark.skipif(
        not PUBLISH_OBS.exists(), reason="shared/realclients/publish_obs.sh missing"
    ),
]


@pytest.mark.parametrize("layout", ["server-and-key", "query-in-server"])
async def test_obs_joins_a_stream_as_a_second_source(running, spawn, layout):
    stream = "live/show"
    pyav = await spawn(clients.pyav(running.url(stream, sourceId="cam"), 40))
    url = running.url(stream, sourceId="obs")
    env_server = f"rtmp://127.0.0.1:{running.rtmp_port}/live?sourceId=obs"
    argv = ["bash", str(PUBLISH_OBS), url, "8"]
    if layout == "query-in-server":
        argv = ["env", f"OBS_SERVER={env_server}", "OBS_KEY=show", *argv]
    obs = await spawn(argv, "obs")

    async def both_live():
        sources = await running.sources(stream)
        return {k for k, v in sources.items() if v["state"] == "live"} >= {"cam", "obs"} and sources

    sources = await running.wait_for(both_live, timeout_s=60)
    obs_tracks = {(t["media"], t["codec"]) for t in sources["obs"]["tracks"]}
    assert obs_tracks == {("video", "h264"), ("audio", "aac")}
    code = await obs.wait(timeout_s=90)
    assert code in (0, 139), (
        f"publish_obs.sh exit {code}"
    )  # 139: OBS's known segfault after the stop
    pyav.kill()
