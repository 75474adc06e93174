"""The training stream: a data source + a method -> a Ray Dataset of the method's examples.

::

    p = build_pipeline("data/shards", "cola", cfg=PipelineConfig(batch_size=64, seed=0))
    for batch in p.iter_batches(): ...                 # standalone: dicts of numpy arrays
    TorchTrainer(..., datasets={"train": p.dataset}, dataset_config=p.data_config())
    # in each worker: ray.train.get_dataset_shard("train").iter_batches(**p.iter_kwargs())

One stage does the work (Ray Data read tasks, one per *unit*: a shard, or a group of live-mixed
or mp4-decoded clips; see :mod:`tympan.distributed.sources`): read the unit's records ->
decode each clip (FLAC, JPEG frames only for audio-visual methods) -> the method's
``sample_views`` on groups of ``group_size`` clips -> fixed-shape numpy arrays, one row per
example. Read and decode, front end and view sampling live in one task per shard so no clip
crosses a process boundary before it is small (a crop, not 10 s of audio), and no task waits
for another stage; the local shuffle buffer is applied where the batches are read.

Bad clips never stop a run and are never silent: every record is decoded inside its own
``try``; a corrupt FLAC, a cut member or tar stream, a record without its frames (AV methods)
or transcript (audio-text), an empty clip is dropped and reported (clip id, reason, shard) to a
small Ray actor (:mod:`tympan.distributed.ledger`), with the number of examples each unit
produced.
:meth:`Pipeline.bad_clips` reads it; nothing fails as a whole block.

Determinism: unit ``k`` (epoch ``k // units_per_epoch``) is a pure function of (source, seed,
k); its clips are sampled with ``default_rng([seed, k, ...])``; blocks come out in unit order
(``preserve_order``) and the shuffle buffer is seeded. Same seed -> same batches at one worker.

Sensor spectra (``spectra:DIR``): a unit is a shard of sensor records; each record is cut into
slices of ``slice_width`` frames under ``gap_policy`` (:mod:`tympan.datasets.slices`: reject /
split / fill, never a slice across a discontinuity), the method's sampler draws its views
inside each slice (:func:`tympan.methods.base.spectral_views`), every batch gains
``frame_times`` [B, slice_width] (epoch s), and the unit's slicing counts go to the ledger
(:meth:`Pipeline.slice_stats`).

Front end placement (``PipelineConfig.frontend``): ``"cpu"`` ships features; ``"device"``
ships the waveform crops the features are made of (same keys, ``[..., n]`` instead of
``[..., T, F]``) and :attr:`Pipeline.device_frontend` (a torch module, move it to the
training device) turns a batch of tensors into the same features there.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal

import numpy as np
import ray
import torch
from ray.data import Datasource, ReadTask
from ray.data.block import BlockAccessor, BlockMetadata
from torch import Tensor, nn

from tympan.config import ConfigError, check
from tympan.datasets.clip import Clip
from tympan.datasets.frontend import Frontend, deferred_frontend
from tympan.distributed.cluster import ensure_ray
from tympan.distributed.ledger import BadClip, session_ledger
from tympan.distributed.sources import (AVPlan, AVSource, Bad, DataSource, MixerPlan, MixerSource,
                                        Plan, ShardPlan, ShardSource, SpectraPlan, SpectraSource,
                                        Tally, parse_data_uri)
from tympan.methods.base import spectral_views
from tympan.methods.registry import METHODS, get_method

__all__ = ["PipelineConfig", "Position", "BadClip", "BadClips", "Pipeline", "build_pipeline",
           "parse_data_uri", "DataSource", "DeviceFrontend", "FRONTEND_KEYS"]

# Batch keys each method's front end produces: shipped as waveform crops with frontend="device".
FRONTEND_KEYS: dict[str, tuple[str, ...]] = {
    "audio2vec-cbow": ("context", "target"),
    "audio2vec-skipgram": ("context", "target"),
    "temporal-gap": ("first", "second"),
    "triplet": ("anchor", "positive"),
    "cola": ("anchor", "positive"),
    "l3": ("audio",),
    "soundnet": (),                       # the student reads the waveform itself
    "audio-word2vec": ("mfcc",),
    "audio-text": ("audio",),
}
# Audio Word2Vec zeroes padding frames after its front end, so the device batch takes the
# front end's input (the zero-padded crops) and DeviceFrontend re-applies the mask by length.
_FROM_FRONTEND_INPUT = {"audio-word2vec": "mfcc"}
_NEEDS_FRAMES = {"l3", "soundnet"}
_SPECTRAL_METHODS = {"audio2vec-cbow", "audio2vec-skipgram", "temporal-gap", "triplet", "cola"}
_NEEDS_TRANSCRIPT = {"audio-text"}
_MIN_GROUP = {"l3": 2}                    # mismatched frames come from another clip of the group


@dataclass(frozen=True)
class PipelineConfig:
    batch_size: int                       # rows per consumer batch (the per-worker batch)
    seed: int = 0
    shuffle_buffer: int = 1024            # local shuffle buffer, in examples (0 = off)
    frontend: Literal["cpu", "device"] = "cpu"
    group_size: int = 32                  # clips per sample_views call (in-group negatives)
    clips_per_unit: int = 32              # live mixer / offline-av clips per unit of work
    mixer_epoch_clips: int = 4096         # live mixer: clips per "epoch" (Position offsets)
    av_frames_per_second: float = 1.0     # offline-av: frames decoded per second of video
    max_units: int = 10_000               # epochs=None: units planned (the stream ends there)
    cpus_per_task: float = 1.0
    keep_ids: bool = False                # add a "clip_id" column (embedding, tests)
    drop_last: bool = True                # fixed batch shapes for training
    # spectra: sources (sensor records): samples of slice_width frames, never across a gap
    slice_width: int = 80                 # frames per slice (80 x 125 ms = 10 s)
    gap_policy: Literal["reject", "split", "fill"] = "reject"
    fill_max_frames: int = 8              # fill: longest gap interpolated (8 frames = 1 s)

    def __post_init__(self):
        for key in ("batch_size", "group_size", "clips_per_unit", "mixer_epoch_clips", "max_units"):
            check(getattr(self, key) >= 1, key, getattr(self, key), "must be >= 1")
        check(self.shuffle_buffer >= 0, "shuffle_buffer", self.shuffle_buffer, "must be >= 0")
        check(self.frontend in ("cpu", "device"), "frontend", self.frontend,
              "must be 'cpu' (features made in the pipeline) or 'device' (by the model)")
        check(self.av_frames_per_second > 0, "av_frames_per_second", self.av_frames_per_second,
              "must be positive")
        check(self.cpus_per_task > 0, "cpus_per_task", self.cpus_per_task, "must be positive")
        check(self.slice_width >= 1, "slice_width", self.slice_width, "must be >= 1")
        check(self.gap_policy in ("reject", "split", "fill"), "gap_policy", self.gap_policy,
              "must be reject, split or fill")
        check(self.fill_max_frames >= 0, "fill_max_frames", self.fill_max_frames, "must be >= 0")


@dataclass(frozen=True)
class Position:
    """Where a stream starts; stored in checkpoints by the trainer."""
    epoch: int = 0
    offset: int = 0       # shards (shard sources) or clips (live mixer, offline-av) consumed

    def __post_init__(self):
        check(self.epoch >= 0, "epoch", self.epoch, "must be >= 0")
        check(self.offset >= 0, "offset", self.offset, "must be >= 0")


@dataclass(frozen=True)
class BadClips:
    clips: tuple[BadClip, ...] = ()

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.clips:
            out[c.reason] = out.get(c.reason, 0) + 1
        return dict(sorted(out.items()))

    @property
    def total(self) -> int:
        return len(self.clips)

    def ids(self) -> set[str]:
        return {c.clip_id for c in self.clips}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``{"total", "counts", "clips": [{clip_id, reason, where, epoch}]}``."""
        return {"total": self.total, "counts": self.counts,
                "clips": [dataclasses.asdict(c) for c in self.clips]}


