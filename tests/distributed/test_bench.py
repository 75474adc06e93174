"""``tympan bench data --quick --json``: runs end to end on a fresh local Ray cluster and writes
every figure. A smoke test of the benchmark's plumbing: no timing is asserted (speed is what
the benchmark reports, never what a unit test checks)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from tympan.distributed.bench import REQUIRED_KEYS


@pytest.mark.slow
def test_bench_data_quick_writes_every_key(tmp_path):
    out, md = tmp_path / "out.json", tmp_path / "bench.md"
    # A separate process: the benchmark starts (and stops) its own local Ray clusters.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "tympan", "bench", "data", "--quick",
                          "--json", str(out), "--out", str(md)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    res = json.loads(out.read_text())
    for key in REQUIRED_KEYS:
        assert isinstance(res[key], (int, float)) and math.isfinite(res[key]) and res[key] > 0, \
            (key, res.get(key))
    assert res["cores"] == min(2, os.cpu_count())
    # Every approach ran for both methods, and the report holds their rows.
    for method in ("cola", "l3"):
        runs = res["stream"][method]
        assert runs["limit"] and runs["dataloader"][str(res["cores"])] and runs["ray"][str(res["cores"])]
        assert all(r["clips"] > 0 for r in runs["ray"][str(res["cores"])])
    assert res["memory"]["10x"]["clips"] >= 10 * res["memory"]["1x"]["clips"] > 0
    text = md.read_text()
    n = res["cores"]
    assert f"| cola | {n} |" in text and f"| l3 | {n} |" in text and "Feeding one H100" in text
    assert not (tmp_path / "docs").exists()          # --quick writes no docs/benchmarks.md


@pytest.mark.slow
def test_bench_train_quick_runs_every_loop(tmp_path):
    """``tympan bench train --quick`` for one method: the plain loop, the Ray Train loop on the
    same batches and the pipeline-fed run all finish and report (no speed is asserted)."""
    out, md = tmp_path / "out.json", tmp_path / "bench.md"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "tympan", "bench", "train", "--quick",
                          "--methods", "triplet", "--json", str(out), "--out", str(md)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["method"] == "triplet"
    for key in ("plain_samples_per_s", "ray_samples_per_s", "pipeline_samples_per_s"):
        assert math.isfinite(row[key]) and row[key] > 0, (key, row[key])
    assert 0.0 <= row["pipeline_data_wait_fraction"] <= 1.0
    assert "| triplet |" in md.read_text()
