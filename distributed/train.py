"""Data-parallel pretraining of any method on Ray Train (V2): ``tympan pretrain``.

    spec = RunSpec(method="cola", data="offline:data/offline", workers=(2, 2), name="c1")
    train, method_cfg = resolve_configs("cola", None, ["steps=1000", "batch_size=64", "width=0.5"])
    summary = pretrain(spec, train, method_cfg)

Shape of a run:

* **configs first**: :func:`resolve_configs` splits ``key=value`` overrides (and a YAML file)
  between :class:`TrainConfig` (steps, global batch, schedule, checkpoints...) and the method's
  own config; ``batch_size`` goes to both. :func:`check_world_sizes` refuses a global batch
  that some allowed world size cannot divide. All of this happens before Ray starts.
* **data**: the Ray Data pipeline (``tympan.distributed.pipeline``) hands the trainer a
  dataset; the trainer reads its shard with ``get_dataset_shard("train").iter_batches``.
  The dataset is given as a factory that Ray Train calls on every worker-group (re)start: it
  continues the stream from the data position of the latest checkpoint.
* **workers** (:func:`train_func`): the method wrapped in DDP (``prepare_model``), its loss
  computed with ``Dist.from_torch()`` so contrastive methods gather negatives across workers;
  per-worker batch = global batch / *current* world size (so an elastic resize keeps the
  global batch and the number of negatives), split into ``grad_accum`` micro-batches;
  warm-up + cosine learning rate; bf16 autocast on CUDA only; seed + rank per worker.
* **checkpoints** every ``checkpoint_every`` steps and at the end (``checkpoints.py``), kept
  ``num_to_keep`` deep by Ray; a worker or node that dies is replaced and the group restarts
  from the latest one (``FailureConfig``); ``--resume`` reruns with the same storage and name.
* **tracking** (``tracking.py``): rank 0 logs step metrics to MLflow, the driver the params,
  tags and artifacts; ``summary.json`` in the run directory.

Only this layer imports Ray; methods see a :class:`~tympan.methods.dist.Dist`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import ray
import torch
import yaml
from torch import nn

from tympan.config import ConfigError, build, check, to_dict

# ---- configuration ------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """The training loop's knobs; every method accepts them as ``key=value`` overrides."""

    steps: int = 1000                   # optimisation steps in total (a resumed run continues)
    batch_size: int | None = None       # GLOBAL batch over all workers; None: the method's default
    grad_accum: int = 1                 # micro-batches per step on each worker
    warmup_steps: int | None = None     # linear warm-up; None: 5 % of steps
    min_lr_ratio: float = 0.0           # cosine decays the method's optim.lr to this fraction
    checkpoint_every: int = 500         # steps between checkpoints (and one at the end)
    num_to_keep: int = 3                # checkpoints kept in storage
    val_every: int = 0                  # steps between validation losses; 0: only at the end
    val_batches: int = 2                # global batches of held-out examples per validation
    log_every: int = 10                 # steps between metric points (loss is averaged over them)
    seed: int = 0
    max_failures: int = 3               # worker / node failures to recover from (-1: always)
    precision: Literal["auto", "bf16", "fp32"] = "auto"   # auto: bf16 autocast on CUDA, fp32 on CPU
    data_cpus_per_gpu: float = 4.0      # CPUs left to the data pipeline beside each GPU worker
    cpus_per_worker: float | None = None  # CPUs reserved per training worker; None: sized from the cluster
    shuffle_buffer: int | None = None   # pipeline's local shuffle buffer; None: its default
    val_data: str | None = None         # held-out data URI for validation; None: see README
    # spectra: data (sensor records): slices of slice_width frames; a discontinuity inside one
    # is handled by gap_policy (reject / split / fill gaps of <= fill_max_frames frames)
    slice_width: int = 80
    gap_policy: Literal["reject", "split", "fill"] = "reject"
    fill_max_frames: int = 8

    def __post_init__(self):
        check(self.steps >= 1, "steps", self.steps, "must be >= 1")
        check(self.batch_size is None or self.batch_size >= 1, "batch_size", self.batch_size,
              "must be >= 1")
        check(self.grad_accum >= 1, "grad_accum", self.grad_accum, "must be >= 1")
        check(self.warmup_steps is None or 0 <= self.warmup_steps < self.steps, "warmup_steps",
              self.warmup_steps, f"must be in [0, steps={self.steps})")
        check(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio", self.min_lr_ratio, "must be in [0, 1]")
        check(self.checkpoint_every >= 1, "checkpoint_every", self.checkpoint_every, "must be >= 1")
        check(self.num_to_keep >= 1, "num_to_keep", self.num_to_keep, "must be >= 1")
        check(self.val_every >= 0, "val_every", self.val_every, "must be >= 0 (0: at the end only)")
        check(self.val_batches >= 0, "val_batches", self.val_batches, "must be >= 0 (0: no validation)")
        check(self.log_every >= 1, "log_every", self.log_every, "must be >= 1")
        check(self.max_failures >= -1, "max_failures", self.max_failures, "must be >= -1")
        check(self.data_cpus_per_gpu >= 0, "data_cpus_per_gpu", self.data_cpus_per_gpu, "must be >= 0")
        check(self.cpus_per_worker is None or self.cpus_per_worker > 0, "cpus_per_worker",
              self.cpus_per_worker, "must be positive")
        check(self.shuffle_buffer is None or self.shuffle_buffer >= 0, "shuffle_buffer",
              self.shuffle_buffer, "must be >= 0")

    @property
    def warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else self.steps // 20


TRAIN_KEYS = frozenset(f.name for f in dataclasses.fields(TrainConfig))


def resolve_configs(method: str, config_file: str | Path | None = None,
                    overrides: Sequence[str] = (), base: Mapping[str, Any] | None = None
                    ) -> tuple[TrainConfig, Any]:
    """YAML file + ``key=value`` overrides -> (TrainConfig, the method's config).

    ``base`` (a resumed run's stored configs, flat: training keys beside method keys) comes
    first, then the file, then the overrides.

    A key (first dotted part) that names a TrainConfig field goes there, everything else to the
    method (``width=0.5``, ``optim.lr=3e-4``, ``frontend.n_mels=128``); ``batch_size`` is the
    global batch of both. Unknown keys raise ConfigError naming the key and both configs."""
    from tympan.methods.registry import get_method

    cls = get_method(method)
    data: dict[str, Any] = dict(base or {})
    if config_file is not None:
        p = Path(config_file)
        if not p.is_file():
            raise ConfigError("--config", str(p), "file not found")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError("--config", str(p), f"invalid YAML: {e}") from None
        if loaded is not None and not isinstance(loaded, Mapping):
            raise ConfigError("--config", str(p), "top level must be a mapping")
        data = _merge(data, loaded or {})
    train_data = {k: v for k, v in data.items() if k in TRAIN_KEYS}
    method_data = {k: v for k, v in data.items() if k not in TRAIN_KEYS}
    train_over, method_over = [], []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, None, "override must look like key=value")
        (train_over if item.split("=", 1)[0].split(".")[0].strip() in TRAIN_KEYS
         else method_over).append(item)
    train = build(TrainConfig, train_data, train_over)
    if train.batch_size is not None:
        method_data["batch_size"] = train.batch_size
    try:
        method_cfg = build(cls.config_cls, method_data, method_over)
    except ConfigError as e:
        if "unknown key" in e.reason:
            raise ConfigError(e.key, e.value, f"{e.reason}; training keys: "
                              f"{', '.join(sorted(TRAIN_KEYS))}") from None
        raise
    return dataclasses.replace(train, batch_size=method_cfg.batch_size), method_cfg


