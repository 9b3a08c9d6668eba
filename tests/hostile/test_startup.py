"""Issue 15 defect 3 (token mode needs an admin key beyond loopback) and issue 16
defect 9 (`max_message_bytes` within RTMP's 24-bit length): refused at start, in one line.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import trio

from tests.hostile.conftest import REPO, SERVE, launch, write_config

pytestmark = pytest.mark.e2e

ADMIN_KEY = "hostile-admin-key-0123456789"


async def exits(config: Path, log_path: Path, timeout_s: float = 20.0) -> tuple[int | None, str]:
    """Runs `serve` on `config`; (exit code or None if still running, its output)."""
    process = launch(config, log_path)
    with trio.move_on_after(timeout_s):
        while process.poll() is None and "listening rtmp=" not in log_path.read_text():
            await trio.sleep(0.05)
    code = process.poll()
    if code is None:
        process.kill()
        process.wait(timeout=10)
    return code, log_path.read_text(errors="replace")


def check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SERVE, "config", "--check", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


EXPOSED = [
    pytest.param({"auth": {"mode": "token"}}, "admin_key", id="token-mode"),
    pytest.param({"http": {"protect_metrics": True}}, "admin_key", id="protect-metrics"),
]


@pytest.mark.parametrize(("overrides", "named"), EXPOSED)
async def test_an_open_api_beyond_loopback_is_refused_at_start(tmp_path, overrides, named):
    http = {"listen": "0.0.0.0:0", **overrides.get("http", {})}
    config = write_config(tmp_path / "c.toml", tmp_path / "data", {**overrides, "http": http})
    code, output = await exits(config, tmp_path / "serve.log")
    assert code == 2, f"serve did not refuse (exit {code}): {output[-500:]}"
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) <= 2 and named in output and "Traceback" not in output, output
    checked = check(config)
    assert checked.returncode == 2 and named in checked.stdout + checked.stderr, checked


async def test_token_mode_starts_on_loopback_or_with_an_admin_key(tmp_path):
    for n, http in enumerate(
        ({"listen": "127.0.0.1:0"}, {"listen": "0.0.0.0:0", "admin_key": ADMIN_KEY})
    ):
        config = write_config(tmp_path / f"c{n}.toml", tmp_path / f"data{n}",
                              {"auth": {"mode": "token"}, "http": http})  # fmt: skip
        code, output = await exits(config, tmp_path / f"serve{n}.log")
        assert code is None and "listening rtmp=" in output, output[-500:]


async def test_a_max_message_bytes_no_rtmp_message_can_reach_is_refused(tmp_path):
    default = subprocess.run(
        [SERVE, "config", "--print-default"], capture_output=True, text=True, check=True
    ).stdout
    line = next(x for x in default.splitlines() if x.startswith("max_message_bytes"))
    assert int(line.split("=")[1]) <= 0xFFFFFF, line
    config = write_config(tmp_path / "c.toml", tmp_path / "data",
                          {"rtmp": {"max_message_bytes": 32 * 1024 * 1024}})  # fmt: skip
    checked = check(config)
    assert checked.returncode == 2, checked
    assert "max_message_bytes" in checked.stdout + checked.stderr
