"""The server's token keyring: the secret, the revocation list and the issued-token log.

Everything token verification needs lives in one object, loaded once from the
data directory (docs/spec.md §5):

    <data_dir>/secret               the signing secret, created once (0600) unless
                                    `auth.secret` is configured
    <data_dir>/revoked_tokens.json  {"revoked": {token id: Unix time revoked}}
    <data_dir>/issued_tokens.jsonl  one JSON line per minted token (its claims, never
                                    the token itself), for `rtmp-ingest token list`

`Keyring.verify` is pure (memory only) and runs on the event loop. `mint`,
`revoke` and `reload` touch files: the server runs them in a worker thread.
Writers (the server's API and the `rtmp-ingest token` command may run at once)
take an exclusive `flock` on `<data_dir>/tokens.lock`, re-read the file, merge and
replace it atomically, so neither loses the other's revocations. `reload()`
(SIGHUP) re-reads the revocation list; a broken file keeps the list in force and
raises `KeyringError` with one line naming the file. The secret never changes
while the server runs: a new secret invalidates every token, which takes a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import attrs

from rtmp_ingest.auth import tokens
from rtmp_ingest.auth.tokens import TokenClaims

SECRET_FILE = "secret"
REVOCATIONS_FILE = "revoked_tokens.json"
ISSUED_FILE = "issued_tokens.jsonl"
LOCK_FILE = "tokens.lock"
#: The issued-token log is compacted (expired entries, then the oldest, dropped) past this
#: size; about 15 000 tokens of typical claims.
MAX_ISSUED_LOG_BYTES = 4 * 1024 * 1024
#: A revocation list or secret file larger than this is not ours (bounds the start-up read).
MAX_REVOCATIONS_FILE_BYTES = 64 * 1024 * 1024


class KeyringError(Exception):
    """The keyring's files cannot be used; the message is one line naming the file."""


@attrs.frozen(kw_only=True)
class IssuedToken:
    """One line of the issued-token log."""

    claims: TokenClaims
    #: who minted it: "api" or "cli"
    via: str = ""

    def to_json(self) -> dict[str, object]:
        return {**self.claims.to_json(), "via": self.via}


def _read_limited(path: Path) -> str:
    with path.open("rb") as f:
        data = f.read(MAX_REVOCATIONS_FILE_BYTES + 1)
    if len(data) > MAX_REVOCATIONS_FILE_BYTES:
        raise KeyringError(f"{path}: larger than {MAX_REVOCATIONS_FILE_BYTES} bytes")
    return data.decode("utf-8")


def read_revocations(path: Path) -> dict[str, float]:
    """The revocation list in `path` ({} when the file does not exist)."""
    try:
        text = _read_limited(path)
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyringError(f"{path}: cannot read the revocation list: {exc}") from None
    try:
        data = json.loads(text or "{}")
        revoked = data.get("revoked", {})
        return {str(k): float(v) for k, v in revoked.items()}
    except (ValueError, AttributeError, TypeError, RecursionError):
        raise KeyringError(
            f'{path}: not a revocation list (expected {{"revoked": {{"ID": time}}}})'
        ) from None


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_or_create_secret(path: Path) -> tuple[bytes, bool]:
    """The secret in `path`, created (random, 0600) if absent; returns (secret, created).

    A file that exists but holds fewer than MIN_SECRET_BYTES is an error, never
    silently replaced: tokens signed with it would all stop working.
    """
    for _ in range(2):
        try:
            text = path.read_text("utf-8")
        except FileNotFoundError:
            pass
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyringError(f"{path}: cannot read the token secret: {exc}") from None
        else:
            secret = text.strip().encode("utf-8")
            if len(secret) < tokens.MIN_SECRET_BYTES:
                raise KeyringError(
                    f"{path}: the token secret is shorter than {tokens.MIN_SECRET_BYTES} "
                    "bytes; put a longer one there (or delete the file to generate one, "
                    "which invalidates every token issued)"
                )
            return secret, False
        secret = secrets.token_urlsafe(32).encode("ascii")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secret.decode("ascii") + "\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  #: fails if another process created it meanwhile
            except FileExistsError:
                continue  #: read the winner's secret
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as exc:
            raise KeyringError(f"{path}: cannot create the token secret: {exc}") from None
        return secret, True
    raise KeyringError(f"{path}: the token secret keeps changing under us")


