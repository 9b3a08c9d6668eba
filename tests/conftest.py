"""Every test: the test process leaves it under the normal scheduler (tests/tools/sched.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.tools.sched import normal_scheduling


@pytest.fixture(autouse=True)
def _normal_scheduling() -> Iterator[None]:
    yield
    normal_scheduling()
