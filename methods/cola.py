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
``losses.bilinear_contrastive``). The evaluation embedding is the encoder output f(x)
(1280-d), as in the paper's linear evaluation.

Positive noise (google-research/cola ``data.py``): the released code L2-normalises the whole
clip (``tf.math.l2_normalize``) and adds Gaussian noise with sigma ``noise_std`` = 0.001 to
the positive segment: on a 10 s clip at 16 kHz (160,000 samples) the signal's mean power is
1 / 160,000, so SNR = 10 log10(1 / (160,000 x 1e-6)) = 8.0 dB, a real augmentation. With
``noise_scale: clip_norm`` (the released code's SNR; not yet the default: the learning test
has not been re-measured with it) we add noise of sigma ``noise_std x ||clip||_2`` to the
raw waveform: the same SNR as the released code, while the features keep the waveform's own
scale (the model is evaluated on un-normalised audio, so we do not normalise its input).
``noise_scale: raw`` (default for now) adds sigma ``noise_std`` to the raw waveform (~40 dB
SNR on typical audio: almost no augmentation; tympan's behaviour before issue 15).

Released-code front end: 98-frame crops (1 s = 16,000 samples of 25 ms / 10 ms frames) and
FFT 1024 (``fft_length=1024``): ``crop_frames=98, frontend.n_fft=1024`` (:data:`RELEASED`;
with tympan's centred frames, 98 frames span 15,520 samples). The defaults (96 frames, FFT
512) are the paper's / ANCHORS §1 front end shared with the other slice methods.

Per-view augmentation (off by default: the paper has none). Two crops of one clip share its
level, EQ and background, and those alone find a crop's partner in a batch most of the time
(docs/results.md sections 1 and 3), so the bilinear task can be solved without hearing content. As
the augmented triplet (methods/triplet.py), ``p_gain``/``p_eq`` give each view its own random
gain and smooth EQ (``base.view_gain_eq``, BYOL-A style) and ``p_mix`` mixes another clip of
the batch into the positive (Jansen et al.'s mixing, ``base.mix_in``), before the positive
noise. A positive that carries clip j's audio is no negative for clip j's anchor: with
``p_mix > 0`` the batch carries row identities and the loss drops such columns from the
softmax (``losses.negatives_ruled_out``, the triplet's rule).

Batch contract, float32:
    {"anchor": [B, T, F], "positive": [B, T, F]}    # T = crop_frames (96), F = 64
    + {"clip_key": i64 [B], "mix_key": i64 [B]}     # only with p_mix > 0 (triplet's keys)

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
from tympan.methods.base import (Method, OptimConfig, crop, logmel, mix_in, random_start,
                                 view_gain_eq, window_embed)
from tympan.methods.dist import Dist
from tympan.methods.encoders import EfficientNetEncoder
from tympan.methods.losses import BilinearContrastive, CosineContrastive
from tympan.methods.triplet import clip_key


@dataclass
class COLAConfig:
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3))
    batch_size: int = 64
    crop_frames: int = 96              # ~0.96 s per segment
    noise_std: float = 0.001           # Gaussian noise on the positive's waveform (COLA code)
    noise_scale: Literal["clip_norm", "raw"] = "raw"   # clip_norm: sigma x ||clip|| = released SNR
    similarity: Literal["bilinear", "cosine"] = "bilinear"
    temperature: float = 0.2           # cosine only
    projection_dim: int = 512
    width: float = 1.0                 # EfficientNet channel multiplier (1 = B0)
    depth: float = 1.0                 # EfficientNet depth multiplier (1 = B0)
    embed_hop_frames: int = 48
    # Per-view augmentation (module doc); off by default as in the paper.
    p_gain: float = 0.0                # random gain in [-gain_db, gain_db] dB, per view
    gain_db: float = 10.0
    p_eq: float = 0.0                  # random smooth EQ curve up to eq_db dB, per view
    eq_db: float = 6.0
    p_mix: float = 0.0                 # mix another clip of the batch into the positive
    mix_gain: float = 0.3

    def __post_init__(self):
        for key in ("batch_size", "projection_dim", "embed_hop_frames"):
            check(getattr(self, key) >= 1, key, getattr(self, key), "must be >= 1")
        check(self.crop_frames >= 8, "crop_frames", self.crop_frames, "must be >= 8")
        check(self.noise_std >= 0, "noise_std", self.noise_std, "must be >= 0")
        check(self.noise_scale in ("clip_norm", "raw"), "noise_scale", self.noise_scale,
              "must be clip_norm (released code's SNR) or raw")
        check(self.temperature > 0, "temperature", self.temperature, "must be positive")
        check(self.width > 0, "width", self.width, "must be positive")
        check(self.depth > 0, "depth", self.depth, "must be positive")
        for key in ("p_gain", "p_eq", "p_mix"):
            v = getattr(self, key)
            check(0.0 <= v <= 1.0, key, v, "must be a probability in [0, 1]")
        check(self.gain_db >= 0 and self.eq_db >= 0, "gain_db", (self.gain_db, self.eq_db),
              "gain_db and eq_db must be >= 0")
        check(0.0 <= self.mix_gain <= 1.0, "mix_gain", self.mix_gain, "must be in [0, 1]")


# The released code's front end and crop length (module doc); pass as COLAConfig(**RELEASED).
RELEASED = {"crop_frames": 98, "frontend": FrontendConfig(n_fft=1024)}


def crop_waves(cfg: COLAConfig, clips: Sequence[Clip], rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray, np.random.Generator | None]:
    """``[B, 2, n]`` waveforms: two independent random crops per clip (anchor, positive), the
    positive with another clip mixed in (``p_mix``) and Gaussian noise of sigma ``noise_std``
    (x ``||clip||_2`` for ``clip_norm``); ``[B]`` the index of the clip mixed into each
    positive (-1 if none); and the augmentations' own random stream (None when they are off).
    The crops are drawn first, so switching augmentations on does not move them."""
    n = cfg.frontend.n_samples(cfg.crop_frames)
    waves = np.empty((len(clips), 2, n), dtype=np.float32)
    for i, clip in enumerate(clips):
        for k in range(2):
            waves[i, k] = crop(clip.audio, random_start(rng, len(clip.audio), n), n)
    mixed = np.full(len(clips), -1, dtype=np.int64)
    aug_rng = None
    if cfg.p_gain > 0 or cfg.p_eq > 0 or cfg.p_mix > 0:
        aug_rng = np.random.default_rng(int(rng.integers(2**63)))
        for i in range(len(clips)):
            if len(clips) > 1 and aug_rng.random() < cfg.p_mix:
                mixed[i] = mix_in(waves[i, 1], clips, i, aug_rng, cfg.mix_gain)
    if cfg.noise_std > 0:
        sigma = np.full((len(clips), 1), cfg.noise_std)
        if cfg.noise_scale == "clip_norm":
            sigma *= np.array([[np.linalg.norm(np.asarray(c.audio, dtype=np.float64))] for c in clips])
        waves[:, 1] += (rng.normal(0.0, 1.0, size=waves[:, 1].shape) * sigma).astype(np.float32)
    return waves, mixed, aug_rng


def sample_crops(cfg: COLAConfig, clips: Sequence[Clip], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Two independent random crops per clip; augmentations and noise (contract above)."""
    waves, mixed, aug_rng = crop_waves(cfg, clips, rng)
    feats = logmel(cfg.frontend, waves)                             # [B, 2, T, F]
    if aug_rng is not None:
        view_gain_eq(feats, aug_rng, p_gain=cfg.p_gain, gain_db=cfg.gain_db, p_eq=cfg.p_eq,
                     eq_db=cfg.eq_db)
    out = {"anchor": np.ascontiguousarray(feats[:, 0]),
           "positive": np.ascontiguousarray(feats[:, 1])}
    if cfg.p_mix > 0:
        keys = np.asarray([clip_key(c.clip_id) for c in clips], dtype=np.int64)
        out["clip_key"] = keys
        out["mix_key"] = np.where(mixed >= 0, keys[np.maximum(mixed, 0)], -1).astype(np.int64)
    return out


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
        keys = (batch["clip_key"], batch["mix_key"]) if "clip_key" in batch else None
        loss = self.similarity(g[:b], g[b:], gather=gather, rank=dist.rank, keys=keys)
        return loss, {}

    @property
    def embedding_dim(self) -> int:
        return self.encoder.out_dim

    def embed_frames(self, wave: Tensor) -> tuple[Tensor, Tensor]:
        return window_embed(self.frontend(wave), self.encoder, self.cfg.crop_frames,
                            self.cfg.embed_hop_frames, self.cfg.frontend.frames_per_second,
                            self.cfg.frontend)