def _merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def parse_workers(text: str | int) -> tuple[int, int]:
    """``"4"`` -> (4, 4); ``"2-8"`` -> (2, 8) (elastic)."""
    s = str(text).strip()
    try:
        lo, _, hi = s.partition("-")
        lo_i, hi_i = int(lo), int(hi or lo)
    except ValueError:
        raise ConfigError("--workers", s, "must be N or MIN-MAX, e.g. 2 or 2-8") from None
    check(1 <= lo_i <= hi_i, "--workers", s, "needs 1 <= MIN <= MAX")
    return lo_i, hi_i


def check_world_sizes(train: TrainConfig, workers: tuple[int, int]) -> None:
    """Every world size the run may have must split the global batch into equal micro-batches
    (Dist.gather needs the same batch on every rank)."""
    bad = [w for w in range(workers[0], workers[1] + 1)
           if train.batch_size % (w * train.grad_accum) != 0]
    if bad:
        need = math.lcm(*range(workers[0], workers[1] + 1)) * train.grad_accum
        raise ConfigError("batch_size", train.batch_size,
                          f"not divisible into {train.grad_accum} micro-batch(es) on "
                          f"{', '.join(map(str, bad))} worker(s) (--workers "
                          f"{workers[0]}-{workers[1]}); use a multiple of {need}")


