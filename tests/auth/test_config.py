"""The [auth] section: its keys, defaults and one-line errors."""

from __future__ import annotations

import pytest

from rtmp_ingest import config


def test_the_embedded_default_matches_the_records():
    loaded = config.default_config().auth
    assert loaded == config.AuthConfig()
    assert loaded.hooks.url == "" and loaded.hooks.on_failure == "deny"
    assert loaded.hooks.actions == ["publish", "unpublish", "play"]


def test_hooks_are_configured_under_auth_hooks():
    loaded = config.from_dict(
        {
            "auth": {
                "mode": "token",
                "secret": "s" * 20,
                "hooks": {
                    "url": "http://127.0.0.1:9000/hook",
                    "timeout_s": 2,
                    "on_failure": "allow",
                },
            }
        }
    )
    assert loaded.auth.hooks.url == "http://127.0.0.1:9000/hook"
    assert loaded.auth.hooks.timeout_s == 2.0 and loaded.auth.hooks.on_failure == "allow"


@pytest.mark.parametrize(
    ("auth", "key"),
    [
        ({"secret": "short"}, "auth.secret"),
        ({"mode": "closed"}, "auth.mode"),
        ({"max_ban_s": 0}, "auth.max_ban_s"),
        ({"max_bans": 0}, "auth.max_bans"),
        ({"hooks": {"url": "ftp://x/"}}, "auth.hooks.url"),
        ({"hooks": {"url": "http://"}}, "auth.hooks.url"),
        ({"hooks": {"url": "http://h:99999/"}}, "auth.hooks.url"),
        ({"hooks": {"timeout_s": 0}}, "auth.hooks.timeout_s"),
        ({"hooks": {"timeout_s": 600}}, "auth.hooks.timeout_s"),
        ({"hooks": {"on_failure": "maybe"}}, "auth.hooks.on_failure"),
        ({"hooks": {"actions": ["publish", "connect"]}}, "auth.hooks.actions"),
        ({"hooks": {"nope": 1}}, "auth.hooks"),
    ],
)
def test_bad_auth_settings_are_one_line_naming_the_key(auth, key):
    with pytest.raises(config.ConfigError) as caught:
        config.from_dict({"auth": auth})
    message = str(caught.value)
    assert message.startswith(key) and "\n" not in message