class DeviceFrontend(nn.Module):
    """Batch of tensors from a ``frontend="device"`` pipeline -> the batch a ``"cpu"`` pipeline
    would have shipped (features computed where this module lives). Identity otherwise."""

    def __init__(self, method: str, method_cfg: Any, placement: str = "device"):
        super().__init__()
        self.method = method
        self.keys = FRONTEND_KEYS[method] if placement == "device" else ()
        self.frontend = Frontend(method_cfg.frontend) if self.keys else None

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        if not self.keys:
            return batch
        out = dict(batch)
        for k in self.keys:
            out[k] = self.frontend(batch[k].float())
        if self.method == "audio-word2vec":          # padding frames are zero (its contract)
            t = torch.arange(out["mfcc"].shape[-2], device=out["mfcc"].device)
            pad = t[None, :] >= batch["lengths"].to(t.device)[:, None]
            out["mfcc"] = out["mfcc"].masked_fill(pad[..., None], 0.0)
        return out


# ---- the one stage: unit -> decoded clips -> views ------------------------------------------------
@dataclass(frozen=True)
class _Stage:
    pipeline: str                         # id in the session ledger
    method: str
    method_cfg: Any
    cfg: PipelineConfig
    units_per_epoch: int


_PLANS: dict[str, Plan] = {}


