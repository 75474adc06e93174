"""COLA: contrastive learning of general-purpose audio representations (Saeed, Grangier,
Zeghidour, ICASSP 2021, arXiv 2010.10915; code: google-research/google-research/cola).

"We sample two segments from the same audio clip as an anchor and a positive; all other
clips in the batch provide the negatives." Each ~1 s segment (96 log-mel frames) goes
through EfficientNet-B0 with global max-pooling (``encoders.EfficientNetEncoder``, 1280-d),
then a dense layer of 512 units followed, for the bilinear score, by layer normalisation and
tanh (g). Scores are bilinear (W initialised N(0, 0.05^2) as the released code),
s(x, x') = g(f(x))^T W g(f(x')) (the paper's choice; cosine with temperature 0.2 is the
option it compares against), and the loss is softmax cross-entropy over the scores against
the positives of the **global** batch (negatives gathered from every worker with gradients:
``losses.bilinear_contrastive``). The released code adds Gaussian noise with sigma 0.001 to
the positive segment; we add it to the waveform before the front end. The evaluation
embedding is the encoder output f(x) (1280-d), as in the paper's linear evaluation.

Batch contract, float32:
    {"anchor": [B, T, F], "positive": [B, T, F]}    # T = crop_frames (96), F = 64

Defaults: Adam lr 1e-3 and batch 64 as the released code (the paper reports ~1024 on TPUs).
Crops are drawn independently and uniformly, so they may overlap; a clip shorter than a crop
is loop-padded (base.loop_pad).
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
from tympan.methods.base import Method, OptimConfig, crop, logmel, random_start, window_embed
from tympan.methods.dist import Dist
from tympan.methods.encoders import EfficientNetEncoder
from tympan.methods.losses import BilinearContrastive, CosineContrastive


@dataclass
class COLAConfig:
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3))
    batch_size: int = 64
    crop_frames: int = 96              # ~0.96 s per segment
    noise_std: float = 0.001           # Gaussian noise on the positive's waveform (COLA code)
    similarity: Literal["bilinear", "cosine"] = "bilinear"
    temperature: float = 0.2           # cosine only
    projection_dim: int = 512
    width: float = 1.0                 # EfficientNet channel multiplier (1 = B0)
    depth: float = 1.0                 # EfficientNet depth multiplier (1 = B0)
    embed_hop_frames: int = 48

    def __post_init__(self):
        for key in ("batch_size", "projection_dim", "embed_hop_frames"):
            check(getattr(self, key) >= 1, key, getattr(self, key), "must be >= 1")
        check(self.crop_frames >= 8, "crop_frames", self.crop_frames, "must be >= 8")
        check(self.noise_std >= 0, "noise_std", self.noise_std, "must be >= 0")
        check(self.temperature > 0, "temperature", self.temperature, "must be positive")
        check(self.width > 0, "width", self.width, "must be positive")
        check(self.depth > 0, "depth", self.depth, "must be positive")


def sample_crops(cfg: COLAConfig, clips: Sequence[Clip], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Two independent random crops per clip; noise on the positive (contract above)."""
    fe = cfg.frontend
    n = fe.n_samples(cfg.crop_frames)
    waves = np.empty((len(clips), 2, n), dtype=np.float32)
    for i, clip in enumerate(clips):
        for k in range(2):
            waves[i, k] = crop(clip.audio, random_start(rng, len(clip.audio), n), n)
    if cfg.noise_std > 0:
        waves[:, 1] += rng.normal(0.0, cfg.noise_std, size=waves[:, 1].shape).astype(np.float32)
    feats = logmel(fe, waves)                                        # [B, 2, T, F]
    return {"anchor": np.ascontiguousarray(feats[:, 0]),
            "positive": np.ascontiguousarray(feats[:, 1])}


class COLA(Method):
    name = "cola"
    config_cls = COLAConfig
    sample_views = staticmethod(sample_crops)

    def __init__(self, cfg: COLAConfig | None = None):
        super().__init__(cfg)
        cfg = self.cfg
        self.frontend = Frontend(cfg.frontend)
        self.encoder = EfficientNetEncoder(cfg.width, cfg.depth)
        dense = nn.Linear(self.encoder.out_dim, cfg.projection_dim)
        if cfg.similarity == "bilinear":
            # LayerNorm + tanh bound the embeddings before the unnormalised bilinear score;
            # the cosine variant normalises instead (as google-research/cola).
            self.projection = nn.Sequential(dense, nn.LayerNorm(cfg.projection_dim), nn.Tanh())
            self.similarity = BilinearContrastive(cfg.projection_dim)
        else:
            self.projection = nn.Sequential(dense)
            self.similarity = CosineContrastive(cfg.temperature)

    def loss(self, batch: dict[str, Tensor], dist: Dist = Dist()) -> tuple[Tensor, dict[str, float]]:
        b = batch["anchor"].shape[0]
        g = self.projection(self.encoder(torch.cat([batch["anchor"], batch["positive"]])))  # [2B, P]
        gather = dist.gather if dist.world_size > 1 else None
        loss = self.similarity(g[:b], g[b:], gather=gather, rank=dist.rank)
        return loss, {}

    @property
    def embedding_dim(self) -> int:
        return self.encoder.out_dim

    def embed_frames(self, wave: Tensor) -> tuple[Tensor, Tensor]:
        return window_embed(self.frontend(wave), self.encoder, self.cfg.crop_frames,
                            self.cfg.embed_hop_frames, self.cfg.frontend.frames_per_second)