@dataclass
class RunSpec:
    """Where and how a run executes (the ``tympan pretrain`` options that are not config keys)."""

    method: str
    data: str
    workers: tuple[int, int] = (2, 2)
    gpus_per_worker: float = 0.0
    address: str | None = None          # Ray address; None: RAY_ADDRESS or an embedded cluster
    name: str | None = None             # default: <method>-<UTC time>
    out: str | None = None              # run directory; default: runs/<name>
    storage: str | None = None          # checkpoints; default: <out>/checkpoints
    tracking_uri: str | None = None     # default: MLFLOW_TRACKING_URI or sqlite in <out>
    resume: bool = False

    def __post_init__(self):
        check(self.workers[0] >= 1 and self.workers[0] <= self.workers[1], "--workers",
              self.workers, "needs 1 <= MIN <= MAX")
        check(self.gpus_per_worker >= 0, "--gpus-per-worker", self.gpus_per_worker, "must be >= 0")
        if self.resume:
            check(bool(self.name or self.out), "--resume", True,
                  "needs the --name (or --out) of the run to continue")
        if self.name is None:
            self.name = (Path(self.out).name if self.out else
                         f"{self.method}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
        check(bool(self.name) and "/" not in self.name, "--name", self.name,
              "must be a non-empty name without '/'")
        if self.out is None:
            self.out = os.path.join("runs", self.name)


def lr_factor(step: int, train: TrainConfig) -> float:
    """Multiplier of the base learning rate at optimisation step ``step`` (0-based): linear
    warm-up to 1 over ``warmup`` steps, then half a cosine down to ``min_lr_ratio``."""
    w = train.warmup
    if step < w:
        return (step + 1) / w
    progress = min(1.0, (step - w) / max(1, train.steps - w))
    return train.min_lr_ratio + (1 - train.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def lr_schedule(optimizer, train: TrainConfig):
    """``LambdaLR`` over :func:`lr_factor`. A partial, not an object with state: LambdaLR would
    store that state in the checkpoint and a resumed run given more ``steps`` would get the old
    schedule back; the scheduler's own state (its step count) is all a checkpoint needs."""
    import functools

    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(lr_factor, train=train))


# ---- resources ----------------------------------------------------------------------------------


def worker_resources(max_workers: int, gpus_per_worker: float, cluster_cpus: float,
                     cpus_per_worker: float | None = None) -> dict[str, float]:
    """Ray resources of one training worker, leaving CPUs to the data pipeline.

    CPU workers take at most one CPU and at most a quarter of the cluster's CPUs per worker
    pair: 2 workers on a 2-core machine take 0.5 CPU each and leave one core to Ray Data. A GPU
    worker takes its GPU(s) and one CPU; the rest (``data_cpus_per_gpu`` per GPU worker,
    checked by :func:`check_data_cpus`) feeds it. ``cpus_per_worker`` overrides the CPU share."""
    if gpus_per_worker > 0:
        return {"CPU": cpus_per_worker or 1.0, "GPU": gpus_per_worker}
    if cpus_per_worker:
        return {"CPU": cpus_per_worker}
    share = cluster_cpus / (2.0 * max_workers)
    cpu = 1.0 if share >= 1.0 else max(0.25, math.floor(share * 4) / 4)
    return {"CPU": cpu}


def check_data_cpus(workers: int, res: Mapping[str, float], cluster_cpus: float,
                    data_cpus_per_gpu: float) -> str | None:
    """A warning when the cluster leaves fewer data CPUs than asked beside the GPU workers."""
    if res.get("GPU", 0) <= 0:
        return None
    left = cluster_cpus - workers * res["CPU"]
    if left < workers * data_cpus_per_gpu:
        return (f"{workers} GPU worker(s) leave {left:g} CPUs to the data pipeline, fewer than "
                f"data_cpus_per_gpu={data_cpus_per_gpu:g} each: the GPUs may wait for data")
    return None


# ---- the training loop (runs in every Ray Train worker) -------------------------------------


class Objective(nn.Module):
    """The method's loss as ``forward``: DDP arms its gradient hooks in ``forward``, so the loss
    must be computed through it (``method.loss`` on the bare module would leave gradients
    unsynchronised across workers)."""

    def __init__(self, method, dist):
        super().__init__()
        self.method = method
        self.dist = dist

    def forward(self, batch):
        return self.method.loss(batch, self.dist)


def _next_batch(state: dict, shard, batch_size: int, iter_kwargs: dict):
    """Next micro-batch from the worker's shard; a stream that ends starts over (replaying it:
    the pipeline plans ``max_units`` units, far beyond a run, so this is a fallback)."""
    for _ in range(2):
        if state.get("it") is None:
            state["it"] = iter(shard.iter_batches(batch_size=batch_size, drop_last=True,
                                                  batch_format="numpy", prefetch_batches=2,
                                                  **iter_kwargs))
        try:
            return next(state["it"])
        except StopIteration:
            state["it"] = None
            state["epochs"] = state.get("epochs", 0) + 1
    raise RuntimeError("the training stream yielded no full batch: fewer examples than one "
                       f"micro-batch ({batch_size})")


def train_func(config: dict) -> None:
    """Ray Train worker loop. ``config``: method, method_cfg, train (dicts), tracking_uri,
    run_id, experiment_uri, threads."""
    import numpy as np
    import ray
    import ray.train
    import ray.train.torch
    import torch.distributed as tdist

    from tympan.distributed import checkpoints as ck
    from tympan.distributed.tracking import MetricLogger
    from tympan.methods.base import config_from_dict, per_worker_batch
    from tympan.methods.dist import Dist
    from tympan.methods.registry import get_method

    torch.set_num_threads(config["threads"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    train = TrainConfig(**config["train"])
    cls = get_method(config["method"])
    method_cfg = config_from_dict(cls.config_cls, config["method_cfg"])
    G = train.batch_size
    per_worker = per_worker_batch(G, world)        # recomputed from the CURRENT world size
    micro = per_worker // train.grad_accum

    torch.manual_seed(train.seed)                  # same initial weights everywhere (DDP also broadcasts)
    method = cls(method_cfg)
    device = ray.train.torch.get_device()
    dist = Dist.from_torch()
    objective = ray.train.torch.prepare_model(Objective(method, dist))
    optimizer = method.configure_optimizer()
    scheduler = lr_schedule(optimizer, train)

    step, history = 0, {"loss_first": None, "samples": 0, "seconds": 0.0, "wait_seconds": 0.0,
                        "restarts": 0}
    restored = ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as d:
            state = ck.read_checkpoint(d)
        method.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        # The optimizer's saved lr is the old schedule's value after the last step; a resumed run
        # may have more steps (a different schedule), so set this step's lr from the current one.
        for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = base * lr_factor(scheduler.last_epoch, train)
        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
        step = int(state["step"])
        history = dict(state["history"])
        history["restarts"] = history.get("restarts", 0) + 1
    streams = ray.get_actor(config["streams"]) if config.get("streams") else None
    stream_start = ray.get(streams.current_start.remote()) if streams else None
    session_first_step = step
    # Per-rank randomness (augmentations inside the loss, dropout), different after a restore.
    torch.manual_seed(train.seed + 1 + rank + 1009 * step)
    np.random.seed((train.seed + 1 + rank + 1009 * step) % 2**32)

    use_bf16 = device.type == "cuda" and train.precision in ("auto", "bf16")
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16 \
        else contextlib.nullcontext
    shard = ray.train.get_dataset_shard("train")
    buf = config.get("shuffle_buffer", 0)
    iter_kwargs = ({"local_shuffle_buffer_size": buf, "local_shuffle_seed": train.seed + rank + 1009 * step}
                   if buf else {})
    it_state: dict = {}
    val_batches = _load_val(train, G, rank, world) if train.val_batches > 0 else []
    logger = MetricLogger(config["tracking_uri"], config["run_id"]) if rank == 0 else None

    def reduce_mean(values: list[float]) -> list[float]:
        if world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        tdist.all_reduce(t)
        return (t / world).tolist()

    def validate() -> float | None:
        if not val_batches:
            return None
        method.eval()
        total = 0.0
        with torch.no_grad(), autocast():
            for b in val_batches:
                loss, _ = method.loss(method.to_tensors(b, device), dist)
                total += float(loss)
        method.train()
        return reduce_mean([total / len(val_batches)])[0]

    window = {"loss": 0.0, "n": 0, "wait": 0.0, "wall": 0.0, "steps": 0}
    recent: list[float] = []
    print(f"[tympan] rank {rank}/{world} pid {os.getpid()} on {ray.util.get_node_ip_address()}: "
          f"per-worker batch {per_worker} ({train.grad_accum} x {micro}), start at step {step}",
          flush=True)
    method.train()
    while step < train.steps:
        t_step = time.perf_counter()
        wait = 0.0
        optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for k in range(train.grad_accum):
            t_wait = time.perf_counter()
            batch = _next_batch(it_state, shard, micro, iter_kwargs)
            wait += time.perf_counter() - t_wait
            tensors = method.to_tensors(batch, device)
            sync = (objective.no_sync() if world > 1 and k < train.grad_accum - 1
                    else contextlib.nullcontext())
            with sync, autocast():
                loss, _ = objective(tensors)
            (loss / train.grad_accum).backward()
            loss_sum += float(loss.detach())   # a device sync point, once per micro-batch
        clip = method.cfg.optim.grad_clip
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(method.parameters(), clip)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        step += 1
        wall = time.perf_counter() - t_step
        step_loss = loss_sum / train.grad_accum
        window["loss"] += step_loss
        window["n"] += 1
        window["wait"] += wait
        window["wall"] += wall
        history["samples"] += G
        history["seconds"] += wall
        history["wait_seconds"] += wait

        last = step == train.steps
        do_val = train.val_batches > 0 and ((train.val_every and step % train.val_every == 0) or last)
        do_log = step % train.log_every == 0 or last
        do_ckpt = step % train.checkpoint_every == 0 or last
        metrics: dict[str, float] = {}
        if do_log or do_ckpt:
            loss_mean, wait_frac, wall_mean = reduce_mean(
                [window["loss"] / max(1, window["n"]), window["wait"] / max(window["wall"], 1e-9),
                 window["wall"] / max(1, window["n"])])
            if history["loss_first"] is None:
                history["loss_first"] = loss_mean
            recent = (recent + [loss_mean])[-3:]
            metrics = {"loss": loss_mean, "lr": lr, "samples_per_s": G / max(wall_mean, 1e-9),
                       "data_wait_fraction": wait_frac, "world_size": world,
                       "global_batch": per_worker * world, "per_worker_batch": per_worker,
                       "epoch": it_state.get("epochs", 0), "restarts": history["restarts"]}
            window = {"loss": 0.0, "n": 0, "wait": 0.0, "wall": 0.0, "steps": 0}
        if do_val:
            metrics["val_loss"] = validate()
        if rank == 0 and metrics:
            logger.log(step, metrics)
            if do_log:
                print(f"[tympan] step {step}/{train.steps} loss {metrics['loss']:.4f} "
                      f"lr {lr:.2e} {metrics['samples_per_s']:.1f} samples/s "
                      f"data wait {metrics['data_wait_fraction']:.0%}", flush=True)
        if do_ckpt:
            examples = int((step - session_first_step) * G)
            position = (ray.get(streams.position_after.remote(examples))
                        if streams is not None and rank == 0 else None)
            data = {"start": stream_start, "examples": examples, "position": position}
            summary = {"step": step, "loss_first": history["loss_first"],
                       "loss_last": float(np.mean(recent)) if recent else metrics.get("loss"),
                       "samples_per_s": history["samples"] / max(history["seconds"], 1e-9),
                       "data_wait_fraction": history["wait_seconds"] / max(history["seconds"], 1e-9),
                       "world_size": world, "restarts": history["restarts"],
                       "data_examples": examples,
                       **({"data_epoch": position["epoch"], "data_offset": position["offset"]}
                          if position else {}),
                       **({"val_loss": metrics["val_loss"]} if metrics.get("val_loss") is not None else {})}
            if rank == 0:
                with tempfile.TemporaryDirectory(prefix="tympan-ckpt-") as d:
                    ck.write_checkpoint(ck.make_checkpoint(
                        method, optimizer, scheduler, step=step, data=data,
                        train=to_dict(train), history=history), d)
                    ray.train.report(summary, checkpoint=ray.train.Checkpoint.from_directory(d),
                                     checkpoint_dir_name=ck.checkpoint_dir_name(step))
                # After report returned the checkpoint is persisted: the next stream may start
                # where it left off.
                ck.write_position(config["experiment_uri"], {"step": step, **data})
                if streams is not None:
                    logger.log(step, {"bad_clips": ray.get(streams.bad_clips.remote())["count"]})
            else:
                ray.train.report(summary, checkpoint=None)


def _load_val(train: TrainConfig, G: int, rank: int, world: int) -> list[dict]:
    """This rank's rows of ``val_batches`` global batches of the held-out dataset (the same
    examples whatever the world size, so validation losses compare across resizes)."""
    import ray.train

    try:
        shard = ray.train.get_dataset_shard("val")
    except KeyError:             # the run has no validation dataset
        return []
    if shard is None:
        return []
    per = G // world
    out = []
    for batch in shard.iter_batches(batch_size=G, drop_last=True, batch_format="numpy"):
        out.append({k: v[rank * per:(rank + 1) * per] for k, v in batch.items()})
        if len(out) == train.val_batches:
            break
    return out


# ---- the driver ---------------------------------------------------------------------------------


class PretrainError(RuntimeError):
    """The run failed after it started (training gave up, or nothing to resume)."""


@ray.remote(num_cpus=0)
class StreamRegistry:
    """The run's training streams, built by the Ray Data pipeline (``build_pipeline``).

    A small actor owned by the driver: Ray Train calls :class:`StreamFactory` on every worker
    group (re)start, which asks this actor for the next stream; it starts at the data position
    of the latest persisted checkpoint (``checkpoints.read_position``), so a replaced worker
    group, and a ``--resume``, continue the data where the checkpoint left it. Because the
    actor (not Ray Train's controller) builds them, every stream's bad-clip ledger lives until
    the driver has read it. Rank 0 asks it for ``position_after`` when checkpointing."""

    def __init__(self, uri: str, method: str, method_cfg: Any, pcfg: Any, experiment_uri: str,
                 val_uri: str | None, val_examples: int):
        from tympan.distributed.pipeline import parse_data_uri

        self.source = parse_data_uri(uri)
        self.val_source = parse_data_uri(val_uri) if val_uri else self.source
        self.method, self.method_cfg, self.pcfg = method, method_cfg, pcfg
        self.exp_uri, self.val_examples = experiment_uri, val_examples
        self.pipes: list = []

    def next_stream(self):
        from tympan.distributed import checkpoints as ck
        from tympan.distributed.pipeline import Position, build_pipeline

        rec = ck.read_position(self.exp_uri)
        start = Position(**rec["position"]) if rec and rec.get("position") else Position()
        p = build_pipeline(self.source, self.method, self.method_cfg, self.pcfg, start=start)
        self.pipes.append(p)
        return p.dataset

    def val_dataset(self):
        """The validation examples: ``val_examples`` from the held-out URI (or, without one,
        from the training source under another seed)."""
        from tympan.distributed.pipeline import build_pipeline

        pcfg = dataclasses.replace(self.pcfg, seed=self.pcfg.seed + 1_000_003, shuffle_buffer=0)
        p = build_pipeline(self.val_source, self.method, self.method_cfg, pcfg, epochs=1)
        self.pipes.append(p)
        return p.dataset.limit(self.val_examples)

    def current_start(self) -> dict:
        return dataclasses.asdict(self.pipes[-1].start) if self.pipes else None

    def position_after(self, examples: int) -> dict:
        # the latest training stream (a validation stream is built before any training one)
        train_pipes = [p for p in self.pipes if p.cfg.seed == self.pcfg.seed]
        return dataclasses.asdict(train_pipes[-1].position_after(examples))

    def slice_stats(self) -> dict:
        """spectra: sources: the slicing counts of every stream, summed ({} otherwise)."""
        out: dict[str, int] = {}
        for p in self.pipes:
            for k, v in p.slice_stats().items():
                out[k] = out.get(k, 0) + v
        return out

    def bad_clips(self) -> dict:
        """Every stream's dropped clips, each (clip, reason, where) once with the number of
        times it was met (once per epoch read, again in a unit replayed after a restart)."""
        found: dict[tuple, dict] = {}
        for p in self.pipes:
            for c in p.bad_clips().clips:
                key = (c.clip_id, c.reason, c.where)
                if key not in found:
                    found[key] = {"clip_id": c.clip_id, "reason": c.reason, "where": c.where,
                                  "encounters": 0}
                found[key]["encounters"] += 1
        by_reason: dict[str, int] = {}
        for c in found.values():
            by_reason[c["reason"]] = by_reason.get(c["reason"], 0) + 1
        return {"count": len(found), "by_reason": dict(sorted(by_reason.items())),
                "clips": list(found.values())}


class StreamFactory:
    """What Ray Train gets as the "train" dataset: called (in its controller) on every worker
    group start; asks the run's :class:`StreamRegistry` for the next stream."""

    def __init__(self, registry_name: str):
        self.registry_name = registry_name

    def __call__(self):
        import ray

        return ray.get(ray.get_actor(self.registry_name).next_stream.remote())


class DataFeed:
    """What the trainer takes from the data layer: :class:`PipelineFeed` (the Ray Data
    pipeline) in production. ``setup`` runs once Ray is up and returns the trainer's
    ``datasets`` (a factory for "train", called on every worker-group start, and "val");
    ``registry_name`` is the :class:`StreamRegistry` the workers ask for data positions."""

    registry_name: str | None = None

    def setup(self, experiment_uri: str) -> dict[str, Any]:
        raise NotImplementedError

    def bad_clips(self) -> dict:
        return {"count": 0, "by_reason": {}, "clips": []}

    def slice_stats(self) -> dict:
        return {}

    def shutdown(self) -> None:
        pass


_START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
_USER_START_TIMEOUT = os.environ.get(_START_TIMEOUT_ENV)     # read once, before tympan sets it


def _head_node_id() -> str:
    """The head node's id (this process's node when no head is marked, e.g. a cluster made
    only of nodes that joined one another)."""
    for n in ray.nodes():
        if n.get("Alive") and "node:__internal_head__" in n.get("Resources", {}):
            return n["NodeID"]
    return ray.get_runtime_context().get_node_id()


class PipelineFeed(DataFeed):
    """The Ray Data pipeline (``tympan.distributed.pipeline``) behind a :class:`StreamRegistry`."""

    def __init__(self, uri: str, method: str, method_cfg: Any, train: TrainConfig,
                 max_workers: int = 1):
        from tympan.distributed.pipeline import PipelineConfig, parse_data_uri

        parse_data_uri(uri)                       # a bad URI is refused before Ray starts
        if train.val_data:
            parse_data_uri(train.val_data)
        self.uri, self.method, self.method_cfg, self.train = uri, method, method_cfg, train
        micro = max(1, train.batch_size // (max_workers * train.grad_accum))
        kw = {} if train.shuffle_buffer is None else {"shuffle_buffer": train.shuffle_buffer}
        kw.update(slice_width=train.slice_width, gap_policy=train.gap_policy,
                  fill_max_frames=train.fill_max_frames)
        # Every unit (a shard, a group of mixed clips) yields at least one example, so a run
        # never needs more units than the examples it reads; planning 10,000 read tasks for a
        # 40-example smoke run costs more than the run.
        units = min(10_000, max(16, 2 * train.steps * train.batch_size))
        self.pcfg = PipelineConfig(batch_size=micro, seed=train.seed, max_units=units, **kw)
        self.registry = None

    @property
    def shuffle_buffer(self) -> int:
        return self.pcfg.shuffle_buffer

    def setup(self, experiment_uri: str) -> dict[str, Any]:
        import uuid

        import ray

        self.registry_name = f"tympan-streams-{uuid.uuid4().hex[:12]}"
        n_val = self.train.val_batches * self.train.batch_size
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # On the head node (where a submitted job's driver runs): the registry and the pipeline
        # ledger it starts beside it must outlive any node the training workers may lose.
        pin = NodeAffinitySchedulingStrategy(_head_node_id(), soft=False)
        self.registry = StreamRegistry.options(name=self.registry_name, scheduling_strategy=pin).remote(
            self.uri, self.method, self.method_cfg, self.pcfg, experiment_uri, self.train.val_data,
            max(n_val, 1))
        out: dict[str, Any] = {"train": StreamFactory(self.registry_name)}
        if n_val:
            out["val"] = ray.get(self.registry.val_dataset.remote())
        return out

    def bad_clips(self) -> dict:
        import ray

        return ray.get(self.registry.bad_clips.remote())

    def slice_stats(self) -> dict:
        import ray

        return ray.get(self.registry.slice_stats.remote())

    def shutdown(self) -> None:
        import ray

        if self.registry is not None:
            ray.kill(self.registry)
            self.registry = None


def _experiment_uri(storage: str, name: str) -> str:
    return f"{storage.rstrip('/')}/{name}"


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


RUN_FILE = "run.json"


def load_run_record(out: str | Path) -> dict | None:
    """The ``run.json`` a previous ``tympan pretrain`` wrote in its run directory."""
    p = Path(out) / RUN_FILE
    return json.loads(p.read_text()) if p.is_file() else None


def _init_ray(address: str | None):
    """``--address``, else RAY_ADDRESS (set under ``ray job submit``), else an embedded local
    cluster: never an unrelated cluster that happens to run on this machine."""
    from tympan.distributed.cluster import ensure_ray

    return ensure_ray(address)


def _release_placement_groups() -> None:
    """Remove placement groups this driver's job still holds once ``fit`` has returned.

    Ray Train's controller removes its worker group's placement group, and a cleaner actor
    removes it if the controller dies; that cleaner fails when several Ray clusters run on one
    host (its state-API lookup cannot choose one), and a leaked group keeps its CPUs reserved,
    which starves the data pipeline of the next run in the same process. A placement group id
    ends with its job id, so only this job's groups are touched."""
    from ray.util.placement_group import (PlacementGroup, get_current_placement_group,
                                          remove_placement_group)

    if get_current_placement_group() is not None:
        # Inside a Ray Tune trial (an actor in Tune's placement group): the job's groups are
        # this trial's own and the other trials'; removing them kills the trials. Train's
        # controller still removes its worker group.
        return
    job = ray.get_runtime_context().get_job_id()
    for pg_id, info in ray.util.placement_group_table().items():
        if pg_id.endswith(job) and info.get("state") in ("CREATED", "PENDING", "RESCHEDULING"):
            try:
                remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id))))
            except Exception:     # already gone
                pass


