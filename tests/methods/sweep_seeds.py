"""Run every method's learning test setup at several init seeds and print a markdown table:
how the numbers in docs/methods.md "What the tests show" were measured. Not a test (slow).

    .venv/bin/python tests/methods/sweep_seeds.py --seeds 0 1 2 3 [--methods cola l3 ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import test_methods_a as a  # noqa: E402
import test_methods_b as b  # noqa: E402
import test_teacher as t    # noqa: E402

ALL = a.NAMES + ["l3", "audio-word2vec", "audio-text", "soundnet"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--methods", nargs="+", default=ALL, choices=ALL)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = a.synthetic_data() if any(m in a.NAMES for m in args.methods) else None
    teacher = t.make_teacher(Path(tempfile.mkdtemp())) if "soundnet" in args.methods else None
    print("| method | init seed | trained | random init | random init, BN statistics fitted | loss ratio | s |")
    print("|---|---|---|---|---|---|---|")
    for name in args.methods:
        for seed in args.seeds:
            t0 = time.time()
            if name in a.NAMES:
                r = a.learn(name, data, seed)
            elif name == "l3":
                r = b.learn_l3(seed)[0]
            elif name == "audio-word2vec":
                r = b.learn_word2vec(seed)
            elif name == "audio-text":
                r = b.learn_audio_text(seed)
            else:
                r = t.learn_soundnet(teacher, seed)
            print(f"| {name} | {seed} | {r.trained:.3f} | {r.random:.3f} | {r.random_bn:.3f} | "
                  f"{r.loss_ratio:.2f} | {time.time() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
