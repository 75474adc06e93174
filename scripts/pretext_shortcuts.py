"""Is a pretext task solvable by clip-constant cues? (issue 14, point 5; docs/results.md)

For the triplet / temporal-proximity task: an anchor slice must be matched to its positive (a
slice of the same 10 s clip, <= tau away) against the positives of the other clips of the
batch; COLA's task is the same with two independent crops of the clip (``--method cola``).
If statistics that carry no content, only what is constant over a clip (level, EQ, background
bed, noise colour), already pick the right positive, the task is solved by them and the
encoder has no reason to learn content. This script measures, on the offline pretraining
shards, the top-1 retrieval accuracy of the positive among the batch for

    level       mean log-mel energy of the slice (one number)
    spectrum    mean over time of each mel bin (64 numbers: level + EQ + bed + noise colour)

with the views as the method samples them, and with per-view augmentations switched on.

    python scripts/pretext_shortcuts.py data/offline --batch 32 --batches 20 [--method cola]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def retrieval_top1(a: np.ndarray, p: np.ndarray) -> float:
    """Fraction of rows i whose nearest (euclidean, batch-standardised) p_j is p_i."""
    both = np.concatenate([a, p])
    mu, sd = both.mean(0), both.std(0) + 1e-6
    a, p = (a - mu) / sd, (p - mu) / sd
    d = ((a[:, None, :] - p[None, :, :]) ** 2).sum(-1)
    return float((d.argmin(1) == np.arange(len(a))).mean())


# Per method: the views as sampled by default, then with the per-view augmentations.
VARIANTS = {
    "triplet": {
        "as sampled (demo default)": [],
        "+ per-view gain/EQ": ["p_gain=1.0", "p_eq=1.0"],
        "+ per-view gain/EQ + mix + noise": ["p_gain=1.0", "p_eq=1.0", "p_mix=1.0", "p_noise=1.0"],
    },
    "cola": {
        "as sampled (paper default)": [],
        "+ per-view gain/EQ": ["p_gain=1.0", "p_eq=1.0"],
        "+ per-view gain/EQ + mix 0.5 + released noise": [
            "p_gain=1.0", "p_eq=1.0", "p_mix=0.5", "noise_scale=clip_norm"],
    },
}


def measure(clips, overrides, batch: int, batches: int, seed: int = 0,
            method: str = "triplet") -> dict[str, float]:
    from tympan.config import build
    from tympan.methods.registry import get_method

    cls = get_method(method)
    cfg = build(cls.config_cls, {}, list(overrides))
    rng = np.random.default_rng(seed)
    scores = {"level": [], "spectrum": []}
    for _ in range(batches):
        idx = rng.choice(len(clips), size=batch, replace=False)
        v = cls.sample_views(cfg, [clips[i] for i in idx], rng)
        a, p = v["anchor"], v["positive"]                        # [B, T, F]
        scores["level"].append(retrieval_top1(a.mean((1, 2))[:, None], p.mean((1, 2))[:, None]))
        scores["spectrum"].append(retrieval_top1(a.mean(1), p.mean(1)))
    return {k: float(np.mean(v)) for k, v in scores.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", help="an offline build (tympan data offline --out DIR)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--max-clips", type=int, default=256)
    ap.add_argument("--method", choices=sorted(VARIANTS), default="triplet")
    args = ap.parse_args(argv)
    from tympan.datasets.shards import iter_shard, list_shards

    clips = []
    for uri in list_shards(f"{args.corpus}/pretrain/shards"):
        clips.extend(iter_shard(uri))
        if len(clips) >= args.max_clips:
            break
    print(f"{args.method}: {len(clips)} pretraining clips, batch {args.batch}, "
          f"chance {1 / args.batch:.3f}")
    out = {}
    for name, ov in VARIANTS[args.method].items():
        out[name] = measure(clips, ov, args.batch, args.batches, method=args.method)
        print(f"  {name:48s} level {out[name]['level']:.3f}  spectrum {out[name]['spectrum']:.3f}", flush=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
