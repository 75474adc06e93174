"""The runs behind docs/sensor.md: pretraining on sensor CSVs (under each gap policy) vs on audio
through the third-octave front end vs random init vs third-octave statistics, on the offline
build's ``sensor_sources`` task. Small on purpose (2 shared cores): minutes, not hours.

    python scripts/sensor_study.py --offline data/offline --out runs/sensor-study [--steps 200]

Steps (each the CLI command printed before it runs):
1. the train-split sensors' runs (``sensors/runs.parquet`` of the build, sensors of the task's
   train split only, so no test sensor's frames are seen even unlabelled) -> ``tympan data shard``;
2. ``tympan pretrain --preset sensor`` of Audio2Vec CBoW on ``spectra:`` shards with
   gap_policy reject / split / fill, and on ``offline:`` audio (third-octave front end);
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
    common = ["--method", a.method, "--preset", "sensor", "--workers", "1", f"steps={a.steps}",
              "batch_size=32", f"checkpoint_every={a.steps}", "log_every=20", "val_batches=0",
              "width=0.25", "dim=64"]
    ckpts, slices = {}, {}
    for policy in a.policies.split(","):
        d = out / f"sensor-{policy}"
        run(["pretrain", "--data", f"spectra:{out / 'shards'}", "--out", str(d), *common,
             f"gap_policy={policy}", "fill_max_frames=8"])
        s = json.loads((d / "summary.json").read_text())
        ckpts[f"sensor-{policy}"], slices[policy] = s["checkpoint"], s.get("slices", {})
    d = out / "audio-third-octave"
    run(["pretrain", "--data", f"offline:{off}", "--out", str(d), *common])
    ckpts["audio-third-octave"] = json.loads((d / "summary.json").read_text())["checkpoint"]
    ckpts.update(dict(x.split("=", 1) for x in a.extra))

    from tympan.distributed.sensor_eval import evaluate_sensor_task, format_table
    rows = evaluate_sensor_task(task, ckpts, seeds=(0, 1, 2))
    (out / "results.json").write_text(json.dumps({"rows": rows, "slices": slices}, indent=1))
    lines = [format_table(rows), "", "| policy | " + " | ".join(next(iter(slices.values()))) + " |",
             "|---" * (1 + len(next(iter(slices.values())))) + "|"]
    lines += [f"| {p} | " + " | ".join(str(v) for v in c.values()) + " |" for p, c in slices.items()]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
