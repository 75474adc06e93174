"""Ray Tune studies on a real local Ray cluster: the L3 design grid (table, plot, MLflow
nesting), resuming a study whose driver was killed, and an ASHA sweep that stops a trial."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Tiny but real: 2 optimisation steps of a 1/16-width L3 on 32 px frames, probes on two tasks.
TINY = ["width=0.0625", "image_size=32", "batch_size=4", "embed_hop_s=0.5"]
TASKS = ("speech_music_noise", "av_objects")

# Each test takes 1-4 min on an idle 2-core machine; the limit leaves room for a loaded one
# (the session's corpus build counts toward the first test's time).
pytestmark = [pytest.mark.usefixtures("ray_cluster"), pytest.mark.timeout(2400)]


def _read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _child_runs(tracking_uri: str, parent_run_id: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    return client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")


def test_l3_design_grid_table_plot_and_mlflow(offline_small, mlflow_server, tmp_path):
    from tympan.tuning.l3_design import GridSpec, run_grid
    from tympan.tuning.study import StudyOptions, settings_of

    root, _ = offline_small
    spec = GridSpec(method="l3", inputs=("linear", "mel128"), sizes=(4, 8), seeds=1, steps=2,
                    tasks=TASKS, max_per_split=8, overrides=tuple(TINY))
    opts = StudyOptions(kind="l3-design", name="grid", out=str(tmp_path / "grid"), corpus=str(root),
                        tracking_uri=mlflow_server, settings=settings_of(spec=spec))
    res = run_grid("l3-design", spec, opts, log=lambda *a: None)
    out = tmp_path / "grid"

    rows = _read_csv(out / "results.csv")
    assert sorted((r["input"], int(r["clips"])) for r in rows) == \
        [("linear", 4), ("linear", 8), ("mel128", 4), ("mel128", 8)]
    for r in rows:
        accs = [float(r[f"acc_{t}"]) for t in TASKS]
        assert all(0.0 <= a <= 1.0 for a in accs)
        assert float(r["average"]) == pytest.approx(np.mean(accs), abs=1e-3)
        assert int(r["steps"]) == 2 and r["seed"] == "0" and r["content"] == "all"
    md = (out / "results.md").read_text()
    assert md.count("\n| l3 |") == 4

    # The plotted points (read back from the figure's artists) are the table's means per line.
    with Image.open(out / "saturation.png") as im:
        assert im.format == "PNG" and im.size[0] > 300
    plotted = json.loads((out / "saturation.json").read_text())
    assert plotted["line_key"] == "input"
    expect = defaultdict(dict)
    for r in rows:
        expect[r["input"]][float(r["clips"])] = float(r["average"])
    assert set(plotted["lines"]) == set(expect)
    for line, pts in plotted["lines"].items():
        assert pts["clips"] == sorted(expect[line])
        assert pts["mean"] == pytest.approx([expect[line][x] for x in pts["clips"]], abs=1e-9)
        assert pts["std"] == pytest.approx([0.0] * len(pts["clips"]), abs=1e-9)  # one seed
    assert "Cramer" in (out / "comparison.md").read_text()

    # One MLflow run per trial, nested under the study run, holding the trial's accuracies.
    children = _child_runs(mlflow_server, res["mlflow_run_id"])
    assert sorted(c.info.run_id for c in children) == sorted(r["mlflow_run_id"] for r in rows)
    for c in children:
        assert c.info.status == "FINISHED"
        assert {f"acc_{t}" for t in TASKS} | {"average", "loss"} <= set(c.data.metrics)
    from mlflow.tracking import MlflowClient
    client = MlflowClient(mlflow_server)
    names = {a.path for a in client.list_artifacts(res["mlflow_run_id"])}
    assert {"results.csv", "results.md", "saturation.png", "comparison.md"} <= names


def _study_cmd(root: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "tympan", "tune", "l3-design", "--corpus", str(root),
            "--inputs", "mel128", "--sizes", "4,8", "--seeds", "1", "--steps", "2",
            "--tasks", ",".join(TASKS), "--max-per-split", "8", "--max-concurrent", "1",
            "--name", "resume", "--out", str(out), "--address", "local", *TINY]


def test_killed_study_resumes_without_repeating_finished_trials(offline_small, tmp_path):
    root, _ = offline_small
    out = tmp_path / "study"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("RAY_ADDRESS", None)    # its own embedded cluster, not the test session's
    log1 = open(tmp_path / "first.log", "wb")
    proc = subprocess.Popen(_study_cmd(root, out), env=env, stdout=log1, stderr=subprocess.STDOUT,
                            start_new_session=True)
    trials = out / "trials"
    deadline = time.time() + 600
    try:
        while time.time() < deadline and proc.poll() is None:
            if trials.is_dir() and any(trials.glob("*.json")):
                break
            time.sleep(0.5)
        assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        first = sorted(trials.glob("*.json"))
        assert len(first) == 1
    finally:
        # the driver and everything it started (its embedded Ray) die at once
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = {p.name: p.read_bytes() for p in first}
    record = json.loads(first[0].read_text())

    rerun = subprocess.run(_study_cmd(root, out), env=env, capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "continuing the study" in rerun.stdout
    rows = _read_csv(out / "results.csv")
    assert sorted(int(r["clips"]) for r in rows) == [4, 8]
    # the finished trial was not run again: same record, same single checkpoint, same MLflow run
    assert {p.name: p.read_bytes() for p in first} == before
    done_key = record["trial_key"]
    ckpts = list((out / "runs" / done_key / "checkpoints" / done_key).glob("step-*"))
    assert [c.name for c in ckpts] == ["step-00000002"]
    study = json.loads((out / "study.json").read_text())
    children = _child_runs(study["tracking_uri"], study["mlflow_run_id"])
    assert sorted(c.info.run_id for c in children) == sorted(r["mlflow_run_id"] for r in rows)
    assert record["mlflow_run_id"] in {r["mlflow_run_id"] for r in rows}


def test_asha_sweep_stops_a_bad_trial_early(offline_small, tmp_path):
    from tympan.tuning.study import StudyOptions, settings_of
    from tympan.tuning.sweep import run_sweep

    root, _ = offline_small
    space = tmp_path / "space.yaml"
    # Adam at lr 5 wrecks the network on its first step: its first validation loss is far above
    # the lr 1e-3 trial's, so ASHA (grid order: the good trial first) must stop it at rung 1.
    space.write_text("optim.lr: {grid: [1.0e-3, 5.0]}\n")
    opts = StudyOptions(kind="sweep", name="asha", out=str(tmp_path / "sweep"), corpus=str(root),
                        max_concurrent=1, settings=settings_of(space=str(space)))
    res = run_sweep("l3", str(space), opts, scheduler="asha", samples=1, steps=4, val_every=1,
                    size=8, overrides=tuple(TINY), log=lambda *a: None)
    by_lr = {float(r["optim.lr"]): r for r in res["rows"]}
    assert by_lr[1e-3]["status"] == "completed" and by_lr[1e-3]["reports"] == 4
    assert by_lr[5.0]["status"] == "stopped early" and by_lr[5.0]["reports"] < 4
    best = (tmp_path / "sweep" / "best.yaml").read_text()
    assert "optim.lr: 0.001" in best
    # no trial run is left RUNNING in MLflow: the stopped one is KILLED, the finished one FINISHED
    children = _child_runs(res["tracking_uri"], res["mlflow_run_id"])
    assert sorted(c.info.status for c in children) == ["FINISHED", "KILLED"]
