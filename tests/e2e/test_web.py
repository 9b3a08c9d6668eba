"""The multiview page is served, names the stream safely and its script is valid JavaScript."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from rtmp_ingest.api.web import page


async def test_the_multiview_page_is_served_for_a_stream(running):
    response = await running.get("/view/live/show")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    text = response.text
    assert 'const STREAM = "live/show";' in text
    assert running.daemon.config.http.hlsjs_url in text
    assert "/api/v1/events?stream=" in text and "/hls/" in text
    assert (await running.get("/view/justone")).status_code == 400


def test_a_hostile_stream_name_cannot_break_out_of_the_page():
    text = page('live/</script><script>alert(1)</script>"', "https://x.example/hls.js")
    assert "<script>alert(1)</script>" not in text
    assert text.count("</script>") == 2  #: the hls.js tag and the page's own script: no break-out
    assert "<title>live/&lt;/script&gt;" in text


@pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")
def test_the_page_script_is_valid_javascript(tmp_path):
    script = re.findall(r"<script>(.*?)</script>", page("live/show", "hls.js"), re.S)[0]
    (tmp_path / "page.js").write_text(script)
    result = subprocess.run(
        ["node", "--check", str(tmp_path / "page.js")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
