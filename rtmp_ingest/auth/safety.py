"""Start-up safety checks of the auth configuration (issue 15, defect 3).

Token mode protects publishing, but the HTTP API mints tokens, revokes and kicks:
without `http.admin_key` anyone who reaches it owns the server. So token mode
with no admin key is refused unless HTTP listens on loopback only, and so is
`http.protect_metrics` with no key to protect `/metrics` with. Pure: the caller
(start-up, `config --check`) prints each problem as one line and exits 2.
"""

from __future__ import annotations

import ipaddress

#: Host names that resolve to loopback on every system we run on.
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback_listen(listen: str) -> bool:
    """Whether 'HOST:PORT' binds loopback only ('0.0.0.0', '::', '' and other names do not)."""
    host, sep, _port = listen.rpartition(":")
    host = (host if sep else listen).strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_problems(
    *, auth_mode: str, admin_key: str, http_listen: str, protect_metrics: bool
) -> list[str]:
    """One line per way the HTTP API would be open to anyone; empty when the setup is safe."""
    if admin_key or not http_listen or is_loopback_listen(http_listen):
        return []
    problems = []
    if auth_mode == "token":
        problems.append(
            f'auth.mode is "token" but http.admin_key is empty and http.listen '
            f"({http_listen}) is reachable beyond loopback: anyone could mint tokens, "
            "revoke and kick; set http.admin_key or listen on 127.0.0.1"
        )
    if protect_metrics:
        problems.append(
            f"http.protect_metrics is true but http.admin_key is empty and http.listen "
            f"({http_listen}) is reachable beyond loopback: /metrics would be open; "
            "set http.admin_key or listen on 127.0.0.1"
        )
    return problems