def _plan(key: str, ref) -> Plan:
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) > 8:
            _PLANS.clear()
        plan = _PLANS[key] = ray.get(ref[0])
    return plan


def _check_clip(method: str, clip: Clip) -> str | None:
    if method in _NEEDS_FRAMES and (clip.frames is None or len(clip.frames) == 0):
        return "no_frames"
    if method in _NEEDS_TRANSCRIPT:
        t = clip.meta.get("transcript")
        if not isinstance(t, str) or not t.strip():
            return "no_transcript"
    return None


def _sample(stage: _Stage, clips: list[Clip], rng: np.random.Generator) -> dict[str, np.ndarray]:
    sampler = get_method(stage.method).sample_views
    if clips[0].features is not None:       # sensor slices: views drawn inside their frames
        with spectral_views(stage.method_cfg.frontend, clips) as proxies:
            out = sampler(stage.method_cfg, proxies, rng)
        out["frame_times"] = np.stack([c.feature_times for c in clips])     # [B, width] epoch s
        if stage.cfg.keep_ids:
            out["clip_id"] = np.asarray([c.clip_id for c in clips])
        return out
    if stage.cfg.frontend == "cpu":
        out = sampler(stage.method_cfg, clips, rng)
    else:
        with deferred_frontend() as calls:
            out = sampler(stage.method_cfg, clips, rng)
        key = _FROM_FRONTEND_INPUT.get(stage.method)
        if key is not None:
            out[key] = np.ascontiguousarray(calls[0][1], dtype=np.float32)
    if stage.cfg.keep_ids:
        out["clip_id"] = np.asarray([c.clip_id for c in clips])
    return out


def _run_unit(stage: _Stage, plan_key: str, plan_ref, ledger, unit: int) -> Iterator[Any]:
    torch.set_num_threads(1)     # one core per data task: BLAS/FFT threads would oversubscribe
    plan = _plan(plan_key, plan_ref)
    rng = np.random.default_rng([stage.cfg.seed, unit, 0x7E5])
    bad: list[Bad] = []
    counts: dict[str, int] = {}
    examples = 0
    group, min_group = stage.cfg.group_size, _MIN_GROUP.get(stage.method, 1)
    good: list[Clip] = []
    seconds = [0.0, 0.0]          # read + decode, views (front end + sampling)

    def emit(clips: list[Clip]):
        nonlocal examples
        t0 = time.perf_counter()
        try:
            out = _sample(stage, clips, rng)
        except Exception as e:     # a sampler error loses these clips, never silently
            why = f"{plan.where(unit)}: {type(e).__name__}: {e}"
            bad.extend(Bad(c.clip_id, "sampler_error", why) for c in clips)
            return None
        finally:
            seconds[1] += time.perf_counter() - t0
        examples += len(clips)
        return BlockAccessor.batch_to_block(out)

    items = iter(plan.clips(unit, frames=stage.method in _NEEDS_FRAMES))
    while True:
        t0 = time.perf_counter()
        item = next(items, None)
        seconds[0] += time.perf_counter() - t0
        if item is None:
            break
        if isinstance(item, Bad):
            bad.append(item)
            continue
        if isinstance(item, Tally):
            for k, v in item.counts.items():
                counts[k] = counts.get(k, 0) + v
            continue
        reason = _check_clip(stage.method, item)
        if reason is not None:
            bad.append(Bad(item.clip_id, reason, plan.where(unit)))
            continue
        good.append(item)
        if len(good) == 2 * group:       # keep one group back so the tail is never too small
            block = emit(good[:group])
            good = good[group:]
            if block is not None:
                yield block
    last = None
    if len(good) >= min_group:
        last = emit(good)
    else:
        bad.extend(Bad(c.clip_id, "unpaired", plan.where(unit)) for c in good)
    # Reported before the unit's last rows leave: once a consumer has read every example of a
    # unit, its bad clips and example count are in the ledger.
    ray.get(ledger.report.remote(stage.pipeline, unit, unit // stage.units_per_epoch, examples,
                                 [tuple(b) for b in bad], tuple(seconds), counts))
    if last is not None:
        yield last


