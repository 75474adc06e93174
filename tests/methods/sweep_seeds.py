"""Run the learning tests' setups at several init seeds and torch thread counts and print a
markdown table: how the numbers in docs/methods.md "What the tests show" were measured, and
what each test's margin is set against. Not a test (slow: 10-90 s a row on 2 cores).

    .venv/bin/python tests/methods/sweep_seeds.py --seeds 0 1 2 --threads 1 2 [--methods cola ...]

A thread count changes torch's CPU kernels (the order of float sums), so a row at 2 threads is
another training path of the same seed, like the one a different CPU takes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import test_audio_text  # noqa: E402
import test_audio_word2vec  # noqa: E402
import test_l3  # noqa: E402
import test_slice_methods as slices  # noqa: E402
import test_teacher  # noqa: E402

ALL = slices.NAMES + ["l3", "audio-word2vec", "audio-text", "soundnet"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--methods", nargs="+", default=ALL, choices=ALL)
    args = ap.parse_args()
    data = slices.synthetic_data() if any(m in slices.NAMES for m in args.methods) else None
    teacher = None
    print("| method | seed | threads | probe trained | random | random_bn | margin | loss ratio | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.methods:
        for threads in args.threads:
            torch.set_num_threads(threads)
            for seed in args.seeds:
                t0 = time.time()
                if name in slices.NAMES:
                    r = slices.learn(name, data, seed)
                elif name == "l3":
                    r = test_l3.learn_l3(seed)[0]
                elif name == "audio-word2vec":
                    r = test_audio_word2vec.learn_word2vec(seed)
                elif name == "audio-text":
                    r = test_audio_text.learn_audio_text(seed)
                else:
                    if teacher is None:      # trained at the first thread count asked for
                        teacher = test_teacher.make_teacher(Path(tempfile.mkdtemp()))
                    r = test_teacher.learn_soundnet(teacher, seed)
                print(f"| {name} | {seed} | {threads} | {r.trained:.3f} | {r.random:.3f} | "
                      f"{r.random_bn:.3f} | {r.margin:+.3f} | {r.loss_ratio:.2f} | "
                      f"{time.time() - t0:.0f} |", flush=True)
                if r.unseen is not None:     # label-aligned methods: classes 8-15, never seen
                    u = r.unseen
                    print(f"| {name} (unseen classes) | {seed} | {threads} | {u.trained:.3f} | "
                          f"{u.random:.3f} | {u.random_bn:.3f} | {u.margin:+.3f} | | |", flush=True)


if __name__ == "__main__":
    main()