def pretrain(spec: RunSpec, train: TrainConfig, method_cfg: Any, feed: DataFeed | None = None,
             *, verbose: bool = True, callbacks: Sequence[Any] = (),
             tags: Mapping[str, str] | None = None) -> dict:
    """Run (or resume) one pretraining; returns the summary written to ``summary.json``.

    ``callbacks``: extra Ray Train user callbacks (a Tune trial passes ``TuneReportCallback``);
    ``tags``: extra MLflow tags of the run (a Tune trial nests it under its study run with
    ``mlflow.parentRunId``)."""
    from tympan.distributed import checkpoints as ck
    from tympan.distributed.tracking import Tracker, ray_tags, redact, resolve_tracking_uri

    # 1. everything that can be refused without Ray
    check_world_sizes(train, spec.workers)
    out = Path(spec.out).resolve()
    storage = spec.storage or str(out / "checkpoints")
    if "://" not in storage:
        storage = os.path.abspath(storage)
    exp_uri = _experiment_uri(storage, spec.name)
    existing = ck.list_checkpoints(exp_uri)
    record = load_run_record(out)
    if spec.resume and not existing:
        raise ConfigError("--resume", spec.name, f"no checkpoint to resume under {redact(exp_uri)}")
    if not spec.resume and (existing or record is not None):
        raise ConfigError("--name", spec.name, f"a run of this name exists ({out}); pass --resume "
                          "to continue it or choose another --name / --out")
    if feed is None:
        feed = PipelineFeed(spec.data, spec.method, method_cfg, train, spec.workers[1])  # parses the URI
    tracking_uri = resolve_tracking_uri(spec.tracking_uri, out)
    out.mkdir(parents=True, exist_ok=True)

    # 2. Ray, MLflow
    ray = _init_ray(spec.address)
    from ray.train import (CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig,
                           TrainingFailedError)
    from ray.train.torch import TorchTrainer

    tracker = Tracker(tracking_uri)
    run_id = tracker.start(spec.name, artifact_dir=out / "mlartifacts",
                           run_id=(record or {}).get("mlflow_run_id") if spec.resume else None)
    config_record = {"method": spec.method, "data": redact(spec.data),
                     "workers": f"{spec.workers[0]}-{spec.workers[1]}",
                     "gpus_per_worker": spec.gpus_per_worker, "train": to_dict(train),
                     "method_cfg": to_dict(method_cfg)}
    tracker.log_params(config_record)
    cluster_cpus = float(ray.cluster_resources().get("CPU", 1.0))
    res = worker_resources(spec.workers[1], spec.gpus_per_worker, cluster_cpus, train.cpus_per_worker)
    tracker.set_tags({**ray_tags(), "tympan.method": spec.method, "tympan.name": spec.name,
                      "tympan.storage": redact(exp_uri), "tympan.resumed": str(spec.resume).lower(),
                      "tympan.worker_resources": json.dumps(res), **dict(tags or {})})
    _atomic_write_text(out / RUN_FILE, json.dumps(
        {**config_record, "name": spec.name, "storage": storage, "mlflow_run_id": run_id,
         "tracking_uri": redact(tracking_uri)}, indent=2))
    (out / "config.yaml").write_text(redact(yaml.safe_dump(config_record, sort_keys=False)))
    warning = check_data_cpus(spec.workers[1], res, cluster_cpus, train.data_cpus_per_gpu)
    if warning:
        print(f"tympan pretrain: warning: {warning}", file=sys.stderr)

    # Ray Data's progress bars (one set per worker and dataset) drown the training log; the
    # DataContext is captured by the trainer below and propagated to the workers.
    from ray.data import DataContext
    DataContext.get_current().enable_progress_bars = False

    datasets = feed.setup(exp_uri)
    # Ray Train gives a worker group 60 s to start; workers that import torch on a busy node
    # (or pull an image) can take longer, and a start timeout costs a restart. An elastic run
    # gets less: right after a node dies the cluster's resource view still counts it for a few
    # seconds, the controller asks for the old group size, and only the start timeout makes it
    # settle for the workers that exist (measured: a node loss cost the full 600 s). The
    # driver's value is propagated to the controller; a user's own setting wins.
    os.environ[_START_TIMEOUT_ENV] = _USER_START_TIMEOUT or ("600" if spec.workers[0] == spec.workers[1]
                                                             else "120")
    loop_config = {"method": spec.method, "method_cfg": to_dict(method_cfg), "train": to_dict(train),
                   "tracking_uri": tracking_uri, "run_id": run_id, "experiment_uri": exp_uri,
                   "threads": max(1, int(res["CPU"])), "streams": feed.registry_name,
                   "shuffle_buffer": getattr(feed, "shuffle_buffer", 0)}
    num_workers = spec.workers[0] if spec.workers[0] == spec.workers[1] else tuple(spec.workers)
    trainer = TorchTrainer(
        train_func, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=spec.gpus_per_worker > 0,
                                     resources_per_worker=res),
        run_config=RunConfig(name=spec.name, storage_path=storage, callbacks=list(callbacks),
                             failure_config=FailureConfig(max_failures=train.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=train.num_to_keep)),
        datasets=datasets, dataset_config=DataConfig(datasets_to_split=["train"]))
    t0 = time.perf_counter()
    try:
        result = trainer.fit()
    except (TrainingFailedError, KeyboardInterrupt) as e:
        tracker.end("FAILED" if not isinstance(e, KeyboardInterrupt) else "KILLED")
        feed.shutdown()
        _release_placement_groups()
        raise PretrainError(f"pretraining {spec.name} failed: {e}; the latest checkpoint is kept "
                            f"under {redact(exp_uri)} (rerun with --resume --name {spec.name})") from e

    # 3. summary, artifacts
    m = dict(result.metrics or {})
    bad = feed.bad_clips()
    slices = feed.slice_stats()
    feed.shutdown()
    _release_placement_groups()
    ckpt_uri = f"{exp_uri}/{ck.checkpoint_dir_name(int(m.get('step', train.steps)))}/{ck.CHECKPOINT_FILE}"
    summary = {"method": spec.method, "name": spec.name, "steps": int(m.get("step", train.steps)),
               "workers": int(m.get("world_size", spec.workers[1])),
               "global_batch": train.batch_size,
               "bad_clips": int(bad["count"]), "bad_clips_by_reason": bad["by_reason"],
               "loss_first": m.get("loss_first"), "loss_last": m.get("loss_last"),
               "val_loss": m.get("val_loss"), "samples_per_s": m.get("samples_per_s"),
               "data_wait_fraction": m.get("data_wait_fraction"), "restarts": m.get("restarts", 0),
               "checkpoint": ckpt_uri, "mlflow_run_id": run_id, "tracking_uri": redact(tracking_uri),
               "run_dir": str(out), "seconds": round(time.perf_counter() - t0, 1)}
    if slices:        # sensor spectra: what the gap policy kept, rejected, filled
        summary["slices"] = slices
        tracker.log_metrics(summary["steps"], {f"slices_{k}": v for k, v in slices.items()})
    _atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    (out / "bad_clips.json").write_text(redact(json.dumps(bad, indent=2)))
    tracker.log_metrics(summary["steps"], {"bad_clips": summary["bad_clips"]})
    for name in ("config.yaml", "summary.json", "bad_clips.json"):
        tracker.log_file(str(out / name))
    tracker.log_file(ckpt_uri, "checkpoint")
    tracker.end("FINISHED")
    if verbose:
        print(format_summary(summary, tracking_uri))
    return summary


def format_summary(s: dict, tracking_uri: str) -> str:
    from tympan.distributed.tracking import redact

    def f(v, fmt):
        return format(v, fmt) if isinstance(v, (int, float)) else "n/a"

    lines = [f"tympan pretrain: {s['method']} ({s['name']}), {s['steps']} steps on {s['workers']} "
             f"worker(s), global batch {s['global_batch']}",
             f"  loss {f(s['loss_first'], '.4f')} -> {f(s['loss_last'], '.4f')}"
             + (f", val loss {f(s['val_loss'], '.4f')}" if s.get("val_loss") is not None else "")
             + f"; {f(s['samples_per_s'], '.1f')} samples/s; data wait "
             f"{f(s['data_wait_fraction'], '.0%')}; bad clips {s['bad_clips']}; restarts {s['restarts']}",
             f"  checkpoint: {redact(s['checkpoint'])}",
             f"  summary:    {s['run_dir']}/summary.json",
             f"  MLflow run {s['mlflow_run_id']}; open it with:",
             f"    mlflow ui --backend-store-uri {redact(tracking_uri)}"]
    return "\n".join(lines)
