"""The offline sensor network of the session's small build: CSVs in the sensors' format whose
faults ingest to the runs and counts the simulator injected, and the sensor_sources task."""

from __future__ import annotations

import json

import numpy as np

from tympan.datasets.formats.spectra import ingest_spectra
from tympan.datasets.manifest import read_manifest
from tympan.datasets.offline.sensors import CLASSES, FRAMES, window_levels


def test_faults_ingest_to_the_injected_runs_and_named_lines(offline_small):
    out, report = offline_small
    truth = json.loads((out / "sensors" / "truth.json").read_text())
    rows, rep = ingest_spectra(str(out / "sensors" / "csv"))
    runs = {}
    for r in rows:
        runs.setdefault(json.loads(r["meta"])["sensor"], []).append(json.loads(r["meta"]))
    assert set(runs) == set(truth) == {s["sensor"] for s in report["sensors"]["sensors"]}
    for sensor, t in truth.items():
        # every gap and backward clock jump starts a run; frames are all kept
        assert len(runs[sensor]) == 1 + len(t["breaks"]), sensor
        assert sum(m["frames"] for m in runs[sensor]) == t["frames"]
    refused = sorted(int(r.rsplit(":", 2)[-2]) for r in rep.rejected)
    injected = sorted(line for t in truth.values() for line in t["malformed_lines"])
    assert refused == injected
    assert rep.dropped["repeated row"] == sum(len(t["repeated_lines"]) for t in truth.values())
    assert rep.gaps == sum(len(t["gaps_s"]) for t in truth.values())
    assert abs(rep.gap_hours * 3600 - sum(sum(t["gaps_s"].values()) for t in truth.values())) < 1.0


def test_sensor_task_windows_are_continuous_and_split_by_sensor_and_source(offline_small):
    out, report = offline_small
    info = report["sensors"]["task"]
    rows = read_manifest(out / "manifests" / "sensor_sources.parquet")
    metas = [json.loads(r["meta"]) for r in rows]
    assert {r["labels"][0] for r in rows} == set(CLASSES)
    assert info["sizes"] == {s: sum(r["split"] == s for r in rows) for s in ("train", "valid", "test")}
    assert min(info["sizes"].values()) > 0
    by_split: dict[str, set] = {}
    sensors: dict[str, set] = {}
    for r, m in zip(rows, metas):
        by_split.setdefault(r["split"], set()).update(m["sources"])
        sensors.setdefault(r["split"], set()).add(m["sensor"])
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        assert not sensors[a] & sensors[b]
        assert not by_split[a] & by_split[b], (a, b, by_split[a] & by_split[b])
    levels = window_levels(rows[:12])
    assert levels.shape == (12, FRAMES, 29) and np.isfinite(levels).all()
    # consecutive frames of a window are 125 ms apart: the window is one continuous run
    assert all(m["lines"][1] - m["lines"][0] + 1 >= FRAMES for m in metas)
    assert info["baseline_accuracy"] > info["chance"] + 0.1, info


def test_pretraining_mix_keeps_the_sensor_tasks_test_sources_out(offline_small):
    out, _ = offline_small
    held_out = set()
    for r in read_manifest(out / "manifests" / "sensor_sources.parquet"):
        if r["split"] != "train":
            held_out.update(json.loads(r["meta"])["sources"])
    sources = json.loads((out / "pretrain" / "sources.json").read_text())
    used = {rec["id"] for recs in sources["recordings"].values() for rec in recs}
    assert "sensor_sources.parquet" in sources["manifests"]
    assert held_out and held_out <= set(sources["held_out"]["sources"]) and not used & held_out