class _ClipViewsDatasource(Datasource):
    """One read task per unit; the task is the whole stage (see module docstring)."""

    def __init__(self, fn, units: range):
        self._fn, self._units = fn, units

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context=None) -> list[ReadTask]:
        meta = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
        return [ReadTask(functools.partial(self._fn, k), meta) for k in self._units]


# ---- the pipeline -------------------------------------------------------------------------------
@dataclass
class Pipeline:
    dataset: ray.data.Dataset
    method: str
    method_cfg: Any
    cfg: PipelineConfig
    start: Position
    units: range                          # unit ids this stream covers, in order
    plan: Plan
    device_frontend: DeviceFrontend
    _id: str = ""
    _ledger: Any = field(repr=False, default=None)

    def iter_kwargs(self) -> dict[str, Any]:
        """Arguments for ``iter_batches`` on this dataset or a Train worker's shard of it."""
        buf = self.cfg.shuffle_buffer
        return {"batch_size": self.cfg.batch_size, "batch_format": "numpy",
                "drop_last": self.cfg.drop_last,
                "local_shuffle_buffer_size": buf if buf > 0 else None,
                "local_shuffle_seed": self.cfg.seed if buf > 0 else None}

    def iter_batches(self) -> Iterator[dict[str, np.ndarray]]:
        """The stream in one process (benchmarks, tests): fixed-shape numpy batch dicts."""
        yield from self.dataset.iter_batches(**self.iter_kwargs())

    def data_config(self):
        """``ray.train.DataConfig`` that streaming-splits only this dataset ("train")."""
        from ray.train import DataConfig
        return DataConfig(datasets_to_split=["train"])

    def bad_clips(self) -> BadClips:
        """Every clip dropped so far (all epochs), in unit order."""
        clips, _ = ray.get(self._ledger.snapshot.remote(self._id))
        return BadClips(tuple(clips))

    def slice_stats(self) -> dict[str, int]:
        """``spectra:`` sources: the slicing counts summed over the units finished so far
        (records, frames, slices, rejected, discontinuities, restarts, filled_gaps,
        filled_frames, tail_frames; see :mod:`tympan.datasets.slices`); {} otherwise."""
        return ray.get(self._ledger.counts.remote(self._id))

    def stage_seconds(self) -> dict[str, float]:
        """Summed over the units finished so far: ``units``, ``examples``, ``read_decode_s``
        (reading and decoding clips) and ``views_s`` (front end + view sampling), task seconds."""
        return ray.get(self._ledger.stage_seconds.remote(self._id))

    def _position_of(self, unit: int) -> Position:
        epoch, slot = divmod(unit, self.plan.units_per_epoch)
        per = getattr(self.plan, "clips_per_unit", None)
        return Position(epoch, slot * per if per else slot)

    def position_after(self, examples_consumed: int) -> Position:
        """Where to resume after ``examples_consumed`` examples (all workers together).

        Resumes at the first unit not known to be fully consumed: the units, in stream order,
        whose examples add up to at most ``examples_consumed - shuffle_buffer``. It never skips
        an example; it may replay up to one unit plus the shuffle buffer (with several workers,
        units are split among them in order, so the same bound holds approximately)."""
        _, counts = ray.get(self._ledger.snapshot.remote(self._id))
        budget = examples_consumed - self.cfg.shuffle_buffer
        unit = self.units.start
        for u in self.units:
            n = counts.get(u)
            if n is None or n > budget:
                break
            budget -= n
            unit = u + 1
        return self._position_of(unit)


