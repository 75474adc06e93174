"""The ``tympan`` console script: the DESIGN.md command groups, ``--help`` everywhere, and the
one-line exit 2 of a config error."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from tympan import cli

COMMANDS = ["demo", "data", "pretrain", "embed", "evaluate", "tune", "bench"]


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Yield (path, parser) for every parser and sub-parser."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, path + (name,))


def test_console_script_help_lists_the_commands():
    script = Path(sys.executable).with_name("tympan")
    assert script.exists(), "console script not installed: run `make setup`"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for command in COMMANDS:
        assert f"    {command} " in out.stdout or f"\n    {command}\n" in out.stdout, command
    # `python -m tympan` is the same entry point.
    mod = subprocess.run([sys.executable, "-m", "tympan", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert mod.returncode == 0 and mod.stdout == out.stdout


def test_help_works_on_every_subcommand(capsys):
    paths = [p for p, _ in _walk(cli.build_parser())]
    assert ("data", "ingest") in paths and ("bench", "train") in paths and ("tune", "l3-design") in paths
    for path in paths:
        with pytest.raises(SystemExit) as e:
            cli.build_parser().parse_args([*path, "--help"])
        assert e.value.code == 0, path
        out = capsys.readouterr().out
        assert out.startswith("usage: tympan" + "".join(f" {p}" for p in path)), (path, out[:80])


def test_ingest_lists_the_corpus_formats(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["data", "ingest", "--help"])
    out = capsys.readouterr().out
    for fmt in ("audioset", "esc50", "speechcommands", "nsynth", "vggsound", "hear", "folder"):
        assert fmt in out


def test_config_error_exits_2_naming_the_key(monkeypatch, capsys):
    from tympan.config import build
    from tympan.datasets.frontend import FrontendConfig

    def parser() -> argparse.ArgumentParser:
        p = argparse.ArgumentParser(prog="tympan")
        p.add_argument("overrides", nargs="*")
        p.set_defaults(func=lambda a: build(FrontendConfig, {}, a.overrides) and 0)
        return p

    monkeypatch.setattr(cli, "build_parser", parser)
    assert cli.main(["n_mels=999"]) == 2
    err = capsys.readouterr().err
    assert "n_mels" in err and "999" in err and err.count("\n") == 1


def test_unknown_command_is_a_usage_error():
    out = subprocess.run([sys.executable, "-m", "tympan", "frobnicate"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "invalid choice" in out.stderr
