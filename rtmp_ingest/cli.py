"""The `rtmp-ingest` command: serve, config, token.

    rtmp-ingest serve [--config FILE] [--rtmp HOST:PORT] [--rtmps HOST:PORT]
                      [--http HOST:PORT] [--data-dir DIR]
    rtmp-ingest config --print-default
    rtmp-ingest token create --stream PATTERN [--multisource] [--source-id ID]...
                             [--network CIDR]... [--ttl 24h] [--label TEXT] [--[no-]record]
    rtmp-ingest token inspect TOKEN
    rtmp-ingest token list [--json]
    rtmp-ingest token revoke ID [ID...]
    rtmp-ingest export PATH [--from TIME] [--to TIME] --out FILE.mkv [--config FILE] [--data-dir DIR]

Every subcommand finds its configuration the same way: `--config FILE`, else the
file named by $RTMP_INGEST_CONFIG, else the embedded default; its `data_dir`
(default `data`, relative to the working directory; `--data-dir` overrides) holds
the token secret, the revocation list, the issued-token log and the recordings.
So `token create` signs with the server's secret, and says so on stderr when it
had to create one. A bad configuration prints one line naming the key and exits 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

from rtmp_ingest import __version__, auth
from rtmp_ingest import config as config_mod
from rtmp_ingest.auth import tokens
from rtmp_ingest.cluster import WORKER_ENV

EXIT_CONFIG = 2
#: Names the configuration file when `--config` is not given (every subcommand).
CONFIG_ENV = "RTMP_INGEST_CONFIG"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtmp-ingest", description="RTMP ingest for multisource streams"
    )
    parser.add_argument("--version", action="version", version=f"rtmp-ingest {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--config", help="TOML file (overrides the embedded default)")
    serve.add_argument("--rtmp", help="RTMP listen address HOST:PORT")
    serve.add_argument(
        "--rtmps", help="RTMPS listen address HOST:PORT (needs rtmps.cert_file/key_file)"
    )
    serve.add_argument("--http", help="HTTP listen address HOST:PORT")
    serve.add_argument("--srt", help="SRT listen address HOST:PORT (srt.listen)")
    serve.add_argument("--data-dir", help="data directory")
    serve.add_argument(
        "--workers",
        help='worker processes on the same ports: "auto" (one per core, the default), 1, N',
    )
    cfg = sub.add_parser("config", help="configuration helpers")
    cfg.add_argument("--print-default", action="store_true", help="print the embedded default TOML")
    cfg.add_argument("--check", metavar="FILE", help="validate a configuration file")
    cfg.add_argument(
        "--print-effective",
        metavar="FILE",
        help="print the merged configuration (embedded default + FILE) as TOML, secrets masked",
    )
    _token_parsers(sub)
    #: [cluster] (docs/spec.md §9): what the shared Redis registry shows
    cluster = sub.add_parser("cluster", help="a cluster of nodes sharing a Redis registry")
    cluster_sub = cluster.add_subparsers(dest="cluster_command", required=True)
    status = cluster_sub.add_parser("status", help="nodes, leases, streams per node")
    status.add_argument("--config", help=f"TOML file with [cluster] (default: ${CONFIG_ENV})")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    export = sub.add_parser(
        "export", help="mux every source's recordings of a time range into one file"
    )
    export.add_argument("path", help="stream path, e.g. live/show")
    export.add_argument(
        "--from",
        dest="start",
        help="range start: ISO 8601 time, Unix seconds, or -10m "
        "(before now); default: the first recording",
    )
    export.add_argument(
        "--to", dest="end", help="range end (same forms); default: the last recording"
    )
    export.add_argument("--out", required=True, help="output file (.mkv)")
    export.add_argument("--config", help="TOML file (for record.directory / data_dir)")
    export.add_argument("--data-dir", help="data directory")
    export.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _join_negative_times(argv: list[str]) -> list[str]:
    """`--from -10m` as `--from=-10m`: argparse would take -10m for an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--from", "--to") and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"{arg}={argv[i + 1]}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


