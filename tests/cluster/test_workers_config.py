"""The `workers` setting (docs/spec.md §9): "auto", a count, and what `config --check` refuses."""

from __future__ import annotations

import os

import pytest

from rtmp_ingest import cli
from rtmp_ingest import config as config_mod


def test_the_default_is_one_worker_per_core():
    config = config_mod.load(None)
    assert config.workers == "auto"
    assert config_mod.worker_count(config.workers) == (os.cpu_count() or 1)
    assert 'workers = "auto"' in config_mod.DEFAULT_TOML


@pytest.mark.parametrize("value", [1, 2, 16, config_mod.MAX_WORKERS])
def test_a_count_is_taken_as_it_is(value):
    config = config_mod.load(None, overrides={"workers": value})
    assert config_mod.worker_count(config.workers) == value


@pytest.mark.parametrize("text", ["0", "-1", "257", '"two"', '"AUTO"', "2.0", "true", '""', "[2]"])
def test_config_check_refuses_what_is_not_auto_or_a_count(text, tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text(f"workers = {text}\n")
    assert cli.main(["config", "--check", str(path)]) == cli.EXIT_CONFIG
    error = capsys.readouterr().err
    assert 'workers: expected "auto" or a whole number 1..256' in error


def test_config_check_accepts_a_count(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text("workers = 4\n")
    assert cli.main(["config", "--check", str(path)]) == 0
    assert "OK" in capsys.readouterr().out


def test_the_command_line_overrides_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("workers = 4\n")
    args = cli._parser().parse_args(["serve", "--config", str(path), "--workers", "1"])
    assert cli._load(args).workers == 1
    args = cli._parser().parse_args(["serve", "--config", str(path), "--workers", "auto"])
    assert cli._load(args).workers == "auto"


def test_workers_and_a_cluster_combine(tmp_path, capsys):
    """docs/spec.md §9: with [cluster], "auto" is one worker per core again and a count is
    accepted (each worker is a node NODE_ID.wN of the registry)."""
    redis = {"redis": "redis://127.0.0.1:6379/0", "secret": "s" * 32}
    config = config_mod.load(None, overrides={"cluster": redis})
    assert config_mod.worker_count(config.workers) == (os.cpu_count() or 1)  #: "auto"
    path = tmp_path / "c.toml"
    path.write_text(
        f'workers = 2\n[cluster]\nredis = "{redis["redis"]}"\nsecret = "{redis["secret"]}"\n'
        'node_id = "edge-1"\n'
    )
    assert cli.main(["config", "--check", str(path)]) == 0
    assert "OK" in capsys.readouterr().out


@pytest.mark.parametrize("node_id", ["edge.w0", "a.w12", "x" * 60])
def test_a_node_id_leaves_room_for_its_workers(node_id, tmp_path, capsys):
    """A machine's id may not be taken for one of its workers' ids (MACHINE.wN), and a
    worker's id must still fit the registry's limit."""
    path = tmp_path / "c.toml"
    path.write_text(
        f'[cluster]\nredis = "redis://127.0.0.1:6379/0"\nsecret = "{"s" * 32}"\n'
        f'node_id = "{node_id}"\n'
    )
    assert cli.main(["config", "--check", str(path)]) == cli.EXIT_CONFIG
    assert "cluster.node_id" in capsys.readouterr().err
