"""TemporalGap (Tagliasacchi et al., "Pre-training audio representations with
self-supervision", IEEE SPL 2020, arXiv 1905.11796).

"TemporalGap ... estimates the distance between two short audio segments extracted at
random from the same audio clip." Two slices of one clip (the paper draws them from 10-s
clips) go through the shared encoder (``encoders.ConvEncoder2d``); their embeddings are
concatenated and a small head predicts the absolute gap between the slice starts,
normalised by the largest possible gap to [0, 1]. ANCHORS §2: the paper found a
cross-entropy formulation better than plain regression, so ``target="bins"`` (default)
classifies the gap into ``n_bins`` equal bins with softmax cross-entropy;
``target="regression"`` regresses the normalised gap with MSE on a sigmoid output;
``target="soft"`` is a soft-label cross-entropy against the continuous normalised gap (one
sigmoid output, binary cross-entropy with the gap in [0, 1] as the target probability): a
cross-entropy without binning. The paper names a cross-entropy loss but not its target; bins
stay the default, "soft" is the other reading (offered, not measured in the learning test).

Batch contract, float32:
    {"first":  [B, T, F], "second": [B, T, F],   # two slices of one clip, random order
     "gap":    [B]}                                # |start2 - start1| / max_gap, in [0, 1]
with T = slice_frames, F = frontend.n_features.

Sampling: the gap is drawn uniformly in [0, available] (so the bins are balanced on full
clips), then the first start uniformly where both slices fit. ``available`` = the clip's own
length minus one slice, capped at max_gap = clip_s - slice duration; a clip shorter than
``clip_s`` simply cannot produce the largest gaps, and one shorter than a slice is
loop-padded to one slice (gap 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tympan.config import check
from tympan.datasets.clip import Clip
from tympan.datasets.frontend import Frontend, FrontendConfig
from tympan.methods.base import Method, OptimConfig, crop, logmel, window_embed
from tympan.methods.dist import Dist
from tympan.methods.encoders import AUDIO2VEC_CHANNELS, ConvEncoder2d


@dataclass
class TemporalGapConfig:
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3))
    batch_size: int = 256
    slice_frames: int = 96
    clip_s: float = 10.0               # paper: slices from 10-s clips; sets the largest gap
    target: Literal["bins", "regression", "soft"] = "bins"
    n_bins: int = 10
    dim: int = 128
    hidden: int = 128                  # head: concat(2 x dim) -> hidden -> bins / 1
    channels: tuple[int, ...] = AUDIO2VEC_CHANNELS
    width: float = 1.0
    embed_hop_frames: int = 48

    def __post_init__(self):
        check(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        check(self.slice_frames >= 4, "slice_frames", self.slice_frames, "must be >= 4")
        slice_s = self.frontend.n_samples(self.slice_frames) / self.frontend.sample_rate
        check(self.clip_s > slice_s, "clip_s", self.clip_s,
              f"must be longer than one slice ({slice_s:.3f} s) so that a gap exists")
        check(self.n_bins >= 2, "n_bins", self.n_bins, "must be >= 2")
        check(self.target in ("bins", "regression", "soft"), "target", self.target,
              "must be bins, regression or soft")
        for key in ("dim", "hidden", "embed_hop_frames"):
            check(getattr(self, key) >= 1, key, getattr(self, key), "must be >= 1")
        check(self.width > 0, "width", self.width, "must be positive")

    @property
    def max_gap_samples(self) -> int:
        fe = self.frontend
        return int(round(self.clip_s * fe.sample_rate)) - fe.n_samples(self.slice_frames)


def sample_pairs(cfg: TemporalGapConfig, clips: Sequence[Clip], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Two slices per clip and their normalised gap (contract in the module docstring)."""
    fe = cfg.frontend
    slice_len, max_gap = fe.n_samples(cfg.slice_frames), cfg.max_gap_samples
    waves = np.empty((len(clips), 2, slice_len), dtype=np.float32)
    gaps = np.empty(len(clips), dtype=np.float32)
    for i, clip in enumerate(clips):
        available = min(max(len(clip.audio) - slice_len, 0), max_gap)
        gap = int(rng.integers(0, available + 1))
        s1 = int(rng.integers(0, available - gap + 1))
        starts = [s1, s1 + gap]
        if rng.random() < 0.5:            # the order carries no information: the gap is absolute
            starts.reverse()
        for k, s in enumerate(starts):
            waves[i, k] = crop(clip.audio, s, slice_len)
        gaps[i] = gap / max_gap
    feats = logmel(fe, waves)                                        # [B, 2, T, F]
    return {"first": np.ascontiguousarray(feats[:, 0]),
            "second": np.ascontiguousarray(feats[:, 1]), "gap": gaps}


def gap_bins(gap: Tensor, n_bins: int) -> Tensor:
    """Normalised gap [B] in [0, 1] -> bin index [B] in [0, n_bins - 1] (1.0 in the last bin)."""
    return torch.clamp((gap * n_bins).long(), 0, n_bins - 1)


class TemporalGap(Method):
    name = "temporal-gap"
    config_cls = TemporalGapConfig
    sample_views = staticmethod(sample_pairs)

    def __init__(self, cfg: TemporalGapConfig | None = None):
        super().__init__(cfg)
        cfg = self.cfg
        self.frontend = Frontend(cfg.frontend)
        self.encoder = ConvEncoder2d(cfg.dim, cfg.channels, cfg.width)
        n_out = cfg.n_bins if cfg.target == "bins" else 1
        self.head = nn.Sequential(nn.Linear(2 * cfg.dim, cfg.hidden), nn.ReLU(inplace=True),
                                  nn.Linear(cfg.hidden, n_out))

    def predict(self, first: Tensor, second: Tensor) -> Tensor:
        """Slices [B, T, F] x 2 -> bin logits [B, n_bins] or gap logit [B, 1]."""
        b = first.shape[0]
        z = self.encoder(torch.cat([first, second], dim=0))          # one pass: [2B, D]
        return self.head(torch.cat([z[:b], z[b:]], dim=1))          # [B, 2D] -> [B, out]

    def loss(self, batch: dict[str, Tensor], dist: Dist = Dist()) -> tuple[Tensor, dict[str, float]]:
        out, gap = self.predict(batch["first"], batch["second"]), batch["gap"]
        if self.cfg.target == "bins":
            target = gap_bins(gap, self.cfg.n_bins)
            loss = F.cross_entropy(out, target)
            acc = (out.argmax(dim=1) == target).float().mean()
            return loss, {"gap_accuracy": float(acc.detach())}
        logit = out.squeeze(1)
        pred = torch.sigmoid(logit)
        mae = {"gap_mae": float((pred.detach() - gap).abs().mean())}
        if self.cfg.target == "soft":
            return F.binary_cross_entropy_with_logits(logit, gap.to(logit.dtype)), mae
        return F.mse_loss(pred, gap), mae

    @property
    def embedding_dim(self) -> int:
        return self.cfg.dim

    def embed_frames(self, wave: Tensor) -> tuple[Tensor, Tensor]:
        return window_embed(self.frontend(wave), self.encoder, self.cfg.slice_frames,
                            self.cfg.embed_hop_frames, self.cfg.frontend.frames_per_second,
                            self.cfg.frontend)
