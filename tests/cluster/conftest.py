from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.redis_server import redis_server


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url
