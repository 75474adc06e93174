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
per-frame distributions at 1 fps of a 20 s clip).

**Several teachers** (Aytar et al. Sec. 3: the student is trained against K teachers at once,
min_theta sum_k sum_i KL(g_k(y_i) || f_k(x_i; theta)), with K = 2: an ImageNet object network
and a Places scene network; the released model's conv8 has two outputs, 1000 object and 401
scene classes): ``teachers`` lists
:class:`TeacherHead` s, each a teacher file with its own ``n_classes``, conv8 head and loss
``weight``; loss = sum_k weight_k * KL(teacher_k || head_k). The one-teacher form (``teacher``
+ ``n_classes``, weight 1) stays and is what ``teachers: []`` (the default) means; the two are
exclusive. Every teacher sees the same frame: the batch holds it normalised for the first
head, and a head with another ``image_size`` / ``mean`` / ``std`` gets it re-normalised and
resized inside ``loss`` (no second copy of the frame in the batch).

The teachers are named in the config (:class:`tympan.methods.teacher.TeacherConfig`), loaded
lazily on the first ``loss`` call, kept frozen in eval mode, and are **not** registered
sub-modules: checkpoints (``payload()``) hold the student only, and ``load_method`` /
embedding never need the teacher files.

Batch (B = len(clips))::

    {"wave":  float32 [B, n]         # n = crop_s * 16000, centred on the chosen frame
     "frame": float32 [B, 3, S, S]}  # the frame, normalised with the first head's mean/std,
                                     # S = its image_size

A clip without frames is an error naming it; a clip shorter than the crop is loop-padded.
"""

from __future__ import annotations

import dataclasses
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
class TeacherHead(TeacherConfig):
    """One teacher of several: its file (the :class:`TeacherConfig` keys), its classes (the
    conv8 head's outputs) and its weight in the summed KL. ``name`` labels its metrics."""
    name: str = ""
    n_classes: int = 1000
    weight: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        check(self.n_classes >= 2, "n_classes", self.n_classes, "must be >= 2")
        check(self.weight >= 0, "weight", self.weight, "must be >= 0")


@dataclass
class SoundNetConfig:
    n_classes: int = 1000               # the teacher's classes (SoundNet: 1000 ImageNet)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    # Several teachers (the paper: ImageNet objects, 1000 + Places scenes, 401); empty = the
    # single ``teacher`` above with ``n_classes``.
    teachers: list[TeacherHead] = field(default_factory=list)
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
        if self.teachers:
            check(not self.teacher.configured, "teacher", self.teacher.path or self.teacher.arch,
                  "give either teacher (one) or teachers (several), not both")
            names = [h.name or str(i) for i, h in enumerate(self.teachers)]
            check(len(set(names)) == len(names), "teachers", names, "names must be unique")
            check(sum(h.weight for h in self.teachers) > 0, "teachers", [h.weight for h in self.teachers],
                  "at least one weight must be positive")

    @property
    def heads(self) -> list[TeacherHead]:
        """The teachers as heads: ``teachers``, or the one ``teacher`` with ``n_classes``."""
        if self.teachers:
            return list(self.teachers)
        return [TeacherHead(**dataclasses.asdict(self.teacher), n_classes=self.n_classes)]

    @property
    def head_names(self) -> list[str]:
        return [h.name or str(i) for i, h in enumerate(self.heads)]

    @property
    def crop_samples(self) -> int:
        return int(round(self.crop_s * 16000))


def sample_soundnet_views(cfg: SoundNetConfig, clips: Sequence[Clip],
                          rng: np.random.Generator) -> dict[str, np.ndarray]:
    first = cfg.heads[0]
    n, s = cfg.crop_samples, first.image_size
    mean = np.asarray(first.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(first.std, dtype=np.float32)[:, None, None]
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
        # conv8: one head per teacher (the paper's object and scene outputs)
        self.conv8 = nn.ModuleList(nn.Conv1d(c_in, h.n_classes, CONV8_KERNEL, 2, CONV8_PAD)
                                   for h in cfg.heads)
        self._embed_dim = self.layers[EMBED_LAYER - 1][0].out_channels
        object.__setattr__(self, "_teachers", None)              # not sub-modules: not saved

    @property
    def embedding_dim(self) -> int:
        return self._embed_dim

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints from before several teachers hold one conv8 (``conv8.weight``): head 0.
        for p in ("weight", "bias"):
            if f"{prefix}conv8.{p}" in state_dict:
                state_dict[f"{prefix}conv8.0.{p}"] = state_dict.pop(f"{prefix}conv8.{p}")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def teachers(self, device: torch.device) -> list[nn.Module]:
        """The frozen teachers (one per head), loaded on first use from the config."""
        if self._teachers is None:
            object.__setattr__(self, "_teachers", [load_teacher(h, h.n_classes) for h in self.cfg.heads])
        return [t.to(device) for t in self._teachers]

    def forward(self, wave: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``[B, n]`` -> (pool5 features ``[B, C5, T5]``, per head class logits
        ``[B, n_classes_k]``)."""
        h, feats = wave.unsqueeze(1), None                       # [B, 1, n]
        for i, layer in enumerate(self.layers, start=1):
            h = layer(h)
            if i == EMBED_LAYER:
                feats = h
        return feats, [head(h).mean(dim=-1) for head in self.conv8]   # averaged over time

    def _teacher_input(self, frame: Tensor, head: TeacherHead) -> Tensor:
        """The batch's frame (normalised for head 0) as ``head`` expects it."""
        first = self.cfg.heads[0]
        if (head.image_size, tuple(head.mean), tuple(head.std)) == (
                first.image_size, tuple(first.mean), tuple(first.std)):
            return frame
        m0, s0 = (frame.new_tensor(v)[:, None, None] for v in (first.mean, first.std))
        x = frame * s0 + m0                                      # back to [0, 1] RGB
        if head.image_size != first.image_size:
            x = F.interpolate(x, size=(head.image_size,) * 2, mode="bilinear", antialias=True)
        m, s = (frame.new_tensor(v)[:, None, None] for v in (head.mean, head.std))
        return (x - m) / s

    def loss(self, batch: dict[str, Tensor], dist: Dist = Dist()) -> tuple[Tensor, dict[str, float]]:
        frame = batch["frame"].float()
        heads, teachers = self.cfg.heads, self.teachers(frame.device)
        _, logits = self(batch["wave"].float())
        loss, metrics = 0.0, {}
        for name, head, teacher, out in zip(self.cfg.head_names, heads, teachers, logits):
            with torch.no_grad():
                t_logits = teacher(self._teacher_input(frame, head))
            kl = kl_teacher_student(t_logits, out, head.temperature)
            loss = loss + head.weight * kl
            agree = float((out.argmax(1) == t_logits.argmax(1)).float().mean())
            if len(heads) == 1:
                metrics["teacher_agreement"] = agree
            else:
                metrics[f"kl_{name}"] = float(kl.detach())
                metrics[f"teacher_agreement_{name}"] = agree
        return loss, metrics

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