def parse_time(text: str, *, now: float) -> float:
    """ISO 8601 (naive = UTC), Unix seconds, or a duration before now (-90s, -10m, -2h)."""
    text = text.strip()
    if text.startswith("-") and text[-1:] in _UNITS and text[1:-1].replace(".", "", 1).isdigit():
        return now - float(text[1:-1]) * _UNITS[text[-1]]
    try:
        return float(text)
    except ValueError:
        pass
    import datetime  # noqa: PLC0415

    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time, Unix seconds or -DURATION") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _export(args: argparse.Namespace, config: config_mod.Config) -> int:
    from rtmp_ingest.outputs.export import ExportError, export  # noqa: PLC0415 - PyAV only here

    root = (
        Path(config.record.directory)
        if config.record.directory
        else Path(config.data_dir) / "recordings"
    )
    now = time.time()
    try:
        start = parse_time(args.start, now=now) if args.start else None
        end = parse_time(args.end, now=now) if args.end else None
    except ValueError as exc:
        print(f"rtmp-ingest: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    show = not args.quiet and sys.stderr.isatty()

    def progress(fraction: float) -> None:
        if show or (fraction >= 1.0 and not args.quiet):
            width = 30
            done = round(fraction * width)
            print(
                f"\rexport [{'#' * done}{'.' * (width - done)}] {fraction * 100:5.1f}%",
                end="\n" if fraction >= 1.0 else "",
                file=sys.stderr,
                flush=True,
            )

    try:
        result = export(
            root,
            args.path.strip("/"),
            Path(args.out),
            start_unix=start,
            end_unix=end,
            progress=progress,
        )
    except ExportError as exc:
        print(f"rtmp-ingest: export: {exc}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "out": str(result.path),
                "tracks": list(result.tracks),
                "packets": result.packets,
                "filesRead": result.files_read,
                "from": result.start_unix,
                "to": result.end_unix,
                "firstPacketMs": result.first_ms,
            },
            indent=2,
        )
    )
    return 0


def _load(args: argparse.Namespace) -> config_mod.Config:
    overrides: dict[str, Any] = {}
    if getattr(args, "rtmp", None):
        overrides.setdefault("rtmp", {})["listen"] = args.rtmp
    if getattr(args, "rtmps", None):
        overrides.setdefault("rtmps", {})["listen"] = args.rtmps
    if getattr(args, "http", None):
        overrides.setdefault("http", {})["listen"] = args.http
    if getattr(args, "srt", None):
        overrides.setdefault("srt", {})["listen"] = args.srt
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    if getattr(args, "workers", None):
        workers = args.workers
        overrides["workers"] = int(workers) if workers.isdigit() else workers
    return config_mod.load(config_path(getattr(args, "config", None)), overrides=overrides)


