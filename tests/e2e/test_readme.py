"""The README's publishing recipes, run verbatim against the real daemon.

The multisource recipe's ffmpeg and GStreamer lines are taken out of README.md (only
the URL is put in), so the README cannot drift from what works: each must go live and
send H.264 a browser can decode (not High 4:4:4, High 10 or 4:2:2).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.tools import clients

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
#: profile_idc values browsers' H.264 decoders refuse (High 10, 4:2:2, 4:4:4)
UNDECODABLE_PROFILES = {0x6E, 0x7A, 0xF4}


def recipe_lines() -> dict[str, str]:
    """sourceId → command line of the README's multisource recipe (ffmpeg and gst-launch)."""
    text = README.read_text("utf-8")
    block = text.split("### A multisource stream, and a supersede", 1)[1].split("```sh", 1)[1]
    block = block.split("```", 1)[0]
    found: dict[str, str] = {}
    for line in block.splitlines():
        line = line.strip()
        match = re.search(r"\$URL\?sourceId=(\w+)", line)
        if match and line.startswith(("ffmpeg ", "gst-launch-1.0 ")) and match[1] not in found:
            found[match[1]] = line.removesuffix("&").strip()
    return found


def test_the_recipe_names_an_ffmpeg_and_a_gstreamer_encoder() -> None:
    lines = recipe_lines()
    assert any(line.startswith("ffmpeg ") for line in lines.values())
    assert any(line.startswith("gst-launch-1.0 ") for line in lines.values())


@pytest.mark.skipif(
    not (clients.have("ffmpeg") and clients.have("gst-launch-1.0")),
    reason="needs ffmpeg, GStreamer",
)
async def test_the_readme_multisource_recipe_publishes_browser_decodable_sources(
    running, spawn
) -> None:
    url = running.url("live/show")
    lines = recipe_lines()
    for source_id, line in lines.items():
        argv = shlex.split(line.replace("$URL", url))
        await spawn(argv, name=source_id)

    async def video_codecs() -> set[str] | None:
        response = await running.get("/hls/live/show/index.m3u8")
        if response.status_code != 200:
            return None
        names = set(re.findall(r'TYPE=VIDEO,[^\n]*?NAME="([^"]*)"', response.text))
        if not set(lines) <= names:
            return None
        codecs = ",".join(re.findall(r'CODECS="([^"]*)"', response.text)).split(",")
        return {c for c in codecs if c.startswith("avc1.")}

    found = await running.wait_for(video_codecs, timeout_s=60)
    assert found
    for codec in found:
        assert int(codec[5:7], 16) not in UNDECODABLE_PROFILES, codec
