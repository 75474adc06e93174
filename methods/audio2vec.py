"""Audio2Vec, CBoW and SkipGram (Tagliasacchi, Gfeller, de Chaumont Quitry, Roblek,
"Pre-training audio representations with self-supervision", IEEE SPL 2020, arXiv 1905.11796).

"Audio2Vec ... aims at reconstructing a spectrogram slice from past and future slices"
(CBoW), and its SkipGram variant reconstructs the neighbouring slices from the middle one.
A clip gives 2P + 1 consecutive log-mel slices of ``slice_frames`` frames (optionally
separated by ``gap_frames``); the shared 6-layer conv encoder (``encoders.ConvEncoder2d``)
maps a slice to a 128-d embedding; the mirrored decoder (nearest-neighbour upsampling)
reconstructs slices; the loss is the mean squared error.

Batch contract (both variants), float32:
    {"context": [B, 2P, T, F],   # P past then P future slices, in time order
     "target":  [B, T, F]}       # the middle slice
with T = slice_frames (96 = 0.96 s at hop 10 ms) and F = frontend.n_features (64).

Defaults marked (unverified) in ANCHORS §2: P = 2; the paper's optimiser settings are not
restated there, so Adam at lr 1e-3 is used. CBoW **concatenates** the 2P context embeddings in
time order (Tagliasacchi et al. 2020, Sec. 2: "the embeddings of the past and future slices
are concatenated" before the convolutional decoder), so the decoder input is 2P x dim and it
can tell which neighbour is which; ``cbow_combine="mean"`` keeps the order-invariant mean
(word2vec's CBoW) as an option. SkipGram has one decoder per neighbour position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from tympan.config import check
from tympan.datasets.clip import Clip
from tympan.datasets.frontend import Frontend, FrontendConfig
from tympan.methods.base import (Method, OptimConfig, crop, logmel, random_start,
                                 window_embed)
from tympan.methods.dist import Dist
from tympan.methods.encoders import AUDIO2VEC_CHANNELS, ConvDecoder2d, ConvEncoder2d
from tympan.methods.losses import masked_mse


@dataclass
class Audio2VecConfig:
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3))
    batch_size: int = 256              # global batch
    slice_frames: int = 96             # one slice = 96 frames = 0.96 s
    context: int = 2                   # P: slices on each side of the middle one (unverified)
    gap_frames: int = 0                # frames skipped between consecutive slices
    dim: int = 128                     # embedding size (paper: 128)
    channels: tuple[int, ...] = AUDIO2VEC_CHANNELS
    width: float = 1.0                 # channel multiplier (tests use narrow widths)
    embed_hop_frames: int = 48         # hop of the sliding window in embed_frames
    cbow_combine: Literal["concat", "mean"] = "concat"   # CBoW: paper concatenates (2P x dim)

    def __post_init__(self):
        check(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        check(self.slice_frames >= 4, "slice_frames", self.slice_frames, "must be >= 4")
        check(self.context >= 1, "context", self.context, "must be >= 1")
        check(self.gap_frames >= 0, "gap_frames", self.gap_frames, "must be >= 0")
        check(self.dim >= 1, "dim", self.dim, "must be >= 1")
        check(len(self.channels) >= 1 and min(self.channels) >= 1, "channels", self.channels,
              "must be a non-empty list of positive channel counts")
        check(self.width > 0, "width", self.width, "must be positive")
        check(self.embed_hop_frames >= 1, "embed_hop_frames", self.embed_hop_frames, "must be >= 1")
        check(self.cbow_combine in ("concat", "mean"), "cbow_combine", self.cbow_combine,
              "must be concat (paper) or mean")


def sample_slices(cfg: Audio2VecConfig, clips: Sequence[Clip], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """2P + 1 consecutive slices per clip at a uniformly random position (see module doc for
    the batch contract). Short clips are loop-padded to the span they need (base.loop_pad)."""
    fe, p, t = cfg.frontend, cfg.context, cfg.slice_frames
    step = fe.n_samples(t) + fe.hop_length * (1 + cfg.gap_frames)   # slice start to next start
    slice_len = fe.n_samples(t)                                      # exactly T frames
    span = step * 2 * p + slice_len
    waves = np.empty((len(clips), 2 * p + 1, slice_len), dtype=np.float32)
    for i, clip in enumerate(clips):
        start = random_start(rng, len(clip.audio), span)
        region = crop(clip.audio, start, span)
        for k in range(2 * p + 1):
            waves[i, k] = region[k * step:k * step + slice_len]
    feats = logmel(fe, waves)                                        # [B, 2P+1, T, F]
    return {"context": np.ascontiguousarray(np.delete(feats, p, axis=1)),
            "target": np.ascontiguousarray(feats[:, p])}


class _Audio2Vec(Method):
    config_cls = Audio2VecConfig

    def __init__(self, cfg: Audio2VecConfig | None = None):
        super().__init__(cfg)
        cfg = self.cfg
        self.frontend = Frontend(cfg.frontend)
        self.encoder = ConvEncoder2d(cfg.dim, cfg.channels, cfg.width)
        shape = (cfg.slice_frames, cfg.frontend.n_features)
        self.decoders = nn.ModuleList(ConvDecoder2d(shape, self._decoder_in(), cfg.channels, cfg.width)
                                      for _ in range(self._n_decoders()))

    def _n_decoders(self) -> int:
        raise NotImplementedError

    def _decoder_in(self) -> int:
        """Size of the decoder's input vector."""
        return self.cfg.dim

    sample_views = staticmethod(sample_slices)

    @property
    def embedding_dim(self) -> int:
        return self.cfg.dim

    def embed_frames(self, wave: Tensor) -> tuple[Tensor, Tensor]:
        feats = self.frontend(wave)                                  # [B, T_total, F]
        return window_embed(feats, self.encoder, self.cfg.slice_frames,
                            self.cfg.embed_hop_frames, self.cfg.frontend.frames_per_second,
                            self.cfg.frontend)