def config_path(given: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The configuration file: `--config`, else $RTMP_INGEST_CONFIG, else None (the default)."""
    if given:
        return given
    environ = os.environ if environ is None else environ
    return environ.get(CONFIG_ENV) or None


async def _serve(config: config_mod.Config, reload: Any, worker: Any = None) -> None:
    from rtmp_ingest.app import App  # noqa: PLC0415 - keep `config`/`token` light

    daemon = App(config, worker=worker)
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            nursery.start_soon(_watch_signals, signals, daemon, nursery.cancel_scope, reload)
            await daemon.run()
            nursery.cancel_scope.cancel()


async def _watch_signals(signals: Any, daemon: Any, scope: trio.CancelScope, reload: Any) -> None:
    count = 0
    log = logging.getLogger("rtmp_ingest")
    async for signum in signals:
        if signum == signal.SIGHUP:
            try:
                daemon.reload(reload())
            except config_mod.ConfigError as exc:
                log.error("SIGHUP: reload refused, configuration kept: %s", exc)
            continue
        count += 1
        if count == 1:
            logging.getLogger("rtmp_ingest").info(
                "%s received: shutting down", signal.Signals(signum).name
            )
            daemon.shutdown()
        else:
            scope.cancel()  #: a second signal: stop now


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(_join_negative_times(sys.argv[1:] if argv is None else argv))
    if args.command == "config":
        if args.print_effective:
            try:
                effective = config_mod.load(args.print_effective)
            except config_mod.ConfigError as exc:
                print(f"rtmp-ingest: config error: {exc}", file=sys.stderr)
                return EXIT_CONFIG
            print(config_mod.to_toml(config_mod.masked(effective)), end="")
            return 0
        if args.check:
            try:
                checked = config_mod.load(args.check)
            except config_mod.ConfigError as exc:
                print(f"rtmp-ingest: config error: {exc}", file=sys.stderr)
                return EXIT_CONFIG
            if _exposed(checked):
                return EXIT_CONFIG
            print(f"{args.check}: OK")
            return 0
        print(config_mod.DEFAULT_TOML, end="")
        return 0
    try:
        config = _load(args)
    except config_mod.ConfigError as exc:
        print(f"rtmp-ingest: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "token":
        return _token(args, config)
    if args.command == "export":
        return _export(args, config)
    if args.command == "cluster":
        return _cluster_status(args, config)
    if _exposed(config):
        return EXIT_CONFIG
    # -- workers (docs/spec.md §9): a supervisor, or one of its workers ------------------
    worker = None
    layout_text = os.environ.get(WORKER_ENV)
    if layout_text:
        from rtmp_ingest.cluster.worker import Layout, WorkerAgent  # noqa: PLC0415

        layout = Layout.from_env(layout_text)
        if not layout.srt:
            config = attrs.evolve(config, srt=attrs.evolve(config.srt, enabled=False))
        worker = WorkerAgent(layout)
    log_format = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if worker is not None:
        log_format = f"%(asctime)s %(levelname)s worker={worker.worker_id} %(name)s: %(message)s"
    logging.basicConfig(level=config.log_level.upper(), format=log_format)
    logging.getLogger("hypercorn").setLevel(logging.WARNING)
    count = config_mod.worker_count(config.workers)
    if worker is None and count > 1:
        from rtmp_ingest.cluster.supervisor import serve_workers  # noqa: PLC0415

        try:
            return serve_workers(config, count=count, config_file=config_path(args.config))
        except KeyboardInterrupt:
            return 130
        except config_mod.StartupError as exc:
            print(f"rtmp-ingest: cannot start: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    try:
        trio.run(_serve, config, lambda: _load(args), worker)
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:  #: start-up failures become one line, the rest re-raise
        failure = _startup_failure(exc)
        if failure is None:
            raise
        print(f"rtmp-ingest: cannot start: {failure}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


def _exposed(config: config_mod.Config) -> bool:
    """Token mode (or protected metrics) with the API open to the network: say so, refuse."""
    problems = auth.exposure_problems(
        auth_mode=config.auth.mode,
        admin_key=config.http.admin_key,
        http_listen=config.http.listen,
        protect_metrics=config.http.protect_metrics,
    )
    for line in problems:
        print(f"rtmp-ingest: config error: {line}", file=sys.stderr)
    return bool(problems)


def _startup_failure(exc: BaseException) -> str | None:
    """The one line for a start-up failure inside `exc` (nurseries wrap it), else None."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _startup_failure(inner)
            if found is not None:
                return found
        return None
    if isinstance(exc, config_mod.ConfigError):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return None


# -- rtmp-ingest cluster status -----------------------------------------------------------


def _cluster_status(args: argparse.Namespace, config: config_mod.Config) -> int:
    if not config.cluster.enabled:
        print("rtmp-ingest: config error: cluster.redis is not set", file=sys.stderr)
        return EXIT_CONFIG
    from rtmp_ingest.cluster import status  # noqa: PLC0415 - coredis only with [cluster]
    from rtmp_ingest.cluster.registry import RegistryUnavailable  # noqa: PLC0415

    try:
        data = trio.run(status.gather, config.cluster)
    except RegistryUnavailable as exc:
        print(f"rtmp-ingest: cluster registry unavailable: {exc}", file=sys.stderr)
        return 1
    print(status.to_json(data) if args.json else status.render(data))
    return 0


# -- rtmp-ingest token ------------------------------------------------------------------


def _token_parsers(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", help=f"TOML file (for auth.secret / data_dir; default: ${CONFIG_ENV})"
    )
    common.add_argument("--data-dir", help="data directory (holds the secret and revocations)")
    token = sub.add_parser("token", help="publish tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser(
        "create", parents=[common], help="mint a token (signed with the server secret)"
    )
    create.add_argument(
        "--stream",
        action="append",
        required=True,
        metavar="PATTERN",
        help="stream path or pattern with * (repeatable)",
    )
    create.add_argument("--multisource", action="store_true", help="allow sourceId (multisource)")
    create.add_argument(
        "--source-id", action="append", metavar="ID", help="allowed sourceId (repeatable)"
    )
    create.add_argument(
        "--record",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="record this token's feeds (default: the app's [apps] record setting)",
    )
    create.add_argument("--network", action="append", metavar="CIDR", help="allowed client network")
    create.add_argument("--ttl", help="lifetime, e.g. 90m, 24h, 7d (default: no expiry)")
    create.add_argument("--label", default="", help="label shown in logs and the API")
    inspect = token_sub.add_parser(
        "inspect", parents=[common], help="show and verify a token's claims"
    )
    inspect.add_argument("token")
    listing = token_sub.add_parser(
        "list", parents=[common], help="issued tokens (from the issued-token log) and revocations"
    )
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    revoke = token_sub.add_parser(
        "revoke",
        parents=[common],
        help="revoke tokens by id (a running server applies it on SIGHUP)",
    )
    revoke.add_argument("token_id", nargs="+", metavar="ID")


def _utc(unix_s: float | None) -> str:
    if unix_s is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(unix_s))


