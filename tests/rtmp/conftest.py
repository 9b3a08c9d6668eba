"""Shared fixtures of the protocol-core tests.

`feed_mode` runs a session-level test twice: once with every byte string fed to
the core whole, once fed one byte at a time (docs/style.md: "Every core test runs twice").
"""

from __future__ import annotations

import pytest


@pytest.fixture(params=[False, True], ids=["whole", "bytewise"])
def bytewise(request: pytest.FixtureRequest) -> bool:
    """True when the test should feed data one byte at a time."""
    return request.param
