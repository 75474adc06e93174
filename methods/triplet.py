"""Triplet loss with temporal proximity (Jansen, Plakal, Pandya, Ellis, Hershey, Liu, Moore,
Saurous, "Unsupervised learning of semantic audio representations", ICASSP 2018,
arXiv 1711.02209; TRILL, Shor et al., Interspeech 2020, arXiv 2002.12764).

Jansen et al. sample triplets whose positive is "a patch within a time window tau of the
anchor in the same clip" and whose negative comes from a different clip; they also build
triplets from explicit augmentations: Gaussian noise, time/frequency translation and mixing
with another example. TRILL trains exactly the temporal-proximity variant. Here every clip
gives an (anchor, positive) pair; the negatives of an anchor are the positives of the other
clips of the **global** batch (gathered across workers with gradients,
``losses.batch_triplet``). Embeddings are L2-normalised (``losses.triplet_margin``).

``mining`` picks which of those negatives count: ``all`` (every triplet, default), ``hardest``
(the nearest per anchor), ``semi-hard`` (the nearest one farther than the positive: FaceNet,
Schroff et al. 2015) or ``random`` (one other-clip negative per anchor drawn at random, as
Jansen et al. sample their triplets' negatives from a different clip).

With ``p_mix > 0`` a positive carries a second clip's audio, so that positive must not be a
negative for the second clip's own anchor (it contains the anchor's clip). Rows of a batch are
shuffled between the sampler and the trainer (the Ray pipeline mixes groups), so the sampler
marks rows by clip identity, not by position: ``clip_key`` (a 62-bit hash of ``clip_id``) and
``mix_key`` (the mixed-in clip's key, -1 when none); the loss drops pool row j as a negative
of anchor i when ``mix_key[j] == clip_key[i]``, and when j is the same clip as i (a clip twice
in one global batch is no negative either).

Batch contract:
    {"anchor":   f32 [B, T, F],     # one slice per clip
     "positive": f32 [B, T, F],     # a slice starting within tau_s of the anchor, same clip,
                                    # with the optional Jansen augmentations applied
     "clip_key": i64 [B],           # identity of the row's clip
     "mix_key":  i64 [B]}           # identity of the clip mixed into the positive, -1 if none
with T = slice_frames, F = frontend.n_features.

Defaults: margin 0.1 on unit vectors (ANCHORS §2, unverified); 128-d embeddings (Jansen;
TRILL uses 512); tau_s = 1.0 (unverified); augmentations off (TRILL) and enabled by
probabilities. Short clips are loop-padded (base.loop_pad), so a clip shorter than the
anchor-positive span yields a looped positive.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
import torch
from torch import Tensor

from tympan.config import check
from tympan.datasets.clip import Clip
from tympan.datasets.frontend import Frontend, FrontendConfig
from tympan.methods.base import (Method, OptimConfig, crop, logmel, mix_in, random_start,
                                 view_gain_eq, window_embed)
from tympan.methods.dist import Dist
from tympan.methods.encoders import AUDIO2VEC_CHANNELS, ConvEncoder2d
from tympan.methods.losses import batch_triplet


@dataclass
class TripletConfig:
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3))
    batch_size: int = 256
    slice_frames: int = 96
    tau_s: float = 1.0                 # positive starts within tau of the anchor start
    margin: float = 0.1
    mining: Literal["all", "hardest", "semi-hard", "random"] = "all"
    dim: int = 128
    channels: tuple[int, ...] = AUDIO2VEC_CHANNELS
    width: float = 1.0
    embed_hop_frames: int = 48
    # Jansen et al. 2018 augmentations of the positive, each applied with this probability.
    p_noise: float = 0.0               # add Gaussian noise at a random SNR in [snr_db_min, 30] dB
    snr_db_min: float = 5.0
    p_shift: float = 0.0               # roll the positive's log-mel by up to max_shift_* steps
    max_shift_frames: int = 8
    max_shift_bins: int = 4
    p_mix: float = 0.0                 # mix in another clip of the batch at mix_gain x amplitude
    mix_gain: float = 0.3
    # Per-view augmentations (BYOL-A style, Niizumi et al. 2021): applied to the anchor and the
    # positive independently, so level and EQ, constant over a clip, stop identifying it
    # (docs/results.md measures that they do otherwise). Off by default (TRILL has none).
    p_gain: float = 0.0                # random gain in [-gain_db, gain_db] dB
    gain_db: float = 10.0
    p_eq: float = 0.0                  # random smooth EQ curve over the mel bins, up to eq_db dB
    eq_db: float = 6.0

    def __post_init__(self):
        for key in ("batch_size", "dim", "embed_hop_frames"):
            check(getattr(self, key) >= 1, key, getattr(self, key), "must be >= 1")
        check(self.slice_frames >= 4, "slice_frames", self.slice_frames, "must be >= 4")
        check(self.tau_s >= 0, "tau_s", self.tau_s, "must be >= 0")
        check(self.margin >= 0, "margin", self.margin, "must be >= 0")
        check(self.width > 0, "width", self.width, "must be positive")
        for key in ("p_noise", "p_shift", "p_mix", "p_gain", "p_eq"):
            v = getattr(self, key)
            check(0.0 <= v <= 1.0, key, v, "must be a probability in [0, 1]")
        check(self.max_shift_frames >= 0 and self.max_shift_bins >= 0, "max_shift_frames",
              (self.max_shift_frames, self.max_shift_bins), "shifts must be >= 0")
        check(0.0 <= self.mix_gain <= 1.0, "mix_gain", self.mix_gain, "must be in [0, 1]")
        check(self.gain_db >= 0 and self.eq_db >= 0, "gain_db", (self.gain_db, self.eq_db),
              "gain_db and eq_db must be >= 0")


def clip_key(clip_id: str) -> int:
    """A stable non-negative 62-bit identity for ``clip_id`` (same in every process)."""
    return int.from_bytes(hashlib.blake2b(clip_id.encode(), digest_size=8).digest(), "little") >> 2


def sample_triplets(cfg: TripletConfig, clips: Sequence[Clip], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Anchor + temporally close positive per clip (contract in the module docstring)."""
    fe = cfg.frontend
    slice_len, tau = fe.n_samples(cfg.slice_frames), int(round(cfg.tau_s * fe.sample_rate))
    b = len(clips)
    # Augmentations draw from their own stream, so switching them on does not move the crops.
    aug_rng = np.random.default_rng(int(rng.integers(2**63)))
    waves = np.empty((b, 2, slice_len), dtype=np.float32)
    keys = np.asarray([clip_key(c.clip_id) for c in clips], dtype=np.int64)
    mix_keys = np.full(b, -1, dtype=np.int64)
    for i, clip in enumerate(clips):
        span = slice_len + tau                      # anchor and positive both inside it
        region = crop(clip.audio, random_start(rng, len(clip.audio), span), span)
        offsets = [0, int(rng.integers(0, tau + 1))]
        if rng.random() < 0.5:                      # either may come first
            offsets.reverse()
        for k, off in enumerate(offsets):
            waves[i, k] = region[off:off + slice_len]
        pos = waves[i, 1]
        if b > 1 and aug_rng.random() < cfg.p_mix:  # Jansen "mixing": positive + another clip
            mix_keys[i] = keys[mix_in(pos, clips, i, aug_rng, cfg.mix_gain)]
        if aug_rng.random() < cfg.p_noise:
            snr_db = aug_rng.uniform(cfg.snr_db_min, 30.0)
            power = float(np.mean(pos ** 2)) + 1e-12
            pos += aug_rng.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), slice_len).astype(np.float32)
    feats = logmel(fe, waves)                                        # [B, 2, T, F]
    for i in range(b):
        if aug_rng.random() < cfg.p_shift:          # Jansen "time/frequency translation"
            dt = int(aug_rng.integers(-cfg.max_shift_frames, cfg.max_shift_frames + 1))
            df = int(aug_rng.integers(-cfg.max_shift_bins, cfg.max_shift_bins + 1))
            feats[i, 1] = np.roll(feats[i, 1], (dt, df), axis=(0, 1))
    view_gain_eq(feats, aug_rng, p_gain=cfg.p_gain, gain_db=cfg.gain_db, p_eq=cfg.p_eq, eq_db=cfg.eq_db)
    return {"anchor": np.ascontiguousarray(feats[:, 0]),
            "positive": np.ascontiguousarray(feats[:, 1]),
            "clip_key": keys, "mix_key": mix_keys}


