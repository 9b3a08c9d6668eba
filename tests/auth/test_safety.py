"""Token mode must not leave the HTTP API open (issue 15, defect 3)."""

from __future__ import annotations

import pytest

from rtmp_ingest.auth.safety import exposure_problems, is_loopback_listen


@pytest.mark.parametrize(
    ("listen", "loopback"),
    [
        ("127.0.0.1:8080", True),
        ("127.8.9.1:8080", True),
        ("[::1]:8080", True),
        ("localhost:8080", True),
        ("0.0.0.0:8080", False),
        ("[::]:8080", False),
        (":8080", False),
        ("192.168.1.5:8080", False),
        ("example.com:8080", False),
    ],
)
def test_is_loopback_listen(listen, loopback):
    assert is_loopback_listen(listen) is loopback


@pytest.mark.parametrize(
    ("mode", "key", "listen", "protect", "expected"),
    [
        ("token", "", "0.0.0.0:8080", False, ["auth.mode"]),
        ("token", "", "0.0.0.0:8080", True, ["auth.mode", "protect_metrics"]),
        ("open", "", "0.0.0.0:8080", True, ["protect_metrics"]),
        ("open", "", "0.0.0.0:8080", False, []),
        ("token", "k" * 32, "0.0.0.0:8080", True, []),
        ("token", "", "127.0.0.1:8080", True, []),
        ("token", "", "[::1]:0", False, []),
    ],
)
def test_exposure_problems(mode, key, listen, protect, expected):
    problems = exposure_problems(
        auth_mode=mode, admin_key=key, http_listen=listen, protect_metrics=protect
    )
    assert len(problems) == len(expected)
    for problem, word in zip(problems, expected):
        assert word in problem and "\n" not in problem
        assert "http.admin_key" in problem and listen in problem
