"""Probes on the offline build's sensor task (third-octave windows, splits disjoint by sensor and
recording): one table with the checkpoint, random init and the third-octave statistics."""

from __future__ import annotations

import json

import numpy as np

from tympan.distributed.sensor_eval import evaluate_sensor_task, format_table
from tympan.methods.sensor import sensor_config
from tympan.methods.registry import build_method


def test_sensor_task_table_has_the_baselines(offline_small, tmp_path):
    root, _ = offline_small
    task = root / "manifests" / "sensor_sources.parquet"
    model = build_method("audio2vec-cbow", sensor_config("audio2vec-cbow", width=0.125, dim=16))
    model.save(tmp_path / "cbow.pt")
    rows = evaluate_sensor_task(task, {"cbow": str(tmp_path / "cbow.pt")}, seeds=(0, 1), log=lambda *_: None)
    by = {r["model"]: r for r in rows}
    assert set(by) == {"pretrained:cbow", "random-init", "third-octave-stats", "chance"}
    info = json.loads((root / "sensors" / "task_metadata.json").read_text())
    n_test = info["task"]["sizes"]["test"] if "task" in info else info["sizes"]["test"]
    assert all(r["n_test"] == n_test and 0.0 <= r["mean"] <= 1.0 for r in rows)
    assert np.isclose(by["chance"]["mean"], info.get("chance", info.get("task", {}).get("chance")))
    # the statistics baseline is far above chance on this task (build report: ~0.8 vs ~0.3)
    assert by["third-octave-stats"]["mean"] > by["chance"]["mean"] + 0.15
    assert "| sensor_sources | third-octave-stats |" in format_table(rows)
