"""The demo's triplet, trained as the demo does, with and without per-view augmentations, then
scored by ``tympan evaluate``'s code against random init (docs/results.md).

    python scripts/triplet_study.py data/offline --out runs/triplet_study --steps 200
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

VARIANTS = {
    "demo": [],
    "per-view gain/EQ + mix + noise": ["p_gain=1.0", "p_eq=1.0", "p_mix=0.5", "p_noise=0.5"],
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus")
    ap.add_argument("--out", default="runs/triplet_study")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--width", default="0.25")
    ap.add_argument("--tasks", nargs="*", default=["speech_music_noise", "pitch", "keywords", "speaker_id"])
    ap.add_argument("--max-clips-per-split", type=int, default=60)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from tympan.demo import _pretrain_clips, pretrain_in_process
    from tympan.distributed.evaluate import EvalConfig, evaluate

    corpus, out = Path(args.corpus), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clips = _pretrain_clips(corpus, limit=max(4 * args.batch, 256), rng=np.random.default_rng(0))
    summary = {}
    for name in args.variants:
        t0 = time.perf_counter()
        overrides = [f"width={args.width}", *VARIANTS[name]]
        model, losses = pretrain_in_process("triplet", clips, steps=args.steps, batch_size=args.batch,
                                            seed=0, overrides=overrides, log_every=50)
        train_s = time.perf_counter() - t0
        d = out / name.replace(" ", "_").replace("/", "-")
        d.mkdir(exist_ok=True)
        model.save(d / "model.pt")
        rows = evaluate(str(d / "model.pt"), [str(corpus / "tasks" / t) for t in args.tasks], d,
                        EvalConfig(seeds=tuple(range(args.seeds)), backend="local",
                                   models=("pretrained", "random-init", "log-mel"),
                                   max_clips_per_split=args.max_clips_per_split), mlflow_run=False)
        curve = [float(np.mean(losses[i:i + 25])) for i in range(0, len(losses), 25)]
        summary[name] = {"overrides": overrides, "loss_curve_per_25_steps": curve,
                         "train_seconds": round(train_s, 1),
                         "seconds": round(time.perf_counter() - t0, 1), "rows": rows}
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
