"""Fixtures of the offline-corpus tests (the small build itself is ``offline_small`` in
tests/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tympan.datasets.manifest import read_manifest


@pytest.fixture(scope="session")
def task_rows():
    """``task_rows(root, task)`` -> the manifest rows of a built task, ``meta`` parsed."""
    def rows(out: Path, task: str) -> list[dict]:
        out_rows = read_manifest(Path(out) / "manifests" / f"{task}.parquet")
        for r in out_rows:
            r["meta"] = json.loads(r["meta"])
        return out_rows
    return rows
