"""Packaging: the top-level folders are the subpackages tympan.datasets, tympan.distributed, ...
and never top-level modules, so they cannot shadow Hugging Face ``datasets`` or Dask
``distributed`` in a user's environment, also when a Ray job's working directory (the
repository root) is first on sys.path (DESIGN.md "Layout and layers", ANCHORS "Packaging").

Each case runs in a fresh interpreter (the venv's python), because import state is global."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHADOWABLE = ("datasets", "distributed", "methods", "tuning")

PROBE = """
import json, sys
{setup}
import datasets, distributed
import tympan.datasets.frontend as fe
print(json.dumps({{"datasets": datasets.MARK, "distributed": distributed.MARK,
                  "frontend": fe.__file__, "n_mels": fe.FrontendConfig().n_mels}}))
"""


@pytest.fixture(scope="module")
def dummy_site(tmp_path_factory) -> Path:
    """A directory holding stand-ins for the third-party top-level packages."""
    site = tmp_path_factory.mktemp("dummy_site")
    for name in ("datasets", "distributed"):
        (site / name).mkdir()
        (site / name / "__init__.py").write_text(f"MARK = 'dummy-{name}'\n")
    return site


def _run(code: str, cwd: Path, pythonpath: list[Path] | None, flags: tuple[str, ...] = ()) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    out = subprocess.run([sys.executable, *flags, "-c", code], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _check(result: dict) -> None:
    assert result["datasets"] == "dummy-datasets"
    assert result["distributed"] == "dummy-distributed"
    assert os.path.samefile(result["frontend"], REPO / "datasets" / "frontend.py")
    assert result["n_mels"] == 64


def test_dummy_packages_win_from_an_arbitrary_directory(dummy_site, tmp_path):
    _check(_run(PROBE.format(setup=""), cwd=tmp_path, pythonpath=[dummy_site]))


def test_dummy_packages_win_with_the_repository_root_first(dummy_site):
    # As under `ray job submit --working-dir .`: cwd = repository root, root first on sys.path.
    setup = f"sys.path.insert(0, {str(REPO)!r})"
    result = _run(PROBE.format(setup=setup), cwd=REPO, pythonpath=[REPO, dummy_site])
    _check(result)


def test_installed_package_exposes_only_tympan(tmp_path):
    dist = importlib.metadata.distribution("tympan")
    assert (dist.read_text("top_level.txt") or "tympan").split() == ["tympan"]
    # Every directory the install puts on sys.path (.pth files) holds only `tympan`.
    for pth in [f for f in dist.files or [] if str(f).endswith(".pth")]:
        for line in Path(dist.locate_file(pth)).read_text().splitlines():
            entry = Path(line.strip())
            if line.strip() and not line.startswith(("import", "#")) and entry.is_dir():
                top = {p.name for p in entry.iterdir()} - {"__pycache__"}
                assert not top & set(SHADOWABLE), (entry, top)
                assert "tympan" in top
    # From a neutral directory, without the repository on sys.path (-P: no cwd entry), none of
    # the folder names resolve to this project.
    code = ("import importlib.util, json; "
            f"specs = {{n: importlib.util.find_spec(n) for n in {list(SHADOWABLE)!r}}}; "
            "print(json.dumps({n: (s.origin, list(s.submodule_search_locations or [])) "
            "if s else None for n, s in specs.items()}))")
    specs = _run(code, cwd=tmp_path, pythonpath=None, flags=("-P",))
    for name, spec in specs.items():
        if spec is not None:        # a third-party package of that name is fine, ours is not
            locations = [spec[0] or "", *spec[1]]
            assert not any(str(REPO) in loc for loc in locations), (name, spec)
    # ... while tympan's subpackages do (those with modules yet: the strict editable install
    # links files, so a folder with no .py file has nothing installed).
    names = [n for n in SHADOWABLE if any((REPO / n).glob("*.py"))]
    assert {"datasets", "methods"} <= set(names)
    found = _run("import importlib.util, json; print(json.dumps({n: bool(importlib.util.find_spec("
                 f"'tympan.' + n)) for n in {names!r}}}))",
                 cwd=tmp_path, pythonpath=None, flags=("-P",))
    assert found == {n: True for n in names}


def test_folders_have_no_init_files():
    # An __init__.py would make the repository root's folders regular packages that shadow
    # the real `datasets` / `distributed` (ANCHORS "Packaging").
    for name in SHADOWABLE:
        assert (REPO / name).is_dir(), name
        assert not (REPO / name / "__init__.py").exists(), name


# ---- the import graph -----------------------------------------------------------------------

FOLDERS = {"tympan": "tympan", "datasets": "tympan.datasets", "methods": "tympan.methods",
           "distributed": "tympan.distributed", "tuning": "tympan.tuning"}


def _modules() -> dict[str, Path]:
    """Installed module name -> file, for every module of the project."""
    out = {}
    for folder, package in FOLDERS.items():
        for f in (REPO / folder).rglob("*.py"):
            parts = f.relative_to(REPO / folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            out[".".join((package, *parts))] = f
    return out


def _imports(path: Path, known: set[str]) -> set[str]:
    """Project modules ``path`` imports, at any depth (lazy imports inside functions count)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in known}
    return found


def test_no_import_cycles():
    mods = _modules()
    graph = {m: _imports(f, set(mods)) - {m} for m, f in mods.items()}
    cycles, state = [], {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycles.append(stack[stack.index(n):] + [n] if n in stack else [m, n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_only_distributed_and_tuning_import_ray():
    mods = _modules()
    import ast

    offenders = []
    for m, f in mods.items():
        if m.startswith(("tympan.distributed", "tympan.tuning")):
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "ray" or n.startswith("ray.") for n in names):
                offenders.append(m)
    assert not offenders, offenders
