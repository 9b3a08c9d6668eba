"""Shared helpers of the benchmarks: start servers, run ../shared/bench/rtmp_load.py, print tables."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_BENCH = REPO.parent / "shared" / "bench"
RTMP_LOAD = SHARED_BENCH / "rtmp_load.py"
OUR_CONFIG = """\
log_level = "warning"
[rtmp]
listen = "127.0.0.1:{port}"
max_connections_per_address = 1000
[http]
listen = "127.0.0.1:{http_port}"
[bundle]
max_streams = 4096
[hls]
enabled = {hls}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


class Server:
    """A server under test: ours (`rtmp-ingest serve`), nginx-rtmp or Node-Media-Server."""

    def __init__(self, kind: str, *, hls: bool = False) -> None:
        self.kind = kind
        #: ours: LL-HLS on (off by default: ingest and play are measured without outputs)
        self.hls = hls
        self.port = free_port()
        self.http_port = free_port()
        self.process: subprocess.Popen | None = None
        self.tmp = tempfile.mkdtemp(prefix=f"bench-{kind}-")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Server:
        log = open(os.path.join(self.tmp, "server.log"), "w")
        if self.kind == "ours":
            config = Path(self.tmp) / "config.toml"
            config.write_text(OUR_CONFIG.format(port=self.port, http_port=self.http_port,
                                                 hls="true" if self.hls else "false"))
            exe = REPO / ".venv" / "bin" / "rtmp-ingest"
            self.process = subprocess.Popen(
                [str(exe), "serve", "--config", str(config), "--data-dir", self.tmp],
                stdout=log, stderr=subprocess.STDOUT)
        elif self.kind == "nginx":
            self.port = 19351
            env = {**os.environ, "FOREGROUND": "1"}
            self.process = subprocess.Popen(
                ["bash", str(SHARED_BENCH / "servers" / "start_nginx_rtmp.sh"), str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        elif self.kind == "nms":
            env = {**os.environ, "NMS_DIR": os.environ.get(
                "NMS_DIR", "/tmp/nms/node_modules/node-media-server")}
            self.process = subprocess.Popen(
                ["node", str(SHARED_BENCH / "servers" / "nms_server.js"), str(self.port),
                 str(self.http_port)], stdout=log, stderr=subprocess.STDOUT, env=env)
        else:
            raise ValueError(self.kind)
        wait_listening(self.port)
        time.sleep(0.5)
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM if self.kind != "ours" else signal.SIGINT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.kind == "nginx":
            subprocess.run(["pkill", "-f", "rtmp_bench_nginx"], check=False)
        self.process = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def available(kind: str) -> bool:
    if kind == "ours":
        return True
    if kind == "nginx":
        return shutil.which("nginx") is not None and Path("/usr/lib/nginx/modules/ngx_rtmp_module.so").exists()
    if kind == "nms":
        return shutil.which("node") is not None and Path(os.environ.get(
            "NMS_DIR", "/tmp/nms/node_modules/node-media-server")).exists()
    return False


def rtmp_load(server: Server, *args: str, timeout_s: float = 600) -> dict:
    """Runs the shared load generator against `server`; returns its JSON result."""
    cmd = [sys.executable, str(RTMP_LOAD), "--server-pid", str(server.pid), "--port", str(server.port),
           "--label", server.kind, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"rtmp_load produced no result: {done.stderr[-2000:]}")
    return json.loads(lines[-1])


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    widths = [max(len(title), *(len(_fmt(r.get(key))) for r in rows)) for key, title in columns]
    out = [" ".join(title.rjust(w) for (_, title), w in zip(columns, widths))]
    for row in rows:
        out.append(" ".join(_fmt(row.get(key)).rjust(w) for (key, _), w in zip(columns, widths)))
    return "\n".join(out)


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)
