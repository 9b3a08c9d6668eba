"""`rtmp-ingest token create|inspect|list|revoke` and where they find the data directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rtmp_ingest import cli
from rtmp_ingest.auth.keyring import Keyring

ROOT = Path(__file__).resolve().parents[2]


def run(capsys, *argv):
    code = cli.main(["token", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch):
    monkeypatch.delenv(cli.CONFIG_ENV, raising=False)


def test_create_list_revoke_inspect(tmp_path, capsys):
    data = ["--data-dir", str(tmp_path)]
    code, out, err = run(capsys, "create", *data, "--stream", "live/*", "--label", "venue A")
    assert code == 0 and out.startswith("rt1.")
    assert "created a new token secret" in err and str(tmp_path) in err
    token = out.strip()
    code, out, err = run(capsys, "create", *data, "--stream", "live/x", "--ttl", "1h")
    assert code == 0 and err == ""  #: the second create reuses the secret, silently
    token_id = Keyring.load(tmp_path).decode(token).token_id

    code, out, _ = run(capsys, "list", *data)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["ID", "STATUS"]
    assert any(
        line.startswith(token_id) and "active" in line and "venue A" in line for line in lines
    )

    code, out, err = run(capsys, "revoke", *data, token_id, "unknown-id")
    assert code == 0
    assert f"revoked {token_id}\n" in out and "unknown-id (not in the issued-token log)" in out
    assert "SIGHUP" in err
    code, out, _ = run(capsys, "revoke", *data, token_id)
    assert "already revoked" in out

    code, out, _ = run(capsys, "list", *data, "--json")
    listing = json.loads(out)
    assert {e["id"]: e["status"] for e in listing["issued"]}[token_id] == "revoked"
    assert {r["id"] for r in listing["revoked"]} == {token_id, "unknown-id"}
    code, out, _ = run(capsys, "inspect", *data, token)
    info = json.loads(out)
    assert code == 0 and info["revoked"] is True and info["label"] == "venue A"


def test_every_token_subcommand_finds_the_config_through_the_environment(
    tmp_path, capsys, monkeypatch
):
    data_dir = tmp_path / "server-data"
    config = tmp_path / "server.toml"
    config.write_text(f'data_dir = "{data_dir}"\n')
    server = Keyring.load(data_dir)  #: the server ran first and made the secret
    monkeypatch.setenv(cli.CONFIG_ENV, str(config))
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "create", "--stream", "live/*")
    assert code == 0 and err == ""
    assert server.decode(out.strip()).streams == ("live/*",)
    assert not (tmp_path / "data").exists()  #: no second secret in the working directory
    assert cli.config_path(None, {cli.CONFIG_ENV: "x.toml"}) == "x.toml"
    assert cli.config_path("given.toml", {cli.CONFIG_ENV: "x.toml"}) == "given.toml"
    assert cli.config_path(None, {}) is None


def test_list_and_revoke_never_create_a_secret(tmp_path, capsys):
    for argv in (["list"], ["revoke", "abc"], ["inspect", "rt1.x.y"]):
        code, _, err = run(capsys, *argv, "--data-dir", str(tmp_path / "none"))
        assert code == 2 and "no token secret here" in err
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ttl", "soon"], "ttl"),
        (["--ttl", "0s"], "ttl"),
        (["--network", "10.0.0.0/99"], "networks"),
        (["--source-id", "s" * 200], "sourceIds"),
        (["--label", "l" * 300], "label"),
    ],
)
def test_create_refuses_bad_options_in_one_line(tmp_path, capsys, argv, message):
    code, out, err = run(capsys, "create", "--data-dir", str(tmp_path), "--stream", "live/x", *argv)
    assert code == 2 and out == ""
    assert message in err.splitlines()[-1]
    assert Keyring.load(tmp_path).issued() == []


def test_a_short_secret_file_is_reported_not_replaced(tmp_path, capsys):
    (tmp_path / "secret").write_text("tiny\n")
    code, _, err = run(capsys, "create", "--data-dir", str(tmp_path), "--stream", "live/x")
    assert code == 2 and "shorter than 16 bytes" in err and len(err.splitlines()) == 1
    assert (tmp_path / "secret").read_text() == "tiny\n"


def test_the_token_commands_import_no_web_stack(tmp_path):
    script = (
        "import sys\n"
        "from rtmp_ingest import cli\n"
        f"assert cli.main(['token', 'create', '--data-dir', {str(tmp_path)!r}, '--stream', 'a/b']) == 0\n"
        f"assert cli.main(['token', 'list', '--data-dir', {str(tmp_path)!r}]) == 0\n"
        "heavy = {'starlette', 'hypercorn', 'httpx', 'av', 'prometheus_client', 'h11'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != cli.CONFIG_ENV}
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=True,
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"
