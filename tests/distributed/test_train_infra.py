"""infra/ and the README's "Running at scale" name only commands and options that exist: every
``tympan ...`` command line in them parses with ``tympan.cli.build_parser()``, and a pretrain
command's config keys, worker range and global batch are accepted as ``tympan pretrain`` would
(before any Ray resource). No Ray, no network."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from tympan.cli import build_parser
from tympan.distributed.train import check_world_sizes, parse_workers, resolve_configs

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
_STOP = {">", ">>", "|", "&&", ";", "||", "2>&1"}


def _strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def _commands(text: str) -> list[list[str]]:
    """``tympan`` invocations in shell-like text (continuations joined, cut at redirections)."""
    text = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in text.splitlines():
        for m in re.finditer(r"(?:^|\s|--\s)tympan\s+([a-z].*)", line):
            tokens = []
            for tok in shlex.split(m.group(1), comments=False):
                if tok in _STOP:
                    break
                tokens.append(tok)
            out.append(tokens)
    return out


def _infra_commands() -> list[tuple[str, list[str]]]:
    found = []
    for path in sorted(INFRA.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            for s in _strings(doc):
                found += [(path.name, c) for c in _commands(s)]
    docker = "\n".join(l for l in (INFRA / "Dockerfile").read_text().splitlines()
                        if not l.lstrip().startswith("#"))
    found += [("Dockerfile", c) for c in _commands(docker)]
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Running at scale", 1)[1].split("\n## ", 1)[0]
    for block in re.findall(r"```(?:\w*)\n(.*?)```", section, re.S):
        found += [("README Running at scale", c) for c in _commands(block)]
    return found


COMMANDS = _infra_commands()


def test_infra_files_parse_and_name_tympan():
    names = {name for name, _ in COMMANDS}
    assert {"cluster-aws.yaml", "rayjob.yaml", "Dockerfile", "README Running at scale"} <= names
    job = yaml.safe_load((INFRA / "rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and job["spec"]["entrypoint"].startswith("tympan pretrain")
    cluster = yaml.safe_load((INFRA / "cluster-aws.yaml").read_text())
    assert cluster["provider"]["type"] == "aws" and "head" in cluster["available_node_types"]
    kinds = [d["kind"] for d in yaml.safe_load_all((INFRA / "mlflow-server.yaml").read_text())]
    assert kinds == ["Namespace", "Deployment", "Service"]


@pytest.mark.parametrize("where, argv", COMMANDS, ids=[f"{w}:{' '.join(a)[:60]}" for w, a in COMMANDS])
def test_every_tympan_command_exists(where, argv):
    argv = [a for a in argv if a != "--help"]
    args = build_parser().parse_args(argv)          # SystemExit on an unknown command/option
    if args.command == "pretrain" and args.method:
        train, _ = resolve_configs(args.method, None, args.overrides)
        check_world_sizes(train, parse_workers(args.workers))
