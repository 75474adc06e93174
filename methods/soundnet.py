"""SoundNet-style distillation: a waveform CNN learns an image teacher's class distribution.

Aytar, Vondrick & Torralba, "SoundNet: Learning Sound Representations from Unlabeled Video",
NIPS 2016 (arXiv 1610.09001). "We train the sound network to minimise the KL-divergence from
the ground truth distributions [of the visual teacher] to the predicted distributions":
loss = KL(teacher(frame) || student(wave)). Student (their 8-layer net, Table 1): 1-D conv
layers with BN + ReLU, channels 16/32/64/128/256/512/1024, kernels 64/32/16/8/4/4/4,
stride 2, max-pool 8/8/-/-/4 after conv1/conv2/conv5, and conv8 (kernel 8) to the teacher's
classes. "Features from pool5 gave the best transfer", so pool5 is the embedding (256-d).

Deviations, on purpose: 16 kHz waveforms (tympan's shards; SoundNet used 22.05 kHz); conv8
is zero-padded (k8, pad 4) so short crops still give an output; one teacher frame per crop,
so the student's conv8 logits are averaged over time before the softmax (SoundNet matches
per-frame distributions at 1 fps of a 20 s clip); one teacher (SoundNet used ImageNet and
Places heads).

The teacher is named in the config (:class:`tympan.methods.teacher.TeacherConfig`), loaded
lazily on the first ``loss`` call, kept frozen in eval mode, and is **not** a registered
sub-module: checkpoints (``payload()``) hold the student only, and ``load_method`` /
embedding never need the teacher file.

Batch (B = len(clips))::

    {"wave":  float32 [B, n]         # n = crop_s * 16000, centred on the chosen frame
     "frame": float32 [B, 3, S, S]}  # the frame, normalised with teacher.mean/std, S = image_size

A clip without frames is an error naming it; a clip shorter than the crop is loop-padded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tympan.config import check
from tympan.datasets.clip import Clip
from tympan.methods.base import Method, OptimConfig
from tympan.methods.dist import Dist
from tympan.methods.l3 import _pick_frame, crop_at, resize_frame
from tympan.methods.teacher import TeacherConfig, load_teacher

# (out channels, kernel, stride, padding, max-pool after) per conv layer, Aytar et al. Table 1.
SOUNDNET_LAYERS: tuple[tuple[int, int, int, int, int], ...] = (
    (16, 64, 2, 32, 8), (32, 32, 2, 16, 8), (64, 16, 2, 8, 1), (128, 8, 2, 4, 1),
    (256, 4, 2, 2, 4), (512, 4, 2, 2, 1), (1024, 4, 2, 2, 1))
CONV8_KERNEL, CONV8_PAD = 8, 4
EMBED_LAYER = 5               # pool5


def soundnet_lengths(n: int) -> list[int]:
    """Time length after each of conv1..conv7 (incl. its pool) for ``n`` input samples."""
    out = []
    for _, k, s, p, pool in SOUNDNET_LAYERS:
        n = (n + 2 * p - k) // s + 1
        n = n // pool
        out.append(n)
    return out


def min_samples() -> int:
    """Fewest input samples for which every layer has >= 1 output step (lengths grow with n)."""
    lo, hi = 1, 1 << 20
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if min(soundnet_lengths(mid)) >= 1 else (mid + 1, hi)
    return lo


def kl_teacher_student(teacher_logits: Tensor, student_logits: Tensor,
                       temperature: float = 1.0) -> Tensor:
    """KL(p_teacher || q_student), mean over the batch: sum_c p_c (log p_c - log q_c) with
    p = softmax(teacher_logits / T), q = softmax(student_logits). ``[B, C]`` each."""
    p = F.softmax(teacher_logits / temperature, dim=-1)
    return F.kl_div(F.log_softmax(student_logits, dim=-1), p, reduction="batchmean")


@dataclass
class SoundNetConfig:
    n_classes: int = 1000               # the teacher's classes (SoundNet: 1000 ImageNet)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    crop_s: float = 5.0                 # seconds of waveform per pair (unverified for SoundNet)
    width: float = 1.0                  # channel multiplier (1 = paper)
    batch_size: int = 64                # Aytar et al.
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3))   # Adam 1e-3

    def __post_init__(self):
        check(self.n_classes >= 2, "n_classes", self.n_classes, "must be >= 2")
        check(self.width > 0, "width", self.width, "must be positive")
        check(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        check(round(self.crop_s * 16000) >= min_samples(), "crop_s", self.crop_s,
              f"too short: the student needs >= {min_samples()} samples ({min_samples() / 16000:.3f} s)")

    @property
    def crop_samples(self) -> int:
        return int(round(self.crop_s * 16000))


def sample_soundnet_views(cfg: SoundNetConfig, clips: Sequence[Clip],
                          rng: np.random.Generator) -> dict[str, np.ndarray]:
    n, s = cfg.crop_samples, cfg.teacher.image_size
    mean = np.asarray(cfg.teacher.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(cfg.teacher.std, dtype=np.float32)[:, None, None]
    waves = np.empty((len(clips), n), dtype=np.float32)
    frames = np.empty((len(clips), 3, s, s), dtype=np.float32)
    for i, clip in enumerate(clips):
        frame, t = _pick_frame(clip, rng)
        waves[i] = crop_at(np.asarray(clip.audio, dtype=np.float32), int(round(t * clip.sample_rate)) - n // 2, n)
        frames[i] = (resize_frame(frame, s) - mean) / std
    return {"wave": waves, "frame": frames}


class SoundNet(Method):
    name = "soundnet"
    config_cls = SoundNetConfig
    sample_views = staticmethod(sample_soundnet_views)

    def __init__(self, cfg: SoundNetConfig | None = None):
        super().__init__(cfg)
        cfg = self.cfg
        layers, c_in = [], 1
        for c, k, s, p, pool in SOUNDNET_LAYERS:
            c = max(4, int(round(c * cfg.width)))
            block = [nn.Conv1d(c_in, c, k, s, p), nn.BatchNorm1d(c), nn.ReLU(inplace=True)]
            if pool > 1:
                block.append(nn.MaxPool1d(pool))
            layers.append(nn.Sequential(*block))
            c_in = c
        self.layers = nn.ModuleList(layers)                      # conv1 .. conv7
        self.conv8 = nn.Conv1d(c_in, cfg.n_classes, CONV8_KERNEL, 2, CONV8_PAD)
        self._embed_dim = self.layers[EMBED_LAYER - 1][0].out_channels
        object.__setattr__(self, "_teacher", None)               # not a sub-module: not saved

    @property
    def embedding_dim(self) -> int:
        return self._embed_dim

    def teacher(self, device: torch.device) -> nn.Module:
        """The frozen teacher, loaded on first use from ``cfg.teacher``."""
        if self._teacher is None:
            object.__setattr__(self, "_teacher", load_teacher(self.cfg.teacher, self.cfg.n_classes))
        return self._teacher.to(device)

    def forward(self, wave: Tensor) -> tuple[Tensor, Tensor]:
        """``[B, n]`` -> (pool5 features ``[B, C5, T5]``, class logits ``[B, n_classes]``)."""
        h, feats = wave.unsqueeze(1), None                       # [B, 1, n]
        for i, layer in enumerate(self.layers, start=1):
            h = layer(h)
            if i == EMBED_LAYER:
                feats = h
        return feats, self.conv8(h).mean(dim=-1)                 # logits averaged over time

    def loss(self, batch: dict[str, Tensor], dist: Dist = Dist()) -> tuple[Tensor, dict[str, float]]:
        frame = batch["frame"].float()
        with torch.no_grad():
            teacher_logits = self.teacher(frame.device)(frame)
        _, logits = self(batch["wave"].float())
        loss = kl_teacher_student(teacher_logits, logits, self.cfg.teacher.temperature)
        agree = (logits.argmax(1) == teacher_logits.argmax(1)).float().mean()
        return loss, {"teacher_agreement": float(agree.detach())}

    @torch.no_grad()
    def embed_frames(self, wave: Tensor) -> tuple[Tensor, Tensor]:
        """``[B, n]`` -> (pool5 features ``[B, T5, 256 * width]``, step centres in ms ``[B, T5]``;
        one step = 8192 samples = 512 ms at 16 kHz). Short waves are loop-padded."""
        wave = wave.float()
        need = min_samples()
        if wave.shape[-1] < need:
            wave = wave.repeat(1, -(-need // max(wave.shape[-1], 1)))[:, :need]
        feats, _ = self(wave)
        emb = feats.transpose(1, 2)                              # [B, T5, C5]
        step = wave.shape[-1] / emb.shape[1]
        times = (torch.arange(emb.shape[1], device=wave.device) + 0.5) * step * 1000.0 / 16000.0
        return emb, times.expand(emb.shape[0], -1)
