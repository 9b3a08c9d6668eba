"""The `rtmp-ingest` command: serve, config, token.

    rtmp-ingest serve [--config FILE] [--rtmp HOST:PORT] [--rtmps HOST:PORT]
                      [--http HOST:PORT] [--data-dir DIR]
    rtmp-ingest config --print-default
    rtmp-ingest token create --stream PATTERN [--multisource] [--source-id ID]...
                             [--network CIDR]... [--ttl 24h] [--label TEXT]
    rtmp-ingest token inspect TOKEN
    rtmp-ingest export PATH [--from TIME] [--to TIME] --out FILE.mkv [--config FILE] [--data-dir DIR]

A bad configuration prints one line naming the key and exits 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

import trio

from rtmp_ingest import __version__, tokens
from rtmp_ingest import config as config_mod

EXIT_CONFIG = 2


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
    serve.add_argument("--data-dir", help="data directory")
    cfg = sub.add_parser("config", help="configuration helpers")
    cfg.add_argument("--print-default", action="store_true", help="print the embedded default TOML")
    cfg.add_argument("--check", metavar="FILE", help="validate a configuration file")
    cfg.add_argument(
        "--print-effective",
        metavar="FILE",
        help="print the merged configuration (embedded default + FILE) as TOML, secrets masked",
    )
    token = sub.add_parser("token", help="publish tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="mint a token (signed with the server secret)")
    create.add_argument("--config", help="TOML file (for auth.secret / data_dir)")
    create.add_argument("--data-dir", help="data directory (holds the generated secret)")
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
    inspect = token_sub.add_parser("inspect", help="show and verify a token's claims")
    inspect.add_argument("token")
    inspect.add_argument("--config", help="TOML file (for auth.secret / data_dir)")
    inspect.add_argument("--data-dir", help="data directory (holds the generated secret)")
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
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    return config_mod.load(getattr(args, "config", None), overrides=overrides)


def _secret(config: config_mod.Config) -> bytes:
    if config.auth.secret:
        return config.auth.secret.encode("utf-8")
    return tokens.load_or_create_secret(Path(config.data_dir) / "secret")


async def _serve(config: config_mod.Config, reload: Any) -> None:
    from rtmp_ingest.app import App  # noqa: PLC0415 - keep `config`/`token` light

    daemon = App(config)
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
                config_mod.load(args.check)
            except config_mod.ConfigError as exc:
                print(f"rtmp-ingest: config error: {exc}", file=sys.stderr)
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
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("hypercorn").setLevel(logging.WARNING)
    try:
        trio.run(_serve, config, lambda: _load(args))
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:  #: start-up failures become one line, the rest re-raise
        failure = _startup_failure(exc)
        if failure is None:
            raise
        print(f"rtmp-ingest: cannot start: {failure}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


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


def _token(args: argparse.Namespace, config: config_mod.Config) -> int:
    from rtmp_ingest.api.http import claims_from_request  # noqa: PLC0415

    secret = _secret(config)
    if args.token_command == "create":
        body: dict[str, Any] = {
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
            claims = claims_from_request(body)
        except ValueError as exc:
            print(f"rtmp-ingest: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        print(tokens.mint(claims, secret))
        return 0
    try:
        claims = tokens.decode(args.token, secret)
    except tokens.TokenError as exc:
        print(f"rtmp-ingest: invalid token: {exc}", file=sys.stderr)
        return 1
    info = claims.to_json()
    revocations = tokens.Revocations(Path(config.data_dir) / "revoked_tokens.json")
    info["revoked"] = claims.token_id in revocations
    info["expired"] = claims.expires_at is not None and time.time() >= claims.expires_at
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
