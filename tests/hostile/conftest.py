"""Fixtures of the hostile suite: the daemon as a real `rtmp-ingest serve` process.

Memory bounds are read from the daemon's own /proc/PID/status (VmRSS), so pytest,
PyAV and the attackers in this process never count. The e2e fixtures (the daemon
in-process on port 0, client processes) are re-exported for the tests that need
no RSS figure.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from rtmp_ingest.config import to_toml
from tests.e2e.conftest import REPO, running, spawn, start_daemon  # noqa: F401 - fixtures

#: how long a daemon may take to print its listening line (imports on a loaded machine)
START_TIMEOUT_S = 30.0
SERVE = str(Path(sys.executable).with_name("rtmp-ingest"))
_LISTENING = re.compile(r"listening rtmp=([\d.]+):(\d+).*? http=([\d.]+):(\d+)")


def rss_bytes(pid: int) -> int:
    """Resident set size of process `pid` (VmRSS in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class Served:
    """One `rtmp-ingest serve` child: its ports, log, RSS and exit."""

    def __init__(self, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.process = process
        self.log_path = log_path
        self.rtmp_port = 0
        self.http_port = 0
        #: sent as the bearer key with every API request when set
        self.admin_key = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def url(self, path: str) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/{path}"

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace")

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self.admin_key:
            kwargs.setdefault("headers", {}).setdefault("Authorization", f"Bearer {self.admin_key}")
        async with httpx.AsyncClient(base_url=self.http, timeout=10) as client:
            return await client.request(method, path, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, **kwargs)

    async def source(self, stream: str, source_id: str) -> dict[str, Any] | None:
        response = await self.get(f"/api/v1/streams/{stream}")
        if response.status_code != 200:
            return None
        for source in response.json()["sources"]:
            if source["sourceId"] == source_id:
                return dict(source)
        return None

    async def live_feed_id(self, stream: str, source_id: str) -> int | None:
        source = await self.source(stream, source_id)
        if source and source["state"] == "live" and source.get("onAir"):
            return int(source["onAir"]["id"])
        return None

    async def wait_ready(self) -> None:
        with trio.fail_after(START_TIMEOUT_S):
            while True:
                match = _LISTENING.search(self.log())
                if match:
                    self.rtmp_port, self.http_port = int(match[2]), int(match[4])
                    return
                if not self.alive():
                    raise AssertionError(f"daemon exited {self.process.returncode}: {self.log()}")
                await trio.sleep(0.05)

    async def terminate(self, timeout_s: float = 15.0) -> int:
        """SIGTERM, then the exit code (bounded)."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        with trio.fail_after(timeout_s):
            while self.process.poll() is None:
                await trio.sleep(0.02)
        return self.process.returncode


def write_config(path: Path, data_dir: Path, overrides: dict[str, Any]) -> Path:
    config: dict[str, Any] = {
        "data_dir": str(data_dir),
        #: one server process: its RSS, its descriptors and its signals are what is measured
        "workers": 1,
        "rtmp": {"listen": "127.0.0.1:0"},
        "http": {"listen": "127.0.0.1:0"},
        "srt": {"listen": "127.0.0.1:0"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    path.write_text(to_toml(config), "utf-8")
    return path


def launch(config_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            [SERVE, "serve", "--config", str(config_path)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """`await serve(rtmp={...}, ...)` starts a daemon process with those overrides."""
    children: list[Served] = []

    async def start(**overrides: Any) -> Served:
        n = len(children)
        config = write_config(tmp_path / f"serve{n}.toml", tmp_path / f"data{n}", overrides)
        served = Served(launch(config, tmp_path / f"serve{n}.log"), tmp_path / f"serve{n}.log")
        served.admin_key = overrides.get("http", {}).get("admin_key", "")
        children.append(served)
        await served.wait_ready()
        return served

    yield start
    for served in children:
        if served.alive():
            served.process.kill()
            served.process.wait(timeout=10)