class Audio2VecCBoW(_Audio2Vec):
    """Context slices -> 2P embeddings concatenated in time order (2P x dim; ``cbow_combine
    = "mean"``: their mean) -> decoder -> middle slice; MSE."""

    name = "audio2vec-cbow"

    def _n_decoders(self) -> int:
        return 1

    def _decoder_in(self) -> int:
        return self.cfg.dim * (2 * self.cfg.context if self.cfg.cbow_combine == "concat" else 1)

    def predict(self, ctx: Tensor) -> Tensor:
        """Context ``[B, 2P, T, F]`` -> predicted middle slice ``[B, T, F]``."""
        b, n_ctx, t, f = ctx.shape
        z = self.encoder(ctx.reshape(b * n_ctx, t, f)).view(b, n_ctx, -1)  # [B, 2P, D]
        z = z.reshape(b, -1) if self.cfg.cbow_combine == "concat" else z.mean(dim=1)  # [B, 2PD]
        return self.decoders[0](z)

    def loss(self, batch: dict[str, Tensor], dist: Dist = Dist()) -> tuple[Tensor, dict[str, float]]:
        return masked_mse(self.predict(batch["context"]), batch["target"]), {}


class Audio2VecSkipGram(_Audio2Vec):
    """Middle slice -> embedding -> one decoder per neighbour position -> the 2P slices; MSE."""

    name = "audio2vec-skipgram"

    def _n_decoders(self) -> int:
        return 2 * self.cfg.context

    def loss(self, batch: dict[str, Tensor], dist: Dist = Dist()) -> tuple[Tensor, dict[str, float]]:
        ctx, middle = batch["context"], batch["target"]
        z = self.encoder(middle)                                     # [B, D]
        pred = torch.stack([dec(z) for dec in self.decoders], dim=1)  # [B, 2P, T, F]
        return masked_mse(pred, ctx), {}
