"""`tympan evaluate` on the offline build's sensor task (third-octave windows, splits disjoint by
sensor and recording): one table with the checkpoint, random init and third-octave statistics."""

from __future__ import annotations

import json

from tympan.cli import main
from tympan.methods.registry import build_method
from tympan.methods.sensor import sensor_config


def test_evaluate_accepts_the_sensor_task(offline_small, tmp_path):
    root, _ = offline_small
    task = root / "manifests" / "sensor_sources.parquet"
    model = build_method("audio2vec-cbow", sensor_config("audio2vec-cbow", width=0.125, dim=16))
    model.save(tmp_path / "cbow.pt")
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(tmp_path / "cbow.pt"), "--tasks", str(task),
                 "--out", str(out), "--seeds", "2", "--backend", "local",
                 "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]) == 0
    rows = json.loads((out / "results.json").read_text())
    rows = rows["rows"] if isinstance(rows, dict) else rows
    by = {r["model"]: r for r in rows}
    assert set(by) == {"pretrained", "random-init", "third-octave-stats"}
    info = json.loads((root / "sensors" / "task_metadata.json").read_text())
    assert all(r["task"] == "sensor_sources" and r["n_test"] == info["sizes"]["test"] for r in rows)
    assert by["random-init"]["n_seeds"] == 2 and 0.0 <= by["pretrained"]["mean"] <= 1.0
    # the statistics baseline is far above chance on this task (build report: ~0.7 vs ~0.4)
    assert by["third-octave-stats"]["mean"] > info["chance"] + 0.15
    table = (out / "results.md").read_text()
    assert "third-octave-stats" in table and "| sensor_sources |" in table
