"""The supervised baseline against the random-init probe on small offline tasks (docs/results.md,
section 5): the 1/8-width triplet architecture, both models scored by ``tympan evaluate``'s code.

    python scripts/supervised_vs_random.py data/offline --per-split 0       # whole splits
    python scripts/supervised_vs_random.py data/offline --per-split 16      # 16 clips per split

Prints mean ± std over the 3 seeds and the per-seed scores of each row.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch

from tympan.config import build
from tympan.distributed.evaluate import EvalConfig, balanced_subset, evaluate
from tympan.methods.registry import get_method


def small_task(src: Path, dst: Path, per_split: int) -> str:
    """A copy of a HEAR task folder with at most ``per_split`` clips per split, classes balanced."""
    dst.mkdir(parents=True)
    for f in ("task_metadata.json", "labelvocabulary.csv"):
        shutil.copy(src / f, dst / f)
    for split in ("train", "valid", "test"):
        rows = [{"clip_id": k, "labels": v} for k, v in json.loads((src / f"{split}.json").read_text()).items()]
        items = {r["clip_id"]: r["labels"] for r in balanced_subset(rows, per_split)}
        (dst / f"{split}.json").write_text(json.dumps(items))
        (dst / "16000" / split).mkdir(parents=True)
        for name in items:
            shutil.copy(src / "16000" / split / name, dst / "16000" / split / name)
    return str(dst)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("offline", type=Path, help="a built offline corpus (tympan data offline)")
    ap.add_argument("--per-split", type=int, default=0, help="clips per split (0: all)")
    ap.add_argument("--steps", type=int, default=EvalConfig.supervised_steps,
                    help=f"supervised training steps (default {EvalConfig.supervised_steps})")
    ap.add_argument("--tasks", default="speech_music_noise,bird_detection,language_id")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        cls = get_method("triplet")
        torch.manual_seed(0)
        cls(build(cls.config_cls, {}, ["width=0.125"])).save(work / "tri.pt")
        tasks = [small_task(args.offline / "tasks" / t, work / "tasks" / t, args.per_split)
                 if args.per_split else str(args.offline / "tasks" / t) for t in args.tasks.split(",")]
        rows = evaluate(str(work / "tri.pt"), tasks, work / "eval",
                        EvalConfig(seeds=(0, 1, 2), models=("random-init", "supervised"), backend="local",
                                   supervised_steps=args.steps), mlflow_run=False, log=lambda *a: None)
    for r in rows:
        print(f"{r['task']:26s} {r['model']:12s} {r['mean']:.3f} ± {r['std']:.3f}  (n_test {r['n_test']}) "
              f"per seed {r['scores']}")


if __name__ == "__main__":
    main()
