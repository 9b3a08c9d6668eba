"""The real daemon on loopback port 0, started inside the test's trio loop."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import trio

from rtmp_ingest import config as config_mod
from rtmp_ingest.app import App as Daemon

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Running:
    """A started daemon and handy URLs."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        assert daemon.bound is not None
        self.rtmp_port = daemon.bound.rtmp[1]
        self.http_port = daemon.bound.http[1]
        self.rtmps_port = daemon.bound.rtmps[1] if daemon.bound.rtmps else None
        self.http = f"http://127.0.0.1:{self.http_port}"

    def url(self, path: str, **query: str) -> str:
        q = "&".join(f"{k}={v}" for k, v in query.items())
        return f"rtmp://127.0.0.1:{self.rtmp_port}/{path}" + (f"?{q}" if q else "")

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.http, timeout=10) as client:
            return await client.get(path, **kwargs)

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.http, timeout=10) as client:
            return await client.request(method, path, **kwargs)

    async def sources(self, stream: str) -> dict[str, Any]:
        response = await self.get(f"/api/v1/streams/{stream}")
        if response.status_code == 404:
            return {}
        return {s["sourceId"]: s for s in response.json()["sources"]}

    async def wait_for(self, predicate: Callable[[], Any], timeout_s: float = 15.0) -> Any:
        """Polls an async predicate until it returns something truthy."""
        with trio.fail_after(timeout_s):
            while True:
                value = await predicate()
                if value:
                    return value
                await trio.sleep(0.05)


@pytest.fixture
async def start_daemon(nursery: trio.Nursery, tmp_path: Any) -> AsyncIterator[Callable[..., Any]]:
    daemons: list[Daemon] = []

    async def start(**overrides: Any) -> Running:
        base: dict[str, Any] = {
            "rtmp": {"listen": "127.0.0.1:0"},
            "http": {"listen": "127.0.0.1:0"},
            "srt": {"listen": "127.0.0.1:0"},
            "data_dir": str(tmp_path / f"data{len(daemons)}"),
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                base[key].update(value)
            else:
                base[key] = value
        daemon = Daemon(config_mod.load(None, overrides=base))
        await nursery.start(daemon.run)
        daemons.append(daemon)
        return Running(daemon)

    yield start
    for daemon in daemons:
        daemon.shutdown()


@pytest.fixture
async def running(start_daemon: Callable[..., Any]) -> Running:
    return await start_daemon()


class Client:
    """A publishing client process."""

    def __init__(self, process: trio.Process, name: str) -> None:
        self.process = process
        self.name = name

    async def wait(self, timeout_s: float = 30.0) -> int:
        with trio.fail_after(timeout_s):
            return await self.process.wait()

    def kill(self) -> None:
        """Kills the client and everything it started (a shell pipeline's children too)."""
        if self.process.returncode is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
async def spawn(nursery: trio.Nursery) -> AsyncIterator[Callable[..., Any]]:
    clients: list[Client] = []

    async def start(argv: list[str], name: str = "client") -> Client:
        process = await trio.lowlevel.open_process(
            argv,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": REPO},
            start_new_session=True,  #: its own process group: kill() ends its children too
        )
        client = Client(process, name)
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.kill()
        with trio.move_on_after(5):
            await client.process.wait()