def _token(args: argparse.Namespace, config: config_mod.Config) -> int:
    data_dir = Path(config.data_dir)
    try:
        keyring = auth.Keyring.load(
            data_dir,
            secret=config.auth.secret,
            create_secret=args.token_command == "create",
        )
    except auth.KeyringError as exc:
        print(f"rtmp-ingest: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if keyring.created_secret:
        print(
            f"rtmp-ingest: created a new token secret in {Path(keyring.secret_origin).resolve()}; "
            "the server must use the same data_dir (or set auth.secret)",
            file=sys.stderr,
        )
    now = time.time()
    try:
        if args.token_command == "create":
            return _token_create(args, keyring, now=now)
        if args.token_command == "list":
            return _token_list(args, keyring, now=now)
        if args.token_command == "revoke":
            return _token_revoke(args, keyring, now=now)
    except auth.KeyringError as exc:
        print(f"rtmp-ingest: {exc}", file=sys.stderr)
        return 1
    try:
        claims = keyring.decode(args.token)
    except tokens.TokenError as exc:
        print(f"rtmp-ingest: invalid token: {exc}", file=sys.stderr)
        return 1
    info = claims.to_json()
    info["revoked"] = keyring.is_revoked(claims.token_id)
    info["expired"] = claims.expires_at is not None and now >= claims.expires_at
    print(json.dumps(info, indent=2))
    return 0


def _token_create(args: argparse.Namespace, keyring: auth.Keyring, *, now: float) -> int:
    body: dict[str, object] = {
        "streams": args.stream,
        "multisource": args.multisource,
        "label": args.label,
    }
    if args.source_id:
        body["sourceIds"] = args.source_id
    if args.record is not None:
        body["record"] = args.record
    if args.network:
        body["networks"] = args.network
    if args.ttl:
        body["ttl"] = args.ttl
    try:
        claims = tokens.claims_from_json(body, now_s=now)
        token = keyring.mint(claims, via="cli")
    except tokens.TokenClaimsError as exc:
        print(f"rtmp-ingest: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(token)
    return 0


def _token_status(claims: auth.TokenClaims, revoked: Mapping[str, float], now: float) -> str:
    if claims.token_id in revoked:
        return "revoked"
    if claims.expires_at is not None and now >= claims.expires_at:
        return "expired"
    return "active"


def _token_list(args: argparse.Namespace, keyring: auth.Keyring, *, now: float) -> int:
    revoked = keyring.revocations()
    issued = keyring.issued()
    logged = {entry.claims.token_id for entry in issued}
    unlogged = sorted((i, t) for i, t in revoked.items() if i not in logged)
    if args.json:
        print(
            json.dumps(
                {
                    "dataDir": str(keyring.data_dir),
                    "issued": [
                        {**e.to_json(), "status": _token_status(e.claims, revoked, now)}
                        for e in issued
                    ],
                    "revoked": [{"id": i, "revokedAt": t} for i, t in sorted(revoked.items())],
                },
                indent=2,
            )
        )
        return 0
    rows = [("ID", "STATUS", "EXPIRES (UTC)", "VIA", "LABEL", "STREAMS")]
    for entry in issued:
        claims = entry.claims
        rows.append(
            (
                claims.token_id,
                _token_status(claims, revoked, now),
                _utc(claims.expires_at),
                entry.via or "-",
                ascii(claims.label)[1:-1] or "-",
                ",".join(ascii(s)[1:-1] for s in claims.streams),
            )
        )
    for token_id, revoked_at in unlogged:
        rows.append((token_id, "revoked", "-", "-", f"(revoked {_utc(revoked_at)})", "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[5])
    print(
        f"{len(issued)} issued, {len(revoked)} revoked (data dir {keyring.data_dir})",
        file=sys.stderr,
    )
    return 0


def _token_revoke(args: argparse.Namespace, keyring: auth.Keyring, *, now: float) -> int:
    logged = {entry.claims.token_id for entry in keyring.issued()}
    for token_id in args.token_id:
        if keyring.revoke(token_id, now_s=now):
            note = "" if token_id in logged else " (not in the issued-token log)"
            print(f"revoked {token_id}{note}")
        else:
            print(f"{token_id} was already revoked")
    print(
        "rtmp-ingest: a running server applies this on SIGHUP or restart "
        "(POST /api/v1/tokens/ID/revoke applies at once)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
