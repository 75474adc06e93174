"""``tympan demo``: the main job, end to end, on embedded defaults.

1. build the offline real-audio corpus and downstream tasks (``--scale small``; reruns reuse it),
2. pretrain one method on the unlabelled pretraining shards,
3. evaluate with ``tympan evaluate``'s code (:mod:`tympan.distributed.evaluate`, in-process):
   linear probes on every task for the pretrained encoder, the same architecture at random
   initialisation and log-mel statistics (plus the supervised upper bound with
   ``eval_models``), and
4. print the table; write it, the checkpoint and the config to the run directory.

Pretraining here runs in-process on the driver (one worker, no Ray Train): the Ray Train loop
is a separate piece of the project and the demo says which one it used in its report.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from tympan.config import check


@dataclass
class DemoConfig:
    out: str = "runs/demo"
    scale: str = "small"
    method: str = "triplet"
    # A quarter-width encoder keeps the demo to minutes on 2 CPU cores; the architecture and
    # code path are the paper's (method_overrides=[] trains the full-size one).
    method_overrides: tuple[str, ...] = ("width=0.25",)
    steps: int = 200
    batch_size: int = 32
    seed: int = 0
    max_clips_per_split: int = 200      # per task split, to bound the evaluation time
    tasks: tuple[str, ...] = ()         # empty: every task the corpus has
    # The table (tympan.distributed.evaluate): models and seeds per task. "supervised" (the
    # same network trained on each task's labels) is the upper bound; it costs minutes per task.
    eval_models: tuple[str, ...] = ("pretrained", "random-init", "log-mel")
    eval_seeds: int = 1
    supervised_steps: int = 200

    def __post_init__(self):
        check(self.steps > 0, "steps", self.steps, "must be positive")
        check(self.batch_size > 1, "batch_size", self.batch_size, "needs at least 2 clips")
        check(self.scale in ("small", "full"), "scale", self.scale, "must be small or full")
        check(self.eval_seeds >= 1, "eval_seeds", self.eval_seeds, "must be >= 1")


def _pretrain_clips(corpus: Path, limit: int, rng: np.random.Generator):
    from tympan.datasets.shards import iter_shard, list_shards

    shards = list_shards(str(corpus / "pretrain" / "shards"))
    clips = []
    for uri in rng.permutation(shards):
        clips.extend(iter_shard(str(uri)))
        if len(clips) >= limit:
            break
    return clips


def pretrain_in_process(method: str, clips: Sequence, *, steps: int, batch_size: int, seed: int,
                        overrides: Sequence[str] = (), log_every: int = 25):
    """Train ``method`` on random batches of ``clips`` for ``steps`` steps on this process."""
    from tympan.config import build
    from tympan.methods.registry import get_method

    cls = get_method(method)
    cfg = build(cls.config_cls, {"batch_size": batch_size}, overrides)
    torch.manual_seed(seed)
    model = cls(cfg)
    opt = model.configure_optimizer()
    rng = np.random.default_rng(seed)
    losses = []
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        idx = rng.choice(len(clips), size=batch_size, replace=len(clips) < batch_size)
        batch = model.to_tensors(cls.sample_views(cfg, [clips[i] for i in idx], rng))
        metrics = model.train_step(batch, opt)
        losses.append(metrics["loss"])
        if step % log_every == 0 or step == steps:
            print(f"  step {step:4d}/{steps}  loss {np.mean(losses[-log_every:]):.4f}  "
                  f"({step * batch_size / (time.perf_counter() - t0):.0f} clips/s)", flush=True)
    return model.eval(), losses


def run_demo(cfg: DemoConfig = DemoConfig()) -> dict:
    from tympan.datasets.offline.build import build_offline
    from tympan.distributed.evaluate import EvalConfig, evaluate, format_table

    from tympan.config import build
    from tympan.methods.registry import get_method

    # Refuse a bad method name or override before spending minutes on the corpus.
    build(get_method(cfg.method).config_cls, {"batch_size": cfg.batch_size}, cfg.method_overrides)
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    print(f"[1/4] offline corpus ({cfg.scale}) -> {out / 'offline'}", flush=True)
    build_offline(out / "offline", scale=cfg.scale, seed=cfg.seed)
    corpus = out / "offline"

    print(f"[2/4] pretraining {cfg.method} in-process for {cfg.steps} steps "
          f"(batch {cfg.batch_size})", flush=True)
    rng = np.random.default_rng(cfg.seed)
    clips = _pretrain_clips(corpus, limit=max(4 * cfg.batch_size, 256), rng=rng)
    model, losses = pretrain_in_process(cfg.method, clips, steps=cfg.steps,
                                        batch_size=cfg.batch_size, seed=cfg.seed,
                                        overrides=cfg.method_overrides)
    model.save(out / "model.pt")

    print("[3/4] linear probes on the downstream tasks (tympan.distributed.evaluate)", flush=True)
    task_dirs = sorted(p.parent for p in (corpus / "tasks").glob("*/task_metadata.json"))
    if cfg.tasks:
        task_dirs = [d for d in task_dirs if d.name in cfg.tasks]
    eval_cfg = EvalConfig(seeds=tuple(range(cfg.eval_seeds)), models=cfg.eval_models,
                          backend="local", max_clips_per_split=cfg.max_clips_per_split,
                          supervised_steps=cfg.supervised_steps)
    rows = evaluate(str(out / "model.pt"), [str(d) for d in task_dirs], out / "evaluation",
                    eval_cfg, log=lambda msg: print(msg, flush=True))
    table = format_table(rows)
    print(f"[4/4] report -> {out / 'report.md'}", flush=True)
    report = {"config": asdict(cfg), "pretraining": "in-process (single worker, no Ray Train)",
              "loss_first": float(np.mean(losses[:10])), "loss_last": float(np.mean(losses[-10:])),
              "rows": rows, "seconds": round(time.perf_counter() - t_start, 1)}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(
        f"# tympan demo\n\nmethod `{cfg.method}`, {cfg.steps} steps in-process, "
        f"loss {report['loss_first']:.4f} -> {report['loss_last']:.4f}\n\n{table}\n")
    print(f"done in {report['seconds']} s; report, checkpoint: {out}")
    return report
