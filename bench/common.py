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
#: ours as the benches' tables describe it: one process (`workers = 1`; the default "auto"
#: would run a supervisor and a worker per core: bench/bench_scale.py measures that).
#: BENCH_WORKERS=auto (or N) runs the same bench on the workers.
OUR_CONFIG = """\
log_level = "warning"
workers = {workers}
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


def _workers(value: str) -> int | str:
    return int(value) if value.isdigit() else value


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


NGINX_DIR = Path("/tmp/rtmp_bench_nginx")  #: start_nginx_rtmp.sh's prefix (config, logs, hls/)
NGINX_HLS_DIR = NGINX_DIR / "hls"


class Server:
    """A server under test: ours (`rtmp-ingest serve`), nginx-rtmp or Node-Media-Server."""

    def __init__(self, kind: str, *, hls: bool = False) -> None:
        self.kind = kind
        #: ours: LL-HLS on (off by default: ingest and play are measured without outputs);
        #: nginx: `hls on` (2 s MPEG-TS fragments written to NGINX_HLS_DIR)
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
            config.write_text(
                OUR_CONFIG.format(
                    port=self.port,
                    http_port=self.http_port,
                    hls="true" if self.hls else "false",
                    workers=json.dumps(_workers(os.environ.get("BENCH_WORKERS", "1"))),
                )
            )
            exe = REPO / ".venv" / "bin" / "rtmp-ingest"
            self.process = subprocess.Popen(
                [str(exe), "serve", "--config", str(config), "--data-dir", self.tmp],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        elif self.kind == "nginx":
            self.port = 19351
            env = {**os.environ, "FOREGROUND": "1"}
            if self.hls:  # fragments of an earlier run must not count as this run's
                shutil.rmtree(NGINX_HLS_DIR, ignore_errors=True)
            self.process = subprocess.Popen(
                [
                    "bash",
                    str(SHARED_BENCH / "servers" / "start_nginx_rtmp.sh"),
                    str(self.port),
                    *(["hls"] if self.hls else []),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        elif self.kind == "nms":
            env = {
                **os.environ,
                "NMS_DIR": os.environ.get("NMS_DIR", "/tmp/nms/node_modules/node-media-server"),
            }
            self.process = subprocess.Popen(
                [
                    "node",
                    str(SHARED_BENCH / "servers" / "nms_server.js"),
                    str(self.port),
                    str(self.http_port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        else:
            raise ValueError(self.kind)
        wait_listening(self.port)
        time.sleep(0.5)
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        children = _children(self.pid)  # nginx workers: they should leave with the master
        self.process.send_signal(signal.SIGTERM if self.kind != "ours" else signal.SIGINT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for pid, started in children:  # stragglers only: same pid and start time as before
            if _stat_fields(pid)[19:20] == [started]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.process = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: [state, ppid, ...]; index 19 = start time."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _children(pid: int) -> list[tuple[int, str]]:
    """Live child processes of `pid` (from /proc), with their start times."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if len(fields) > 19 and fields[1] == str(pid):
                out.append((int(entry), fields[19]))
    return out


def available(kind: str) -> bool:
    if kind == "ours":
        return True
    if kind == "nginx":
        return (
            shutil.which("nginx") is not None
            and Path("/usr/lib/nginx/modules/ngx_rtmp_module.so").exists()
        )
    if kind == "nms":
        return (
            shutil.which("node") is not None
            and Path(os.environ.get("NMS_DIR", "/tmp/nms/node_modules/node-media-server")).exists()
        )
    return False


def rtmp_load(server: Server, *args: str, timeout_s: float = 600) -> dict:
    """Runs the shared load generator against `server`; returns its JSON result."""
    cmd = [
        sys.executable,
        str(RTMP_LOAD),
        "--server-pid",
        str(server.pid),
        "--port",
        str(server.port),
        "--label",
        server.kind,
        *args,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"rtmp_load produced no result: {done.stderr[-2000:]}")
    return json.loads(lines[-1])


class LoadRun:
    """The shared load generator (python publishers) running in the background, so a bench
    can act while it publishes: `window()` tells when its measurement window is, `result()`
    waits for its JSON result."""

    def __init__(self, server: Server, *args: str, tag: str = "") -> None:
        self.run_dir = Path("/tmp/rtmp_bench") / (
            time.strftime("%Y%m%d-%H%M%S") + f"-{server.kind}{tag}"
        )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            str(RTMP_LOAD),
            "--server-pid",
            str(server.pid),
            "--port",
            str(server.port),
            "--label",
            server.kind,
            "--run-dir",
            str(self.run_dir),
            *args,
        ]
        self._out = open(self.run_dir / "rtmp_load.out", "w+")
        self.process = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT, text=True)

    def window(self, timeout_s: float = 120) -> tuple[float, float]:
        """(start, end) of the measurement window, unix seconds (once the publishers are planned)."""
        config = self.run_dir / "worker0.json"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                planned = json.loads(config.read_text())
                return planned["meas_start"], planned["meas_end"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.05)
        raise RuntimeError(f"rtmp_load did not start its publishers (see {self.run_dir})")

    def result(self, timeout_s: float = 600) -> dict:
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._out.seek(0)
        text = self._out.read()
        self._out.close()
        lines = [line for line in text.splitlines() if line.startswith("{")]
        if not lines:
            raise RuntimeError(f"rtmp_load produced no result: {text[-2000:]}")
        return json.loads(lines[-1])


def sleep_until(unix_s: float) -> None:
    time.sleep(max(0.0, unix_s - time.time()))


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
