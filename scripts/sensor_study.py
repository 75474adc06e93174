"""The runs behind docs/sensor.md: pretraining on sensor CSVs (under each gap policy) vs on audio
through the third-octave front end vs random init vs third-octave statistics, on the offline
build's ``sensor_sources`` task. Small on purpose (2 shared cores): minutes, not hours.

    python scripts/sensor_study.py --offline data/offline --out runs/sensor-study [--steps 200]
        [--policies reject,split] [--cbow-policies reject] [--audio DATA]

Steps (each the CLI command printed before it runs):
1. the train-split sensors' runs (``sensors/runs.parquet`` of the build, sensors of the task's
   train split only, so no test sensor's frames are seen even unlabelled) -> ``tympan data shard``;
2. ``tympan pretrain --preset sensor`` of ``--method`` (default TemporalGap) on ``spectra:``
   shards under each of ``--policies`` and of Audio2Vec CBoW under each of
   ``--cbow-policies``, and of ``--method`` on audio through the third-octave front end (the
   build's pre-mixed shards ``OFFLINE/pretrain/shards`` unless ``--audio`` says otherwise);
   a run whose ``summary.json`` exists is kept (rerun to finish a study);
3. probes on the task for every checkpoint, random init and third-octave statistics
   (:mod:`tympan.distributed.sensor_eval`); the table and the slicing counts go to
   ``OUT/results.md`` and ``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

from tympan.cli import main as tympan
from tympan.datasets.manifest import read_manifest, write_manifest


def run(argv: list[str]) -> None:
    print("$ tympan " + " ".join(shlex.quote(a) for a in argv), flush=True)
    t = time.perf_counter()
    assert tympan(argv) == 0, argv
    print(f"  ({time.perf_counter() - t:.0f} s)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--offline", required=True)
    ap.add_argument("--out", default="runs/sensor-study")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--method", default="temporal-gap")
    ap.add_argument("--policies", default="reject,split,fill")
    ap.add_argument("--cbow-policies", default="reject",
                    help="gap policies of the Audio2Vec CBoW runs on sensor shards ('' for none)")
    ap.add_argument("--audio", default=None, metavar="DATA",
                    help="the audio pretraining data (third-octave front end): default the "
                         "build's pre-mixed shards OFFLINE/pretrain/shards; offline:OFFLINE for "
                         "the live mixer (far slower on 2 cores: ~6 samples/s)")
    ap.add_argument("--extra", nargs="*", default=[], metavar="NAME=CHECKPOINT",
                    help="more checkpoints for the table")
    a = ap.parse_args()
    off, out = Path(a.offline), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    task = off / "manifests" / "sensor_sources.parquet"
    train_sensors = {json.loads(r["meta"])["sensor"] for r in read_manifest(str(task))
                     if r["split"] == "train"}
    runs = [r for r in read_manifest(str(off / "sensors" / "runs.parquet"))
            if json.loads(r["meta"])["sensor"] in train_sensors]
    write_manifest(runs, out / "train_runs.parquet")
    if not (out / "shards" / "_summary.json").exists():
        run(["data", "shard", str(out / "train_runs.parquet"), "--out", str(out / "shards"),
             "--shard-size", "1"])
    common = ["--preset", "sensor", "--workers", "1", f"steps={a.steps}",
              "batch_size=32", f"checkpoint_every={a.steps}", "log_every=20", "val_batches=0",
              "width=0.25", "dim=64"]
    ckpts, slices, pretext = {}, {}, {}
    short = {"temporal-gap": "tgap", "audio2vec-cbow": "cbow"}

    def pretrain(name: str, data: str, method: str, *extra: str) -> dict:
        d = out / name
        if not (d / "summary.json").exists():         # a rerun keeps the runs already done
            t = time.perf_counter()
            run(["pretrain", "--data", data, "--out", str(d), "--method", method, *common, *extra])
            (d / "wall_s.txt").write_text(f"{time.perf_counter() - t:.0f}\n")
        s = json.loads((d / "summary.json").read_text())
        ckpts[name] = s["checkpoint"]
        pretext[name] = {"loss_first": s.get("loss_first"), "loss_last": s.get("loss_last"),
                         "steps": s.get("steps"), "wall_s": float((d / "wall_s.txt").read_text())
                         if (d / "wall_s.txt").exists() else None}
        return s

    runs_ = [(a.method, p) for p in a.policies.split(",") if p]
    runs_ += [("audio2vec-cbow", p) for p in a.cbow_policies.split(",") if p]
    for method, policy in runs_:
        s = pretrain(f"{short.get(method, method)}-sensor-{policy}", f"spectra:{out / 'shards'}",
                     method, f"gap_policy={policy}", "fill_max_frames=8")
        slices[f"{short.get(method, method)}-{policy}"] = s.get("slices", {})
    pretrain(f"{short.get(a.method, a.method)}-audio-third-octave",
             a.audio or str(off / "pretrain" / "shards"), a.method)
    ckpts.update(dict(x.split("=", 1) for x in a.extra))

    from tympan.distributed.sensor_eval import evaluate_sensor_task, format_table
    rows = evaluate_sensor_task(task, ckpts, seeds=(0, 1, 2))
    (out / "results.json").write_text(json.dumps({"rows": rows, "slices": slices,
                                                  "pretext": pretext}, indent=1))
    lines = [format_table(rows), "", "| policy | " + " | ".join(next(iter(slices.values()))) + " |",
             "|---" * (1 + len(next(iter(slices.values())))) + "|"]
    lines += [f"| {p} | " + " | ".join(str(v) for v in c.values()) + " |" for p, c in slices.items()]
    lines += ["", "| run | pretext loss first -> last | steps | wall s |", "|---|---|---|---|"]
    lines += [f"| {n} | {v['loss_first']:.4g} -> {v['loss_last']:.4g} | {v['steps']} | {v['wall_s']} |"
              for n, v in pretext.items()]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