class Triplet(Method):
    name = "triplet"
    config_cls = TripletConfig
    sample_views = staticmethod(sample_triplets)

    def __init__(self, cfg: TripletConfig | None = None):
        super().__init__(cfg)
        cfg = self.cfg
        self.frontend = Frontend(cfg.frontend)
        self.encoder = ConvEncoder2d(cfg.dim, cfg.channels, cfg.width)

    def loss(self, batch: dict[str, Tensor], dist: Dist = Dist()) -> tuple[Tensor, dict[str, float]]:
        b = batch["anchor"].shape[0]
        z = self.encoder(torch.cat([batch["anchor"], batch["positive"]], dim=0))   # [2B, D]
        gather = dist.gather if dist.world_size > 1 else None
        keys = (batch["clip_key"], batch["mix_key"]) if "clip_key" in batch else None
        pick = torch.rand(b, device=z.device) if self.cfg.mining == "random" else None
        loss = batch_triplet(z[:b], z[b:], self.cfg.margin, gather=gather, rank=dist.rank,
                             mining=self.cfg.mining, keys=keys, pick=pick)
        return loss, {}

    @property
    def embedding_dim(self) -> int:
        return self.cfg.dim

    def embed_frames(self, wave: Tensor) -> tuple[Tensor, Tensor]:
        return window_embed(self.frontend(wave), self.encoder, self.cfg.slice_frames,
                            self.cfg.embed_hop_frames, self.cfg.frontend.frames_per_second,
                            self.cfg.frontend)
