"""The keyring: one secret per data directory, revocations shared by server and CLI."""

from __future__ import annotations

import json
import stat

import pytest

from rtmp_ingest.auth import keyring as keyring_mod
from rtmp_ingest.auth import tokens
from rtmp_ingest.auth.keyring import Keyring, KeyringError
from rtmp_ingest.auth.tokens import TokenClaims, TokenError, TokenFault

NOW = 1_800_000_000.0


def _claims(token_id="t1", **kwargs):
    return TokenClaims(token_id=token_id, streams=("live/*",), issued_at=NOW, **kwargs)


def test_the_secret_is_created_once_private_and_then_reused(tmp_path):
    first = Keyring.load(tmp_path)
    assert first.created_secret
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600
    second = Keyring.load(tmp_path)
    assert not second.created_secret and second.secret == first.secret
    token = first.mint(_claims())
    assert second.decode(token).token_id == "t1"


def test_a_configured_secret_needs_no_file(tmp_path):
    keyring = Keyring.load(tmp_path, secret="configured-secret-0123456789")
    assert keyring.secret == b"configured-secret-0123456789"
    assert keyring.secret_origin == "auth.secret"
    assert not (tmp_path / "secret").exists()


def test_a_short_secret_file_is_an_error_not_silently_replaced(tmp_path):
    (tmp_path / "secret").write_text("short\n")
    with pytest.raises(KeyringError, match="shorter than 16 bytes"):
        Keyring.load(tmp_path)
    assert (tmp_path / "secret").read_text() == "short\n"


def test_without_create_a_missing_secret_is_an_error(tmp_path):
    with pytest.raises(KeyringError, match="no token secret"):
        Keyring.load(tmp_path / "elsewhere", create_secret=False)
    assert not (tmp_path / "elsewhere").exists()


def test_revocations_made_by_the_cli_and_the_server_both_survive(tmp_path):
    server = Keyring.load(tmp_path)
    cli = Keyring.load(tmp_path)
    token = server.mint(_claims("a"))
    assert cli.revoke("b", now_s=NOW)
    assert server.revoke("a", now_s=NOW)  #: merged with the CLI's, not overwriting it
    assert not server.revoke("a", now_s=NOW)
    assert set(json.loads((tmp_path / "revoked_tokens.json").read_text())["revoked"]) == {"a", "b"}
    with pytest.raises(TokenError) as caught:
        server.verify(token, stream_path="live/x", source_id="", remote_ip="1.2.3.4", now_s=NOW)
    assert caught.value.fault is TokenFault.REVOKED


def test_reload_picks_up_revocations_made_elsewhere(tmp_path):
    server = Keyring.load(tmp_path)
    token = server.mint(_claims("a"))
    Keyring.load(tmp_path).revoke("a", now_s=NOW)
    server.verify(token, stream_path="live/x", source_id="", remote_ip="1.2.3.4", now_s=NOW)
    assert server.reload() == 1
    assert server.is_revoked("a")
    with pytest.raises(TokenError):
        server.verify(token, stream_path="live/x", source_id="", remote_ip="1.2.3.4", now_s=NOW)


def test_a_broken_revocation_list_keeps_the_list_in_force(tmp_path):
    server = Keyring.load(tmp_path)
    server.revoke("a", now_s=NOW)
    (tmp_path / "revoked_tokens.json").write_text("{not json")
    with pytest.raises(KeyringError, match=r"revoked_tokens\.json"):
        server.reload()
    assert server.is_revoked("a")
    with pytest.raises(KeyringError, match=r"revoked_tokens\.json"):
        Keyring.load(tmp_path)


def test_the_issued_log_lists_minted_tokens_but_not_the_tokens(tmp_path):
    keyring = Keyring.load(tmp_path)
    token = keyring.mint(_claims("a", label="venue A"), via="cli")
    keyring.mint(_claims("b", expires_at=NOW + 60), via="api")
    with (tmp_path / "issued_tokens.jsonl").open("a") as f:
        f.write('{"id": "torn", "stre')  #: a crash mid-append
    entries = keyring.issued()
    assert [(e.claims.token_id, e.via) for e in entries] == [("a", "cli"), ("b", "api")]
    assert entries[0].claims.label == "venue A" and entries[1].claims.expires_at == NOW + 60
    assert token not in (tmp_path / "issued_tokens.jsonl").read_text()


def test_the_issued_log_is_compacted_past_its_size(tmp_path, monkeypatch):
    monkeypatch.setattr(keyring_mod, "MAX_ISSUED_LOG_BYTES", 2000)
    keyring = Keyring.load(tmp_path)
    keyring.mint(_claims("expired", expires_at=NOW - 1))
    for i in range(40):
        keyring.mint(_claims(f"t{i:02d}"))
    ids = [e.claims.token_id for e in keyring.issued()]
    assert (tmp_path / "issued_tokens.jsonl").stat().st_size <= 2000
    assert "expired" not in ids and ids[-1] == "t39" and ids == sorted(ids)


def test_minting_refuses_unmintable_claims_without_logging_them(tmp_path):
    keyring = Keyring.load(tmp_path)
    with pytest.raises(tokens.TokenClaimsError):
        keyring.mint(_claims(expires_at=float("nan")))
    assert keyring.issued() == []


def test_token_ids_to_revoke_are_bounded(tmp_path):
    keyring = Keyring.load(tmp_path)
    for bad in ("", "x" * 65, "é"):
        with pytest.raises(KeyringError):
            keyring.revoke(bad, now_s=NOW)