def _make_plan(source: DataSource, cfg: PipelineConfig) -> Plan:
    if isinstance(source, ShardSource):
        return ShardPlan(source, cfg.seed)
    if isinstance(source, MixerSource):
        return MixerPlan(source, cfg.seed, cfg.clips_per_unit, cfg.mixer_epoch_clips)
    if isinstance(source, AVSource):
        return AVPlan(source, cfg.seed, cfg.clips_per_unit, cfg.av_frames_per_second)
    if isinstance(source, SpectraSource):
        return SpectraPlan(source, cfg.seed, cfg.slice_width, cfg.gap_policy, cfg.fill_max_frames)
    raise ConfigError("data", source, "not a data source (use parse_data_uri)")


def build_pipeline(source: DataSource | str, method: str, method_cfg: Any = None,
                   cfg: PipelineConfig | None = None, *, start: Position = Position(),
                   epochs: int | None = None) -> Pipeline:
    """Plan the stream of ``method``'s examples from ``source``.

    ``cfg`` None: ``PipelineConfig(batch_size=method_cfg.batch_size)``. ``epochs``: the stream
    ends after epoch ``epochs - 1`` (counted from 0, whatever ``start`` is); None: it runs for
    ``cfg.max_units`` units from ``start`` (build a new pipeline from :meth:`position_after`
    to go on). The live mixer's epochs are ``cfg.mixer_epoch_clips`` clips of its endless
    stream. Starts Ray (embedded) if it is not running."""
    if method not in METHODS:
        raise ConfigError("method", method, f"unknown; known: {', '.join(METHODS)}")
    cls = get_method(method)
    method_cfg = method_cfg if method_cfg is not None else cls.config_cls()
    cfg = cfg if cfg is not None else PipelineConfig(batch_size=method_cfg.batch_size)
    if cfg.frontend == "device":
        # These augmentations act on the log-mel after the front end, which "device" defers.
        for key in ("p_shift", "p_gain", "p_eq"):
            if getattr(method_cfg, key, 0) > 0:
                raise ConfigError("frontend", "device", f"{method}'s {key} changes the log-mel "
                                  f"after the front end; use frontend='cpu' or {key}=0")
    if cfg.frontend == "device" and getattr(getattr(method_cfg, "frontend", None), "kind", None) == "third-octave":
        raise ConfigError("frontend", "device", "the third-octave front end is a scipy filter bank "
                          "(CPU) and its views are centred per slice in the sampler "
                          "(tympan.methods.base.centre_levels); use frontend='cpu'")
    if epochs is not None:
        check(epochs >= 1, "epochs", epochs, "must be >= 1 (or None)")
    if isinstance(source, str):
        source = parse_data_uri(source)
    if isinstance(source, SpectraSource):
        fe = getattr(method_cfg, "frontend", None)
        if method not in _SPECTRAL_METHODS:
            raise ConfigError("method", method, "sensor spectra (spectra: data) feed the slice "
                              f"methods only: {', '.join(sorted(_SPECTRAL_METHODS))}")
        if fe is None or fe.kind != "third-octave":
            raise ConfigError("frontend.kind", getattr(fe, "kind", None), "spectra: data are "
                              "third-octave frames; use the method's sensor preset "
                              "(tympan.methods.sensor, `tympan pretrain --preset sensor`)")
        if cfg.frontend != "cpu":
            raise ConfigError("frontend", cfg.frontend, "spectra: frames are already features; "
                              "use frontend='cpu'")
    plan = _make_plan(source, cfg)
    per = getattr(plan, "clips_per_unit", None)
    first = start.epoch * plan.units_per_epoch + (start.offset // per if per else start.offset)
    stop = epochs * plan.units_per_epoch if epochs is not None else first + cfg.max_units
    if stop <= first:
        raise ConfigError("start", start, f"at or past the end of the stream ({epochs} epochs of "
                          f"{plan.units_per_epoch} units)")
    ensure_ray()
    ledger, pid = session_ledger(), uuid.uuid4().hex
    # The plan (all shard URIs) goes to the object store once, not into every read task.
    stage = _Stage(pid, method, method_cfg, cfg, plan.units_per_epoch)
    fn = functools.partial(_run_unit, stage, pid, [ray.put(plan)], ledger)
    units = range(first, stop)
    ds = ray.data.read_datasource(_ClipViewsDatasource(fn, units), override_num_blocks=len(units),
                                  num_cpus=cfg.cpus_per_task)
    ds.context.execution_options.preserve_order = True
    return Pipeline(ds, method, method_cfg, cfg, start, units, plan,
                    DeviceFrontend(method, method_cfg, cfg.frontend), pid, ledger)
