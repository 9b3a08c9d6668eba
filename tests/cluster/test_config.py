"""`[cluster]` (docs/spec.md §9): off by default, nothing of it loaded then; bad values
are refused by `config --check` with the key named."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rtmp_ingest import config as config_mod
from rtmp_ingest.app import App
from tests.cluster.redis_server import free_port

GOOD = {"redis": "redis://10.0.0.2:6379/0", "secret": "0123456789abcdef"}


def load(**cluster: object) -> config_mod.Config:
    return config_mod.load(None, overrides={"cluster": {**GOOD, **cluster}})


def test_the_default_is_one_machine_and_never_imports_coredis():
    assert not config_mod.default_config().cluster.enabled
    code = (
        "import sys; from rtmp_ingest.app import App; from rtmp_ingest.config import "
        "default_config; App(default_config()); print('coredis' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_complete_section_loads():
    cluster = load(node_id="edge-1", advertise_rtmp="10.0.0.5:1935").cluster
    assert cluster.enabled and cluster.node_id == "edge-1" and cluster.lease_s == 5.0


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"redis": "http://x"}, "cluster.redis"),
        ({"secret": "short"}, "cluster.secret"),
        ({"secret": ""}, "cluster.secret"),
        ({"lease_s": 0.1}, "cluster.lease_s"),
        ({"lease_s": 1000.0}, "cluster.lease_s"),
        ({"renew_s": 3.0}, "cluster.renew_s"),
        ({"renew_s": 0.0}, "cluster.renew_s"),
        ({"node_id": "a b"}, "cluster.node_id"),
        ({"node_id": "x" * 65}, "cluster.node_id"),
        ({"advertise_rtmp": "0.0.0.0:1935"}, "cluster.advertise_rtmp"),
        ({"advertise_http": "nohostport"}, "cluster.advertise_http"),
        ({"key_prefix": ""}, "cluster.key_prefix"),
        ({"timeline_keep_s": 1.0}, "cluster.timeline_keep_s"),
        ({"relay_max_buffer_bytes": 10}, "cluster.relay_max_buffer_bytes"),
        ({"pull_retry_s": 0.0}, "cluster.pull_retry_s"),
        ({"lease_s": float("nan")}, "cluster.lease_s"),
        ({"unknown": 1}, "cluster"),
    ],
)
def test_bad_values_are_refused_naming_the_key(changes, key):
    with pytest.raises(config_mod.ConfigError, match=key.replace(".", r"\.")):
        load(**changes)


def test_the_secret_and_the_redis_url_are_masked_in_the_effective_configuration():
    #: (a redis:// URL may carry a password)
    shown = config_mod.masked(load(redis="redis://:hunter2@10.0.0.2:6379/0"))["cluster"]
    assert shown["secret"] == shown["redis"] == "***"


async def test_serve_with_an_unreachable_redis_stops_with_one_line(tmp_path):
    """A node that cannot join its cluster does not serve alone (it would split the stream)."""
    config = config_mod.load(
        None,
        overrides={
            "data_dir": str(tmp_path),
            "rtmp": {"listen": "127.0.0.1:0"},
            "http": {"listen": ""},
            "srt": {"enabled": False},
            "cluster": {**GOOD, "redis": f"redis://127.0.0.1:{free_port()}/0"},
        },
    )
    with pytest.raises(BaseException) as caught:  #: nurseries wrap it in groups
        await App(config).run()
    leaves = [caught.value]
    while isinstance(leaves[0], BaseExceptionGroup):
        leaves = list(leaves[0].exceptions)
    assert isinstance(leaves[0], config_mod.StartupError)
    assert str(leaves[0]).startswith("cluster.redis: ")
