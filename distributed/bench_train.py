"""``tympan bench train``: what the Ray Train loop costs, per method, in one run.

For each method, on the same model config and the same batches:

* **plain PyTorch**: one process, a ``for`` loop over the batches (forward through the
  method's loss, backward, optimizer and scheduler step, one ``.item()`` per step);
* **Ray Train**: ``tympan pretrain``'s loop (:func:`tympan.distributed.train.pretrain`, one
  worker, the same threads) fed the *same* batches from memory, so the ratio isolates the
  loop's overhead (worker, dataset shard iterator, metric reductions, reports) from the data;
* **with the pipeline**: the same loop on ``workers`` workers fed by the Ray Data pipeline from
  shards, where the data-wait fraction (time in ``next(batch)`` / step time) says whether the
  data keeps up.

Samples/s count optimisation steps only (worker start-up and the first batch's latency are
part of the steps, as they are for the plain loop's first step). Target: Ray Train overhead
(1 - ray / plain) <= 5 %.

    res = run_bench_train(BenchTrainConfig(quick=True, methods=("triplet",)))
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tympan.config import check
from tympan.methods.registry import METHODS

# Narrow models: a CPU benchmark of nine methods must finish in minutes; the code path is the
# full one (pass overrides=... for other sizes).
BENCH_SIZES: dict[str, tuple[str, ...]] = {
    "audio2vec-cbow": ("width=0.25",), "audio2vec-skipgram": ("width=0.25",),
    "temporal-gap": ("width=0.25",), "triplet": ("width=0.25",),
    "cola": ("width=0.25", "projection_dim=128"),
    "l3": ("audio_input=mel128", "image_size=64", "width=0.25"),
    "soundnet": ("n_classes=4", "crop_s=1.0", "width=0.25", "teacher.image_size=32"),
    "audio-word2vec": (), "audio-text": ("width=0.25", "vocab_size=4096"),
}
SECTION = "## `tympan bench train`"


@dataclass(frozen=True)
class BenchTrainConfig:
    quick: bool = False
    methods: tuple[str, ...] = ()         # () = all nine
    steps: int = 0                        # 0: 40 full, 12 quick
    batch_size: int = 16                  # global
    workers: int = 2                      # the pipeline-fed run
    seed: int = 0
    work: str | None = None               # shards, teacher, run dirs (None: a temporary folder)

    def __post_init__(self):
        for m in self.methods:
            check(m in METHODS, "methods", self.methods, f"unknown method {m!r}")
        check(self.steps >= 0, "steps", self.steps, "must be >= 0")
        check(self.batch_size >= 2 and self.batch_size % max(1, self.workers) == 0, "batch_size",
              self.batch_size, f"must be >= 2 and divisible by workers={self.workers}")


def _teacher(path: Path) -> str:
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4))
    torch.jit.script(net.eval()).save(str(path))
    return str(path)


def _shards(root: Path, n_shards: int, per_shard: int, seed: int) -> None:
    from tympan.datasets.manifest import make_row
    from tympan.datasets.shards import encode_record, shard_name, write_shard
    from tympan.datasets.synthetic import synthetic_clips

    if (root / shard_name(n_shards - 1)).exists():
        return
    clips = synthetic_clips(n_shards * per_shard, duration_s=4.0, seed=seed, with_frames=True,
                            with_words=True, frame_size=64)
    for s in range(n_shards):
        recs = [encode_record(make_row(c.clip_id, f"synthetic:{c.clip_id}", labels=c.labels,
                                       meta=c.meta), c.audio, c.frames, c.frame_times)
                for c in clips[s * per_shard:(s + 1) * per_shard]]
        write_shard(str(root / shard_name(s)), recs)


def _in_memory_feed(batches: list[dict[str, np.ndarray]]):
    """The benchmark's fixed batches as the trainer's "train" dataset (rows in the object
    store): the Ray Train loop then reads exactly what the plain loop reads. A
    :class:`~tympan.distributed.train.DataFeed`, so it answers everything ``pretrain`` asks of
    a feed (bad clips, slice counts: none here)."""
    from tympan.distributed.train import DataFeed

    class InMemoryFeed(DataFeed):
        registry_name = None
        shuffle_buffer = 0

        def setup(self, experiment_uri: str) -> dict[str, Any]:
            import ray

            return {"train": ray.data.from_items(_rows(batches))}

    return InMemoryFeed()


def _rows(batches):
    return [{k: v[i] for k, v in b.items()} for b in batches for i in range(len(next(iter(b.values()))))]


def _plain_loop(method: str, method_cfg, train, batches) -> float:
    """Samples/s of a plain single-process loop over ``batches``."""
    from tympan.distributed.train import lr_schedule
    from tympan.methods.dist import Dist
    from tympan.methods.registry import get_method

    torch.manual_seed(train.seed)
    model = get_method(method)(method_cfg)
    opt = model.configure_optimizer()
    sched = lr_schedule(opt, train)
    model.train()
    t0 = time.perf_counter()
    for b in batches:
        opt.zero_grad(set_to_none=True)
        loss, _ = model.loss(model.to_tensors(b), Dist())
        loss.backward()
        opt.step()
        sched.step()
        float(loss.detach())
    return len(batches) * train.batch_size / (time.perf_counter() - t0)


def run_bench_train(cfg: BenchTrainConfig = BenchTrainConfig()) -> dict:
    import ray

    from tympan.distributed.pipeline import PipelineConfig, build_pipeline
    from tympan.distributed.train import RunSpec, pretrain, resolve_configs

    steps = cfg.steps or (12 if cfg.quick else 40)
    methods = cfg.methods or tuple(METHODS)
    work = Path(cfg.work or tempfile.mkdtemp(prefix="tympan-bench-train-")).resolve()
    shards = work / "shards"
    _shards(shards, n_shards=4 if cfg.quick else 8, per_shard=16, seed=cfg.seed)
    teacher = _teacher(work / "teacher.pt")
    if not ray.is_initialized():
        ray.init(address="local", include_dashboard=False, configure_logging=False)
    torch.set_num_threads(1)           # what one Ray Train worker gets on this machine
    rows, t_start = [], time.perf_counter()
    tracking = f"sqlite:///{work / 'mlflow.db'}"
    for method in methods:
        extra = [f"teacher.path={teacher}"] if method == "soundnet" else []
        common = [f"steps={steps}", f"batch_size={cfg.batch_size}", f"seed={cfg.seed}",
                  f"log_every={steps}", f"checkpoint_every={steps}", "val_batches=0",
                  "shuffle_buffer=0", *BENCH_SIZES[method], *extra]
        train, mcfg = resolve_configs(method, None, common)
        p = build_pipeline(str(shards), method, mcfg, PipelineConfig(
            batch_size=cfg.batch_size, seed=cfg.seed, shuffle_buffer=0))
        batches = []
        for b in p.iter_batches():
            batches.append(b)
            if len(batches) == steps:
                break
        plain = _plain_loop(method, mcfg, train, batches)
        stamp = time.strftime("%H%M%S")
        ray_run = pretrain(RunSpec(method=method, data=str(shards), workers=(1, 1),
                                   name=f"{method}-ray-{stamp}", out=str(work / "runs" / f"{method}-ray-{stamp}"),
                                   tracking_uri=tracking), train, mcfg, feed=_in_memory_feed(batches),
                           verbose=False)
        piped = pretrain(RunSpec(method=method, data=str(shards), workers=(cfg.workers, cfg.workers),
                                 name=f"{method}-pipe-{stamp}", out=str(work / "runs" / f"{method}-pipe-{stamp}"),
                                 tracking_uri=tracking), train, mcfg, verbose=False)
        row = {"method": method, "plain_samples_per_s": plain,
               "ray_samples_per_s": ray_run["samples_per_s"],
               "ratio": ray_run["samples_per_s"] / plain,
               "pipeline_workers": cfg.workers,
               "pipeline_samples_per_s": piped["samples_per_s"],
               "pipeline_data_wait_fraction": piped["data_wait_fraction"]}
        rows.append(row)
        print(f"  {method}: plain {plain:.1f}  ray train {row['ray_samples_per_s']:.1f} samples/s "
              f"(ratio {row['ratio']:.2f}); pipeline x{cfg.workers}: {row['pipeline_samples_per_s']:.1f} "
              f"samples/s, data wait {row['pipeline_data_wait_fraction']:.0%}", flush=True)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"config": asdict(cfg), "steps": steps, "rows": rows, "cores": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average": list(load), "torch": torch.__version__, "ray": ray.__version__,
            "seconds": round(time.perf_counter() - t_start, 1),
            "date": time.strftime("%Y-%m-%d", time.gmtime())}


def to_markdown(res: dict, command: str) -> str:
    lines = [SECTION, "",
             f"`{command}` on {res['date']}: {res['cores']} cores ({res['cpu']}), "
             f"GPU: {res['gpu'] or 'none'}, torch {res['torch']}, ray {res['ray']}; "
             f"{res['steps']} steps of global batch {res['config']['batch_size']} per loop, narrow "
             f"models (`BENCH_SIZES` in distributed/bench_train.py); load average during the run "
             f"{res['load_average'][0]:.1f} (1 min) / {res['load_average'][2]:.1f} (15 min).", "",
             "| method | plain PyTorch samples/s | Ray Train (1 worker) samples/s | ratio | "
             f"pipeline-fed ({res['rows'][0]['pipeline_workers'] if res['rows'] else '-'} workers) "
             "samples/s | data-wait fraction |", "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['method']} | {r['plain_samples_per_s']:.1f} | {r['ray_samples_per_s']:.1f} | "
                     f"{r['ratio']:.2f} | {r['pipeline_samples_per_s']:.1f} | "
                     f"{r['pipeline_data_wait_fraction']:.2f} |")
    return "\n".join(lines) + "\n"


def write_markdown(res: dict, path: str | Path, command: str, notes: str = "") -> None:
    """Replace (or append) this benchmark's section of ``path``; other sections are kept."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = to_markdown(res, command) + (f"\n{notes.strip()}\n" if notes else "")
    if SECTION in text:
        head, rest = text.split(SECTION, 1)
        tail = rest.split("\n## ", 1)
        text = head + section + ("\n## " + tail[1] if len(tail) > 1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def to_json(res: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(res, indent=2))
