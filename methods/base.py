"""What every self-supervised method shares: config pieces, the train step, checkpoints.

A method is three things (STYLE.md): a **view sampler** (pure numpy: decoded clips + RNG ->
fixed-shape batch dict, run on CPU Ray Data workers), a **model** (``nn.Module``) and a
**loss**. A method file subclasses :class:`Method` and adds only its own parts:

    class COLA(Method):
        name = "cola"
        config_cls = COLAConfig
        @staticmethod
        def sample_views(cfg, clips, rng) -> dict[str, np.ndarray]: ...
        def loss(self, batch, dist) -> tuple[Tensor, dict[str, float]]: ...
        def embed_frames(self, wave) -> tuple[Tensor, Tensor]: ...
        embedding_dim (property)

The batch size of a sampled batch is ``len(clips)``; the training loop hands each worker
``cfg.batch_size // world_size`` clips (see :func:`per_worker_batch`).
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from tympan.config import build, check, to_dict
from tympan.datasets.clip import Clip
from tympan.methods.dist import Dist


@dataclass
class OptimConfig:
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9            # sgd only
    grad_clip: float = 0.0           # max global grad norm; 0 = off

    def __post_init__(self):
        check(self.lr > 0, "lr", self.lr, "must be positive")
        check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be >= 0")
        check(self.grad_clip >= 0, "grad_clip", self.grad_clip, "must be >= 0")


def per_worker_batch(global_batch: int, world_size: int) -> int:
    """Global batch -> per-worker batch; the one place this division happens."""
    check(global_batch % world_size == 0, "batch_size", global_batch,
          f"not divisible by the number of workers ({world_size})")
    return global_batch // world_size


class Method(nn.Module):
    """Base class. Subclasses set ``name``, ``config_cls`` and implement the abstract parts."""

    name: ClassVar[str]
    config_cls: ClassVar[type]

    def __init__(self, cfg: Any = None):
        """``cfg`` None means the method's defaults (``config_cls()``)."""
        super().__init__()
        self.cfg = cfg if cfg is not None else self.config_cls()

    # ---- data side: pure numpy, runs in CPU workers --------------------------------------
    @staticmethod
    def sample_views(cfg: Any, clips: Sequence[Clip], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Decoded clips -> the method's fixed-shape batch (B = len(clips))."""
        raise NotImplementedError

    # ---- model side ----------------------------------------------------------------------
    def loss(self, batch: dict[str, Tensor], dist: Dist) -> tuple[Tensor, dict[str, float]]:
        """Batch of tensors -> (scalar loss, extra float metrics)."""
        raise NotImplementedError

    @property
    def embedding_dim(self) -> int:
        raise NotImplementedError

    def embed_frames(self, wave: Tensor) -> tuple[Tensor, Tensor]:
        """Waveform ``[B, n]`` at ``sample_rate`` -> (embeddings ``[B, T', D]``, centre times
        in ms ``[B, T']``). Used by ``tympan embed``, the linear probes and the HEAR module."""
        raise NotImplementedError

    def embed_clip(self, wave: Tensor) -> Tensor:
        """Waveform ``[B, n]`` -> clip (scene) embedding ``[B, D]``; default: mean over time."""
        emb, _ = self.embed_frames(wave)
        return emb.mean(dim=1)

    @property
    def sample_rate(self) -> int:
        return 16000

    # ---- shared training machinery --------------------------------------------------------
    def configure_optimizer(self) -> torch.optim.Optimizer:
        o: OptimConfig = self.cfg.optim
        params = [p for p in self.parameters() if p.requires_grad]
        if o.name == "adam":
            return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
        if o.name == "adamw":
            return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)

    def to_tensors(self, batch: dict[str, np.ndarray], device: torch.device | str = "cpu") -> dict[str, Tensor]:
        return {k: torch.as_tensor(v).to(device, non_blocking=True) for k, v in batch.items()}

    def train_step(self, batch: dict[str, Tensor], optimizer: torch.optim.Optimizer,
                   dist: Dist = Dist()) -> dict[str, float]:
        """One optimisation step; returns ``{"loss": ..., "grad_norm": ..., **method metrics}``."""
        self.train()
        optimizer.zero_grad(set_to_none=True)
        loss, metrics = self.loss(batch, dist)
        loss.backward()
        clip = self.cfg.optim.grad_clip
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.parameters(), clip if clip > 0 else float("inf"))
        optimizer.step()
        # .item() is a device sync point; one per step is the price of logging the loss.
        return {"loss": float(loss.detach().item()), "grad_norm": float(grad_norm), **metrics}

    # ---- checkpoints ----------------------------------------------------------------------
    def payload(self) -> dict[str, Any]:
        """Everything evaluation needs: name, config, weights (loads with weights_only=True)."""
        return {"method": self.name, "config": to_dict(self.cfg),
                "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}

    def save(self, path: str | Path) -> None:
        torch.save(self.payload(), str(path))


def config_from_dict(cls: type, data: dict[str, Any]):
    """Rebuild a (nested) config dataclass saved with :func:`tympan.config.to_dict`."""
    return build(cls, data)


def replace(cfg: Any, **changes: Any) -> Any:
    return dataclasses.replace(cfg, **changes)


# ---- shared view-sampling and embedding helpers ----------------------------------------------
# Short-clip rule used by every sampler: a clip shorter than the span a view needs is
# loop-padded (repeated from its start) up to that span; an empty clip becomes silence. So
# samplers always return fixed shapes and never crash; the data layer counts/drops clips that
# fail to decode before they get here.

def loop_pad(wave: np.ndarray, n: int) -> np.ndarray:
    """``wave`` [m] -> [max(m, n)], repeating it from its start when m < n (zeros if m == 0)."""
    m = len(wave)
    if m >= n:
        return wave
    if m == 0:
        return np.zeros(n, dtype=np.float32)
    return np.tile(wave, -(-n // m))[:n]


def random_start(rng: np.random.Generator, length: int, span: int) -> int:
    """Uniform start in [0, length - span] (0 when the clip is not longer than the span)."""
    return int(rng.integers(0, length - span + 1)) if length > span else 0


def crop(wave: np.ndarray, start: int, n: int) -> np.ndarray:
    """``n`` samples from ``start`` (loop-padded when the clip runs out)."""
    return loop_pad(wave, start + n)[start:start + n]


def logmel(frontend_cfg: Any, waves: np.ndarray) -> np.ndarray:
    """Front end on stacked crops ``[..., n]`` -> float32 ``[..., T, F]`` (crop first, then the
    front end: cheaper than featurising the whole clip). Inside :func:`spectral_views` the
    crops are frame-row proxies and the rows' precomputed frames come back instead."""
    from tympan.datasets.frontend import frontend_numpy

    table = _FRAME_TABLE.get()
    if table is not None:
        return centre_levels(frontend_cfg, _proxy_frames(frontend_cfg, table, waves))
    waves = np.asarray(waves, dtype=np.float32)
    feats = frontend_numpy(frontend_cfg, waves).astype(np.float32)
    if feats.ndim == waves.ndim:          # deferred to the device: waveforms, not features
        return feats
    return centre_levels(frontend_cfg, feats)


def mix_in(target: np.ndarray, clips: Sequence[Clip], i: int, rng: np.random.Generator,
           gain: float) -> int:
    """Jansen et al.'s "mixing", in place: ``target`` += ``gain`` x a random crop of another
    clip of the batch (not clip ``i``); returns that clip's index. Needs >= 2 clips."""
    j = int(rng.choice([k for k in range(len(clips)) if k != i]))
    n = len(target)
    other = clips[j].audio
    target += gain * crop(other, random_start(rng, len(other), n), n)
    return j


def view_gain_eq(feats: np.ndarray, rng: np.random.Generator, *, p_gain: float, gain_db: float,
                 p_eq: float, eq_db: float) -> None:
    """Per-view level and EQ (BYOL-A style, Niizumi et al. 2021), in place on log-mel views
    ``[B, V, T, F]``: each view independently gets, with probability ``p_gain``, a gain
    uniform in +-``gain_db`` dB (a constant in the log domain) and, with ``p_eq``, a smooth EQ
    curve over frequency (three random cosines, up to ``eq_db`` dB). Two views of one clip
    then no longer share its level and spectral tilt, the clip-constant cues that solve a
    same-clip pretext task without hearing content (docs/results.md section 1).
    Features, not waveforms: the pipeline refuses these with ``frontend="device"``."""
    if p_gain == 0 and p_eq == 0:
        return
    if feats.ndim != 4:
        raise ValueError(f"per-view gain/EQ needs log-mel views [B, V, T, F], got shape "
                         f"{feats.shape} (waveforms from a deferred front end?)")
    b, v, _, f = feats.shape
    db_to_ln = np.log(10.0) / 20.0                   # log-magnitude units per dB
    grid = np.linspace(0.0, np.pi, f)
    for i in range(b):
        for k in range(v):
            shift = np.zeros(f, dtype=np.float32)
            if rng.random() < p_gain:
                shift += rng.uniform(-gain_db, gain_db)
            if rng.random() < p_eq:
                amp = rng.uniform(-1.0, 1.0, 3) * eq_db / 3.0
                phase = rng.uniform(0, 2 * np.pi, 3)
                shift += sum(a * np.cos((j + 1) * grid + ph) for j, (a, ph) in enumerate(zip(amp, phase)))
            feats[i, k] += (shift * db_to_ln).astype(np.float32)[None, :]


# ---- third-octave levels into the encoders ---------------------------------------------------
LEVEL_SCALE_DB = 10.0


def centre_levels(frontend_cfg: Any, feats):
    """Third-octave views ``[..., T, 29]`` (numpy or torch) as every slice method's encoder and
    Audio2Vec's reconstruction target see them: each view minus its own mean level (over its
    T frames and 29 bands), in units of ``LEVEL_SCALE_DB`` = 10 dB. Other front ends (log-mel:
    the papers' inputs) pass unchanged.

    Why per-view mean removal, not a fixed offset and scale such as ``(L - 60) / 20``:
    - third-octave frames are absolute levels (30-100 dB) whose slice mean is nearly constant
      over a clip: raw, it dominates Audio2Vec's MSE target (a 10-s clip's level varies by a
      few dB, clips by tens), and CBoW/SkipGram score well by copying the context's level —
      a clip-constant cue that teaches nothing about the sounds. A fixed offset would fix the
      scale (docs/sensor.md: CBoW's decoder spent its steps learning a ~55 dB offset) but keep
      the cue; removing each view's own mean takes it out of inputs and targets alike.
    - the absolute level is not comparable between the two sources one encoder serves:
      sensors write calibrated dB SPL, audio through the front end reads dB re digital full
      scale + ``ref_db`` (94 dB), shifted by whatever gain the recording had. Centred views
      are the same whatever that offset, so an encoder pretrained on audio applies to
      sensor frames.
    - the scale is fixed (10 dB), not the view's own standard deviation, which would blow up
      the noise of a steady view and erase how loud an event is against its background.
    What it costs: embeddings ignore a view's overall level (band-to-band and frame-to-frame
    differences stay); a task that needs loudness gets it from the third-octave statistics.
    """
    if frontend_cfg is None or frontend_cfg.kind != "third-octave":
        return feats
    if isinstance(feats, Tensor):
        return (feats - feats.mean(dim=(-2, -1), keepdim=True)) / LEVEL_SCALE_DB
    return ((feats - feats.mean(axis=(-2, -1), keepdims=True)) / LEVEL_SCALE_DB).astype(np.float32)


# ---- sensor spectra: views drawn inside slices of precomputed frames -------------------------
# The hook that lets every slice sampler (Audio2Vec, TemporalGap, triplet, COLA) run unchanged
# on sensor data, whose clips carry frames (``Clip.features`` [T, F], 125 ms third-octave
# levels) and no audio. With the third-octave front end a frame is exactly ``hop_length``
# samples (``n_samples(t) = t * hop``), so inside ``spectral_views`` each clip is handed to the
# sampler as a *proxy waveform*: frame j of the group's frame table becomes ``hop_length``
# samples of value j. The sampler's arithmetic (spans, random starts, loop padding, slicing)
# stays in samples, untouched; :func:`logmel` reads the frame rows back (sample 0, hop, 2 hop..
# of each crop, so a view starting inside a frame starts at that frame). Views are therefore
# exact frames drawn inside each clip's continuous slice, never across it. A waveform
# augmentation (noise, mixing) would corrupt the row numbers: that is detected and refused,
# so the methods' sensor presets switch those off (methods/sensor.py).
_FRAME_TABLE: ContextVar[np.ndarray | None] = ContextVar("tympan_frame_table", default=None)


@contextmanager
def spectral_views(frontend_cfg: Any, clips: Sequence[Clip]):
    """``with spectral_views(cfg.frontend, clips) as proxies: batch = sampler(cfg, proxies, rng)``
    for clips carrying precomputed ``features`` [T, F] (see the comment above)."""
    if frontend_cfg.kind != "third-octave":
        raise ValueError(f"clips carry precomputed frames: the method's front end must be "
                         f"kind 'third-octave' (frame = hop_length samples), not {frontend_cfg.kind!r}")
    feats = [np.asarray(c.features, dtype=np.float32) for c in clips]
    for c, f in zip(clips, feats):
        if f.ndim != 2 or f.shape[1] != frontend_cfg.n_features or len(f) == 0:
            raise ValueError(f"clip {c.clip_id!r}: frames {f.shape}, the front end expects "
                             f"[T > 0, {frontend_cfg.n_features}]")
    table = np.concatenate(feats)                                     # [N, F]
    if len(table) >= 2 ** 24:                                         # float32 integers exact
        raise ValueError(f"{len(table)} frames in one sampler call; at most 2**24")
    starts = np.cumsum([0] + [len(f) for f in feats])
    hop = frontend_cfg.hop_length
    proxies = [dataclasses.replace(c, audio=np.repeat(np.arange(a, a + len(f), dtype=np.float32), hop),
                                   features=None)
               for c, a, f in zip(clips, starts, feats)]
    token = _FRAME_TABLE.set(table)
    try:
        yield proxies
    finally:
        _FRAME_TABLE.reset(token)


def _proxy_frames(frontend_cfg: Any, table: np.ndarray, waves: np.ndarray) -> np.ndarray:
    waves = np.asarray(waves)
    rows = waves[..., ::frontend_cfg.hop_length][..., :frontend_cfg.n_frames(waves.shape[-1])]
    if not (np.array_equal(waves, np.rint(waves)) and rows.min() >= 0 and rows.max() < len(table)):
        raise ValueError("a waveform augmentation (noise, mixing) touched views of precomputed "
                         "frames; switch it off for sensor data (the method's sensor preset)")
    return table[rows.astype(np.int64)]                               # [..., T, F]


def window_embed(features: Tensor, encode, win: int, hop: int,
                 frames_per_second: float, frontend: Any = None) -> tuple[Tensor, Tensor]:
    """Sliding-window embeddings for the slice encoders.

    ``features`` [B, T, F] -> windows of ``win`` frames every ``hop`` frames (the features are
    loop-padded along time when T < win) -> ``encode([B*T', win, F]) -> [B*T', D]`` ->
    (embeddings [B, T', D], window-centre times in ms [B, T']). ``frontend``: the method's
    front-end config; third-octave windows are centred as in training (:func:`centre_levels`)."""
    b, t, _ = features.shape
    if t < win:
        reps = -(-win // t)
        features = features.repeat(1, reps, 1)[:, :win]
        t = win
    windows = features.unfold(1, win, hop).transpose(2, 3)     # [B, T', win, F]
    n_win = windows.shape[1]
    windows = centre_levels(frontend, windows)
    emb = encode(windows.reshape(b * n_win, win, -1)).view(b, n_win, -1)
    centres = (torch.arange(n_win, dtype=torch.float32) * hop + (win - 1) / 2) / frames_per_second
    return emb, (centres * 1000.0).unsqueeze(0).expand(b, -1).to(emb.device)
