"""The API's app on a fake server, reached in memory through httpx's ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from rtmp_ingest.api.http import build_app
from tests.api.fake import FakeServer


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def client_for() -> Callable[[FakeServer], Any]:
    def make(server: FakeServer) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=build_app(server))
        return httpx.AsyncClient(transport=transport, base_url="http://api.test:8080")

    return make


@pytest.fixture
async def client(server: FakeServer, client_for: Callable[..., Any]) -> AsyncIterator[Any]:
    async with client_for(server) as client:
        yield client
