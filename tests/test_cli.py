"""The `rtmp-ingest` command as an operator meets it: one-line errors, exit codes, tools."""

from __future__ import annotations

import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from rtmp_ingest import __version__, cli
from rtmp_ingest import config as config_mod

BIN = [sys.executable, "-m", "rtmp_ingest.cli"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BIN, *args], capture_output=True, text=True, timeout=timeout)


def test_the_embedded_default_toml_is_the_config_defaults() -> None:
    assert config_mod.default_config() == config_mod.Config()


@pytest.fixture
def busy_port() -> object:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


@pytest.mark.parametrize("key", ["rtmp", "http"])
def test_a_port_in_use_is_one_line_naming_the_key_and_address(
    key: str, busy_port: int, tmp_path: Path
) -> None:
    ports = {"rtmp": "127.0.0.1:0", "http": "127.0.0.1:0", key: f"127.0.0.1:{busy_port}"}
    result = run(
        "serve",
        "--rtmp",
        ports["rtmp"],
        "--http",
        ports["http"],
        "--srt",
        "127.0.0.1:0",
        "--data-dir",
        str(tmp_path),
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("rtmp-ingest:")]
    assert errors == [
        f"rtmp-ingest: cannot start: {key}.listen 127.0.0.1:{busy_port}: Address already in use"
    ]


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[rtmps]\nlisten = "127.0.0.1:0"\ncert_file = "/nonexistent.pem"\n'
            'key_file = "/nonexistent.key"\n',
            "rtmps.cert_file: no such file '/nonexistent.pem'",
        ),
        ("[rtmp]\nidle_timeout_s = -1\n", "rtmp.idle_timeout_s: must be >= 0, got -1.0"),
        ("[rtmp]\nmax_connections = 0\n", "rtmp.max_connections: must be > 0"),
        ("[bundle]\nreconnect_grace_s = nan\n", "bundle.reconnect_grace_s: must be a finite"),
    ],
)
def test_config_check_catches_what_serve_would_fail_on(
    toml: str, message: str, tmp_path: Path
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    check = run("config", "--check", str(path))
    assert check.returncode == 2
    assert message in check.stderr and len(check.stderr.splitlines()) == 1
    serve = run("serve", "--config", str(path), "--srt", "127.0.0.1:0", "--data-dir", str(tmp_path))
    assert serve.returncode == 2 and message in serve.stderr


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"rtmp-ingest {__version__}"


def test_print_effective_merges_masks_secrets_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[http]\nadmin_key = "hunter2"\n[rtmp]\nplay_wait_s = 7.5\n')
    result = run("config", "--print-effective", str(path))
    assert result.returncode == 0
    assert "hunter2" not in result.stdout
    data = tomllib.loads(result.stdout)
    assert data["http"]["admin_key"] == "***"
    assert data["rtmp"]["play_wait_s"] == 7.5
    data["http"]["admin_key"] = "hunter2"
    assert config_mod.from_dict(data) == config_mod.load(path)


@pytest.mark.parametrize("form", [["--from", "-10m"], ["--from=-10m"]])
def test_export_accepts_a_negative_duration_with_or_without_equals(form: list[str]) -> None:
    args = cli._parser().parse_args(
        cli._join_negative_times(["export", "live/x", *form, "--out", "x.mkv"])
    )
    assert args.start == "-10m"


def test_sighup_reloads_app_settings_and_keeps_serving(tmp_path: Path) -> None:
    import signal
    import time

    path = tmp_path / "c.toml"
    path.write_text('[apps."*"]\nmultisource = true\n')
    process = subprocess.Popen(
        [
            *BIN,
            "serve",
            "--config",
            str(path),
            "--rtmp",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--srt",
            "127.0.0.1:0",
            "--data-dir",
            str(tmp_path),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 30
        for line in process.stderr:
            if "listening" in line:
                break
            assert time.monotonic() < deadline
        path.write_text('[apps."*"]\nmultisource = false\n[rtmp]\nplay_wait_s = 3.0\n')
        process.send_signal(signal.SIGHUP)
        for line in process.stderr:
            if "reloaded" in line:
                assert "apps=1" in line and "needs a restart: rtmp" in line
                break
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0"])
def test_token_mode_without_an_admin_key_refuses_to_start_beyond_loopback(
    listen: str, tmp_path: Path
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[auth]\nmode = "token"\n[http]\nlisten = "{listen}"\n')
    for args in (["config", "--check", str(path)], ["serve", "--config", str(path)]):
        extra = ["--srt", "127.0.0.1:0", "--data-dir", str(tmp_path)]
        result = run(*args, *extra) if args[0] == "serve" else run(*args)
        assert result.returncode == 2
        assert "http.admin_key is empty" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_token_mode_on_loopback_http_starts_without_an_admin_key(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[auth]\nmode = "token"\n[http]\nlisten = "127.0.0.1:0"\n')
    assert run("config", "--check", str(path)).returncode == 0
