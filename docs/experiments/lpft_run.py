"""LP-FT variants of the supervised baseline (docs/results.md section 5, table "LP-FT tried").

Not part of tympan: run it on a checkout with ``git apply docs/experiments/lpft.patch`` (adds
``SupervisedConfig.head_init`` / ``encoder_lr_scale`` and ``probe.fit_probe``):

    python docs/experiments/lpft_run.py probe_1e-4 speech_music_noise,bird_detection,scenes

Prints mean, std and per-seed scores of the supervised row (3 seeds, whole splits, the 1/8-width
triplet architecture, as scripts/supervised_vs_random.py); random-init comes from that script.
"""

import sys
import tempfile
from pathlib import Path

import torch

import tympan.methods.baselines as baselines
from tympan.config import build
from tympan.distributed.evaluate import EvalConfig, evaluate
from tympan.methods.registry import get_method

VARIANTS = {
    "probe_1e-3": dict(head_init="probe"),
    "probe_1e-3_enc0.1": dict(head_init="probe", encoder_lr_scale=0.1),
    "probe_1e-4": dict(head_init="probe", lr=1e-4),
    "probe_1e-4_300": dict(head_init="probe", lr=1e-4, steps=300),
}


def main() -> None:
    names = sys.argv[1].split(",")
    tasks = sys.argv[2].split(",")
    offline = Path(sys.argv[3]) if len(sys.argv) > 3 else Path("data/offline")
    default = baselines.SupervisedConfig
    work = Path(tempfile.mkdtemp())
    cls = get_method("triplet")
    torch.manual_seed(0)
    cls(build(cls.config_cls, {}, ["width=0.125"])).save(work / "tri.pt")
    for name in names:
        # evaluate builds SupervisedConfig from EvalConfig's fields; the variant's keys win
        baselines.SupervisedConfig = lambda **kw: default(**{**kw, **VARIANTS[name]})
        rows = evaluate(str(work / "tri.pt"), [str(offline / "tasks" / t) for t in tasks], work / name,
                        EvalConfig(seeds=(0, 1, 2), models=("supervised",), backend="local"),
                        mlflow_run=False, log=lambda *a: None)
        for r in rows:
            print(name, r["task"], f"{r['mean']:.3f} ± {r['std']:.3f}", r["scores"], flush=True)


if __name__ == "__main__":
    main()
