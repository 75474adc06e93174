"""L3: audio-visual correspondence ("Look, Listen and Learn").

Arandjelovic & Zisserman, "Look, Listen and Learn", ICCV 2017; Cramer, Wu, Salamon & Bello,
"Look, listen and learn more: design choices for deep audio embeddings", ICASSP 2019 (OpenL3,
code marl/l3embedding). The pretext task: "given a video frame and a short audio clip, decide
whether they correspond" - half the pairs are taken from the same moment of one video, half
pair the audio with a frame of another video.

* audio tower and vision tower: 4 blocks of 2 x (conv 3x3, BN, ReLU), channels 64/128/256/512,
  2x2 max-pool after blocks 1-3, global max-pool -> 512-d each (the audio one is the embedding);
* fusion: concat -> dense 128, ReLU -> dense 2, cross-entropy (correspond / not);
* augmentation as l3embedding: audio gain +-10 %, horizontal flip, saturation x U(0.5, 1.5),
  brightness +- 32/255 (saturation and brightness in random order);
* ``audio_input`` selects the design-study input (linear / mel128 / mel256, 1 s, hop 5 ms; see
  :data:`tympan.datasets.frontend.PRESETS`); Cramer et al. found mel256 best, so it is the default.
  The presets keep the papers' window *durations* at 16 kHz: L3's 512 samples at 48 kHz =
  10.7 ms -> 171 samples, OpenL3's 2048 at 48 kHz = 42.7 ms -> 683 samples, zero-padded to the
  papers' FFT sizes 512 / 2048 (keeping the sample counts would give 32 ms / 128 ms windows).
* evaluation embedding (``embed_pool``): ``grid`` (the paper's, the default) max-pools the audio tower's last
  conv block to a ``embed_grid`` = 3 (time) x 4 (frequency) grid and flattens it: 512 x 12 =
  6144-d, OpenL3's "original" pooling (Cramer et al. 2019; marl/openl3, whose last pool turns
  the 1-s mel256 map of 24 x 32 into 3 x 4), the embedding behind the published downstream
  figures. ``global`` is the global max-pool (512-d) the fusion layer sees in training.
* weight decay (marl/l3embedding: ``kernel_regularizer=l2(1e-5)`` on every conv kernel):
  ``conv_l2`` x the sum of the squared conv kernels is added to the loss (l3embedding's value
  1e-5; default 0 until the learning test is re-measured with it).

Batch (B = len(clips) >= 2)::

    {"audio": float32 [B, T, F]      # log spectrogram of a crop_s crop, T = 1 + n // hop
     "frame": float32 [B, 3, S, S]   # RGB in [-1, 1], S = image_size
     "match": int64   [B]}           # 1 = frame and audio from the same moment of one clip

Audio/crop rule (shared by tympan's methods here): a crop that runs past the clip is shifted
back inside it; a clip shorter than the crop is loop-padded (repeated) to the crop length.
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
from tympan.datasets.frontend import PRESETS, Frontend, FrontendConfig, frontend_numpy
from tympan.methods.base import Method, OptimConfig, loop_pad
from tympan.methods.dist import Dist


# ---- audio helpers (numpy for samplers, torch for embedding; loop_pad is base's rule) --------
def crop_at(audio: np.ndarray, start: int, n: int) -> np.ndarray:
    """``n`` samples from ``start``, shifted back inside the clip; loop-padded when too short."""
    audio = loop_pad(audio, n)
    start = int(np.clip(start, 0, len(audio) - n))
    return audio[start:start + n]


def sliding_windows(wave: Tensor, win: int, hop: int, sample_rate: int = 16000) -> tuple[Tensor, Tensor]:
    """``wave [B, n]`` -> (windows ``[B, W, win]``, centre times in ms ``[W]``).

    ``W = 1 + (n - win) // hop``; a wave shorter than one window is loop-padded to ``win``."""
    if wave.shape[-1] < win:
        reps = -(-win // max(wave.shape[-1], 1))
        wave = wave.repeat(1, reps)[:, :win] if wave.shape[-1] else wave.new_zeros(wave.shape[0], win)
    windows = wave.unfold(-1, win, hop)                               # [B, W, win]
    starts = torch.arange(windows.shape[1], device=wave.device) * hop
    return windows, (starts + win / 2) * 1000.0 / sample_rate


def resize_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> float32 ``[3, size, size]`` in [0, 1]: centre square crop, then
    antialiased bilinear resize (OpenL3 feeds square 224 x 224 frames)."""
    h, w = frame.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    x = torch.from_numpy(np.ascontiguousarray(frame[top:top + s, left:left + s]))
    x = x.permute(2, 0, 1)[None].float() / 255.0                       # [1, 3, s, s]
    if s != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x[0].clamp_(0.0, 1.0).numpy()


# ---- config ------------------------------------------------------------------------------------
@dataclass
class L3Config:
    audio_input: Literal["linear", "mel128", "mel256"] = "mel256"
    crop_s: float = 1.0                 # L3: 1 s of audio per pair
    image_size: int = 224               # L3: 224 x 224 frames
    width: float = 1.0                  # channel multiplier on 64/128/256/512 (1 = paper)
    fusion_dim: int = 128               # L3 fusion: dense 128 -> dense 2
    mismatch_frac: float = 0.5          # L3: half the pairs do not correspond
    gain: float = 0.1                   # audio gain U(1 - gain, 1 + gain) (l3embedding)
    flip_prob: float = 0.5
    saturation: float = 0.5             # saturation factor U(1 - s, 1 + s) (l3embedding)
    brightness: float = 32.0 / 255.0    # additive delta U(-b, b) on [0, 1] images (l3embedding)
    embed_hop_s: float = 0.1            # OpenL3's default hop for timestamp embeddings
    embed_pool: Literal["grid", "global"] = "grid"     # OpenL3 "original" (paper); "global": 512-d
    embed_grid: tuple[int, int] = (3, 4)             # (time, frequency) cells: 512 x 12 = 6144
    conv_l2: float = 0.0                # l3embedding: 1e-5 on conv kernels, added to the loss
    batch_size: int = 64                # l3embedding
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-5))   # l3embedding Adam

    def __post_init__(self):
        check(self.audio_input in ("linear", "mel128", "mel256"), "audio_input", self.audio_input,
              "must be one of ['linear', 'mel128', 'mel256']")
        check(self.crop_s > 0, "crop_s", self.crop_s, "must be positive")
        check(self.image_size >= 16, "image_size", self.image_size,
              "must be >= 16 (three 2x2 pools need room)")
        check(self.width > 0, "width", self.width, "must be positive")
        check(self.fusion_dim > 0, "fusion_dim", self.fusion_dim, "must be positive")
        check(0 < self.mismatch_frac < 1, "mismatch_frac", self.mismatch_frac, "must be in (0, 1)")
        check(0 <= self.gain < 1, "gain", self.gain, "must be in [0, 1)")
        check(0 <= self.flip_prob <= 1, "flip_prob", self.flip_prob, "must be in [0, 1]")
        check(0 <= self.saturation < 1, "saturation", self.saturation, "must be in [0, 1)")
        check(0 <= self.brightness <= 1, "brightness", self.brightness, "must be in [0, 1]")
        check(self.embed_hop_s > 0, "embed_hop_s", self.embed_hop_s, "must be positive")
        check(self.embed_pool in ("grid", "global"), "embed_pool", self.embed_pool,
              "must be grid (OpenL3 original) or global")
        check(len(self.embed_grid) == 2 and min(self.embed_grid) >= 1, "embed_grid",
              self.embed_grid, "must be two positive cell counts (time, frequency)")
        check(self.conv_l2 >= 0, "conv_l2", self.conv_l2, "must be >= 0")
        check(self.batch_size >= 2, "batch_size", self.batch_size,
              "must be >= 2 (mismatched frames come from other clips of the batch)")
        # The tower pools 2x2 three times: the spectrogram needs >= 8 frames.
        check(self.frontend.n_frames(self.crop_samples) >= 8, "crop_s", self.crop_s,
              "too short: the audio tower needs at least 8 spectrogram frames")

    @property
    def frontend(self) -> FrontendConfig:
        return PRESETS[f"l3-{self.audio_input}"]

    @property
    def crop_samples(self) -> int:
        return int(round(self.crop_s * self.frontend.sample_rate))


# ---- view sampler ------------------------------------------------------------------------------
def _augment_image(img: np.ndarray, cfg: L3Config, rng: np.random.Generator) -> np.ndarray:
    """float32 [3, S, S] in [0, 1] -> augmented, same range (l3embedding's recipe)."""
    if rng.random() < cfg.flip_prob:
        img = img[:, :, ::-1]
    sat = rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)
    delta = rng.uniform(-cfg.brightness, cfg.brightness)

    def saturate(x):
        # HSV saturation x sat with hue and value kept: each channel moves away from / toward
        # the pixel's max channel (V) linearly.
        v = x.max(axis=0, keepdims=True)
        return np.clip(v - (v - x) * sat, 0.0, v)

    def brighten(x):
        return np.clip(x + delta, 0.0, 1.0)

    first, second = (saturate, brighten) if rng.random() < 0.5 else (brighten, saturate)
    return second(first(img))


def _pick_frame(clip: Clip, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A random frame of ``clip`` and its time in seconds."""
    if clip.frames is None or len(clip.frames) == 0:
        raise ValueError(f"l3: clip {clip.clip_id!r} has no video frames; L3 needs audio-visual "
                         "clips (shards written with frames)")
    k = int(rng.integers(len(clip.frames)))
    if clip.frame_times is not None and len(clip.frame_times) == len(clip.frames):
        t = float(clip.frame_times[k])
    else:   # no timestamps: assume frames spread evenly over the clip
        t = (k + 0.5) * clip.duration_s / len(clip.frames)
    return clip.frames[k], t


def sample_l3_views(cfg: L3Config, clips: Sequence[Clip], rng: np.random.Generator) -> dict[str, np.ndarray]:
    b = len(clips)
    if b < 2:
        raise ValueError(f"l3: a batch needs >= 2 clips to draw mismatched frames, got {b}")
    n = cfg.crop_samples
    n_mismatch = int(round(b * cfg.mismatch_frac))
    match = np.ones(b, dtype=np.int64)
    match[rng.permutation(b)[:n_mismatch]] = 0
    crops = np.empty((b, n), dtype=np.float32)
    frames = np.empty((b, 3, cfg.image_size, cfg.image_size), dtype=np.float32)
    for i, clip in enumerate(clips):
        frame, t = _pick_frame(clip, rng)
        # The frame lies at a uniformly random point inside the audio crop (l3embedding draws
        # the frame from within the second of audio), so 1-fps frames still see varied crops.
        start = int(round(t * clip.sample_rate)) - int(rng.integers(n))
        crop = crop_at(np.asarray(clip.audio, dtype=np.float32), start, n)
        crops[i] = crop * rng.uniform(1 - cfg.gain, 1 + cfg.gain)
        if not match[i]:
            j = int(rng.integers(b - 1))
            frame, _ = _pick_frame(clips[j + (j >= i)], rng)           # any clip but i
        frames[i] = _augment_image(resize_frame(frame, cfg.image_size), cfg, rng)
    return {"audio": frontend_numpy(cfg.frontend, crops),              # [B, T, F]
            "frame": frames * 2.0 - 1.0,                               # [B, 3, S, S] in [-1, 1]
            "match": match}


# ---- model -------------------------------------------------------------------------------------
def l3_tower(in_channels: int, width: float) -> nn.Sequential:
    """L3's conv tower: ``[B, C, H, W]`` -> ``[B, 512 * width]`` (global max pool). ``tower[:-2]``
    is the conv stack alone (its last block's map, before the pool)."""
    layers: list[nn.Module] = []
    c_in = in_channels
    for block, c in enumerate((64, 128, 256, 512)):
        c = max(1, int(round(c * width)))
        for _ in range(2):
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
        if block < 3:
            layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


class L3(Method):
    name = "l3"
    config_cls = L3Config
    sample_views = staticmethod(sample_l3_views)

    def __init__(self, cfg: L3Config | None = None):
        super().__init__(cfg)
        cfg = self.cfg
        self.frontend = Frontend(cfg.frontend)
        # OpenL3 batch-normalises the input spectrogram: linear and mel inputs differ in scale.
        self.audio_norm = nn.BatchNorm2d(1)
        self.audio_tower = l3_tower(1, cfg.width)
        self.vision_tower = l3_tower(3, cfg.width)
        d = self.tower_dim
        self.fusion = nn.Sequential(nn.Linear(2 * d, cfg.fusion_dim), nn.ReLU(inplace=True),
                                    nn.Linear(cfg.fusion_dim, 2))

    @property
    def tower_dim(self) -> int:
        """Channels of the towers' last block (512 at width 1): what the fusion layer sees."""
        return max(1, int(round(512 * self.cfg.width)))

    @property
    def embedding_dim(self) -> int:
        """Size of the evaluation embedding: tower_dim x grid cells (``grid``) or tower_dim."""
        t, f = self.cfg.embed_grid
        return self.tower_dim * (t * f if self.cfg.embed_pool == "grid" else 1)

    def encode_audio(self, spec: Tensor) -> Tensor:
        """``[B, T, F]`` log spectrogram -> ``[B, tower_dim]`` (global max pool, as in training)."""
        return self.audio_tower(self.audio_norm(spec.unsqueeze(1)))

    def embed_audio(self, spec: Tensor) -> Tensor:
        """``[B, T, F]`` -> the evaluation embedding ``[B, embedding_dim]``: the last block's map
        max-pooled to ``embed_grid`` and flattened channel-major (``grid``), or ``encode_audio``."""
        if self.cfg.embed_pool == "global":
            return self.encode_audio(spec)
        fmap = self.audio_tower[:-2](self.audio_norm(spec.unsqueeze(1)))   # [B, C, T', F']
        return F.adaptive_max_pool2d(fmap, self.cfg.embed_grid).flatten(1)

    def logits(self, audio: Tensor, frame: Tensor) -> Tensor:
        """``[B, T, F]`` + ``[B, 3, S, S]`` -> correspondence logits ``[B, 2]``."""
        return self.fusion(torch.cat([self.encode_audio(audio), self.vision_tower(frame)], dim=1))

    def loss(self, batch: dict[str, Tensor], dist: Dist = Dist()) -> tuple[Tensor, dict[str, float]]:
        logits = self.logits(batch["audio"].float(), batch["frame"].float())
        target = batch["match"].long()
        loss = F.cross_entropy(logits, target)
        acc = (logits.argmax(1) == target).float().mean()
        if self.cfg.conv_l2 > 0:
            loss = loss + self.cfg.conv_l2 * sum((m.weight ** 2).sum() for m in self.modules()
                                                 if isinstance(m, nn.Conv2d))
        return loss, {"accuracy": float(acc.detach())}

    @torch.no_grad()
    def embed_frames(self, wave: Tensor, chunk: int = 64) -> tuple[Tensor, Tensor]:
        """``[B, n]`` -> (``[B, W, D]`` evaluation embeddings (``embed_audio``) of crop_s windows
        every embed_hop_s, centre times ms ``[B, W]``); windows run in chunks to bound memory."""
        win = self.cfg.crop_samples
        hop = max(1, int(round(self.cfg.embed_hop_s * self.cfg.frontend.sample_rate)))
        windows, times = sliding_windows(wave.float(), win, hop, self.cfg.frontend.sample_rate)
        b, w = windows.shape[:2]
        flat = windows.reshape(b * w, win)
        out = torch.cat([self.embed_audio(self.frontend(flat[i:i + chunk]))
                         for i in range(0, b * w, chunk)])
        return out.reshape(b, w, -1), times.expand(b, w)