class Keyring:
    """The secret, the revocations and the issued-token log of one data directory."""

    def __init__(
        self,
        secret: bytes,
        *,
        data_dir: Path | None,
        revoked: Mapping[str, float] | None = None,
        secret_origin: str = "",
        created_secret: bool = False,
    ) -> None:
        if len(secret) < tokens.MIN_SECRET_BYTES:
            raise KeyringError(f"the token secret is shorter than {tokens.MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self.data_dir = data_dir
        #: replaced whole, never mutated: the event loop reads it while a thread revokes
        self._revoked: dict[str, float] = dict(revoked or {})
        #: where the secret came from ("auth.secret" or its file), for messages
        self.secret_origin = secret_origin
        #: whether loading created a new secret file (the CLI says so)
        self.created_secret = created_secret
        self._write_lock = threading.Lock()

    @classmethod
    def load(cls, data_dir: Path, *, secret: str = "", create_secret: bool = True) -> Keyring:
        """Loads (and on first use creates) the keyring of `data_dir`; raises KeyringError."""
        created = False
        if secret:
            key, origin = secret.encode("utf-8"), "auth.secret"
        else:
            path = data_dir / SECRET_FILE
            if not create_secret and not path.exists():
                raise KeyringError(f"{path}: no token secret here (has the server run yet?)")
            key, created = load_or_create_secret(path)
            origin = str(path)
        revoked = read_revocations(data_dir / REVOCATIONS_FILE)
        return cls(
            key,
            data_dir=data_dir,
            revoked=revoked,
            secret_origin=origin,
            created_secret=created,
        )

    @property
    def secret(self) -> bytes:
        return self._secret

    # -- verification (pure) ---------------------------------------------------------

    def decode(self, token: str) -> TokenClaims:
        return tokens.decode(token, self._secret)

    def verify(
        self, token: str, *, stream_path: str, source_id: str, remote_ip: str, now_s: float
    ) -> TokenClaims:
        """Signature, expiry, revocation, stream, source and network; raises TokenError."""
        return tokens.verify(
            token,
            self._secret,
            stream_path=stream_path,
            source_id=source_id,
            remote_ip=remote_ip,
            revoked=self._revoked,
            now_s=now_s,
        )

    def is_revoked(self, token_id: str) -> bool:
        return token_id in self._revoked

    def revocations(self) -> dict[str, float]:
        """Revoked token id → Unix time of the revocation."""
        return dict(self._revoked)

    # -- files (blocking: call from a worker thread in the server) -------------------

    def _path(self, name: str) -> Path:
        if self.data_dir is None:
            raise KeyringError("this keyring has no data directory")
        return self.data_dir / name

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock_path = self._path(LOCK_FILE)
        with self._write_lock:
            try:
                lock_path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise KeyringError(f"{lock_path}: {exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  #: releases the flock

    def mint(self, claims: TokenClaims, *, via: str = "") -> str:
        """Signs `claims` (TokenClaimsError if unmintable) and appends them to the issued log."""
        token = tokens.mint(claims, self._secret)
        if self.data_dir is not None:
            line = json.dumps(IssuedToken(claims=claims, via=via).to_json(), ensure_ascii=True)
            with self._locked():
                path = self._path(ISSUED_FILE)
                try:
                    with path.open("a", encoding="utf-8") as f:
                        f.write(line + "\n")
                    if path.stat().st_size > MAX_ISSUED_LOG_BYTES:
                        self._compact_issued(path, now_s=claims.issued_at)
                except OSError as exc:
                    raise KeyringError(f"{path}: cannot log the issued token: {exc}") from None
        return token

    def _compact_issued(self, path: Path, *, now_s: float) -> None:
        entries = self._read_issued(path)
        live = [e for e in entries if e.claims.expires_at is None or e.claims.expires_at > now_s]
        lines = [json.dumps(e.to_json(), ensure_ascii=True) + "\n" for e in live]
        total, keep = 0, 0
        for line in reversed(lines):  #: the newest half of the budget survives
            total += len(line)
            if total > MAX_ISSUED_LOG_BYTES // 2:
                break
            keep += 1
        _write_atomically(path, "".join(lines[len(lines) - keep :]))

    @staticmethod
    def _read_issued(path: Path) -> list[IssuedToken]:
        try:
            text = _read_limited(path)
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyringError(f"{path}: cannot read the issued-token log: {exc}") from None
        entries = []
        for line in text.splitlines():
            try:
                data = json.loads(line)
                claims = TokenClaims(
                    token_id=str(data["id"]),
                    streams=[str(s) for s in data["streams"]],
                    multisource=bool(data.get("multisource")),
                    source_ids=data.get("sourceIds"),
                    networks=data.get("networks"),
                    expires_at=data.get("expiresAt"),
                    issued_at=float(data.get("issuedAt") or 0.0),
                    label=str(data.get("label") or ""),
                    record=data.get("record"),
                )
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
                continue  #: a torn line (a crash mid-append) is skipped, not fatal
            entries.append(IssuedToken(claims=claims, via=str(data.get("via") or "")))
        return entries

    def issued(self) -> list[IssuedToken]:
        """Every token the issued-token log records, oldest first."""
        return self._read_issued(self._path(ISSUED_FILE))

    def revoke(self, token_id: str, *, now_s: float | None = None) -> bool:
        """Revokes `token_id` (merged with the file under the lock); False if already revoked.

        `now_s` is the Unix time recorded with it (default: now).
        """
        if not token_id or len(token_id) > 64 or not token_id.isascii():
            raise KeyringError(f"{token_id[:64]!r} is not a token id")
        path = self._path(REVOCATIONS_FILE)
        with self._locked():
            revoked = read_revocations(path)
            added = token_id not in revoked
            if added:
                revoked[token_id] = time.time() if now_s is None else now_s
                try:
                    _write_atomically(path, json.dumps({"revoked": revoked}, indent=1))
                except OSError as exc:
                    raise KeyringError(f"{path}: cannot write the revocation list: {exc}") from None
            self._revoked = revoked
        return added

    def reload(self) -> int:
        """Re-reads the revocation list (SIGHUP); returns how many ids it holds.

        On a broken file the list in force stays and KeyringError says why.
        """
        self._revoked = read_revocations(self._path(REVOCATIONS_FILE))
        return len(self._revoked)
