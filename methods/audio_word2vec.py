"""Audio Word2Vec: an LSTM sequence autoencoder on MFCC segments.

Chung, Wu, Shen, Lee & Lee, "Audio Word2Vec: Unsupervised Learning of Audio Segment
Representations using Sequence-to-sequence Autoencoder", Interspeech 2016 (arXiv 1603.00982).
"The RNN encoder reads the acoustic feature sequence x1..xT of an audio segment; its last
hidden state is the representation z; the RNN decoder, taking z, reconstructs the input
sequence", trained by MSE. The denoising variant (DSA) corrupts the input and reconstructs
the clean sequence. The paper's corruption is masking noise on the *elements* of the input
(each MFCC coefficient of each frame independently set to zero with some probability, the
denoising-autoencoder corruption of Vincent et al. 2008): ``mask_unit: element`` (default)
with ``mask_prob`` the probability; ``mask_unit: frame`` zeroes whole frames instead (the
earlier variant). ``mask_prob`` 0 = plain SA. Masking applies to the standardised features,
so a masked element takes the feature's running mean.

**Segments.** Chung et al. train on word segments (LibriSpeech words cut at the boundaries of
a forced alignment). ``segments: words`` does that where a corpus records word boundaries:
``clip.meta["word_alignment"] = [[word, start_s, end_s], ...]`` (the offline keyword corpus
records its one word's span, datasets/offline/synth_tasks.py); each example is one word of its
clip drawn at random, cut at its boundaries (capped at ``max_s``; a clip without an alignment
is an error naming it). ``segments: random`` (default, for corpora without boundaries, which
is most of them): a random crop of U(min_s, max_s) seconds.

Inputs are 13 MFCCs (``PRESETS["mfcc13"]``) of variable-length, word-sized segments. Segments
are packed (``pack_padded_sequence``) so padding never enters the LSTMs; features are
standardised by running mean/variance over valid frames (a masked batch norm, like global
CMVN; it is part of the model, so checkpoints carry it). The decoder LSTM starts from the
encoder's final state and reads z at every step (the paper's decoder is conditioned on z).

Batch (B = len(clips); fixed shapes, lengths say what is real)::

    {"mfcc":    float32 [B, Tmax, 13]   # Tmax = frames of max_s; frames >= length are 0
     "lengths": int64   [B]}            # valid frames, frames of the segment (a U(min_s, max_s)
                                        # crop, or one aligned word capped at max_s)

A clip shorter than its segment is loop-padded (repeated) to the segment length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from tympan.config import check
from tympan.datasets.clip import Clip
from tympan.datasets.frontend import PRESETS, Frontend, FrontendConfig, frontend_numpy
from tympan.methods.base import Method, OptimConfig
from tympan.methods.dist import Dist
from tympan.methods.l3 import crop_at, sliding_windows
from tympan.methods.losses import masked_mse


@dataclass
class AudioWord2VecConfig:
    frontend: FrontendConfig = field(default_factory=lambda: PRESETS["mfcc13"])
    min_s: float = 0.3                 # word-sized segments (Chung et al. use word segments)
    max_s: float = 1.0
    hidden: int = 100                  # representation size ("~100-d", unverified)
    layers: int = 1
    mask_prob: float = 0.0             # denoising variant: probability that an input is masked
    mask_unit: Literal["element", "frame"] = "element"     # what is masked (paper: elements)
    segments: Literal["random", "words"] = "random"        # words: meta["word_alignment"]
    embed_hop_s: float = 0.25          # hop of the max_s windows for timestamp embeddings
    batch_size: int = 64
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3))   # unverified

    def __post_init__(self):
        check(self.frontend.kind == "mfcc", "frontend.kind", self.frontend.kind,
              "Audio Word2Vec reads MFCCs (use PRESETS['mfcc13'])")
        check(0 < self.min_s <= self.max_s, "min_s", self.min_s, f"must be in (0, max_s={self.max_s}]")
        check(self.hidden > 0, "hidden", self.hidden, "must be positive")
        check(self.layers >= 1, "layers", self.layers, "must be >= 1")
        check(0 <= self.mask_prob < 1, "mask_prob", self.mask_prob, "must be in [0, 1)")
        check(self.mask_unit in ("element", "frame"), "mask_unit", self.mask_unit,
              "must be 'element' (the paper) or 'frame'")
        check(self.segments in ("random", "words"), "segments", self.segments,
              "must be 'random' (crops) or 'words' (meta['word_alignment'])")
        check(self.embed_hop_s > 0, "embed_hop_s", self.embed_hop_s, "must be positive")

    def samples(self, seconds: float) -> int:
        return int(round(seconds * self.frontend.sample_rate))

    @property
    def max_frames(self) -> int:
        return self.frontend.n_frames(self.samples(self.max_s))


def word_segment(cfg: AudioWord2VecConfig, clip: Clip, rng: np.random.Generator) -> tuple[int, int]:
    """(start, n) in samples of one word of ``clip``'s ``meta["word_alignment"]``, drawn at
    random, capped at ``max_s`` (at least one hop, so a word gives >= 1 frame)."""
    words = clip.meta.get("word_alignment")
    if not words:
        raise ValueError(f"audio-word2vec segments=words: clip {clip.clip_id!r} has no "
                         f"meta['word_alignment'] ([[word, start_s, end_s], ...])")
    item = words[int(rng.integers(len(words)))]
    try:
        _, start_s, end_s = item
        start_s, end_s = float(start_s), float(end_s)
    except (TypeError, ValueError):
        raise ValueError(f"clip {clip.clip_id!r}: word_alignment item {item!r} is not "
                         f"[word, start_s, end_s]") from None
    if not (0 <= start_s < end_s):
        raise ValueError(f"clip {clip.clip_id!r}: word_alignment item {item!r} needs "
                         f"0 <= start_s < end_s")
    start = cfg.samples(start_s)
    n = min(max(cfg.samples(end_s) - start, cfg.frontend.hop_length), cfg.samples(cfg.max_s))
    return start, n


def sample_word2vec_views(cfg: AudioWord2VecConfig, clips: Sequence[Clip],
                          rng: np.random.Generator) -> dict[str, np.ndarray]:
    n_max = cfg.samples(cfg.max_s)
    crops = np.zeros((len(clips), n_max), dtype=np.float32)
    lengths = np.empty(len(clips), dtype=np.int64)
    for i, clip in enumerate(clips):
        audio = np.asarray(clip.audio, dtype=np.float32)
        if cfg.segments == "words":
            start, n = word_segment(cfg, clip, rng)
        else:
            n = cfg.samples(rng.uniform(cfg.min_s, cfg.max_s))
            start = int(rng.integers(max(len(audio) - n, 0) + 1))
        crops[i, :n] = crop_at(audio, start, n)
        lengths[i] = cfg.frontend.n_frames(n)
    mfcc = frontend_numpy(cfg.frontend, crops)                          # [B, Tmax, 13]
    mfcc[np.arange(mfcc.shape[1])[None, :] >= lengths[:, None]] = 0.0  # padding frames
    return {"mfcc": mfcc, "lengths": lengths}


class MaskedFeatureNorm(nn.Module):
    """Per-feature standardisation with running statistics over valid frames only."""

    def __init__(self, n: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``x [B, T, n]``, ``mask [B, T]`` bool -> standardised ``x``, 0 where ``mask`` is off."""
        m = mask.unsqueeze(-1).to(x.dtype)
        if self.training:
            count = m.sum().clamp_min(1.0)
            mean = (x * m).sum((0, 1)) / count
            var = ((x - mean).pow(2) * m).sum((0, 1)) / count
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach(), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean) / torch.sqrt(var + self.eps) * m


class AudioWord2Vec(Method):
    name = "audio-word2vec"
    config_cls = AudioWord2VecConfig
    sample_views = staticmethod(sample_word2vec_views)

    def __init__(self, cfg: AudioWord2VecConfig | None = None):
        super().__init__(cfg)
        cfg = self.cfg
        n_feat, h = cfg.frontend.n_features, cfg.hidden
        self.frontend = Frontend(cfg.frontend)
        self.norm = MaskedFeatureNorm(n_feat)
        self.encoder = nn.LSTM(n_feat, h, cfg.layers, batch_first=True)
        self.decoder = nn.LSTM(h, h, cfg.layers, batch_first=True)
        self.out = nn.Linear(h, n_feat)

    @property
    def embedding_dim(self) -> int:
        return self.cfg.hidden

    def encode(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Standardised ``[B, T, 13]`` + lengths ``[B]`` -> (z ``[B, H]``, LSTM state)."""
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h, c) = self.encoder(packed)                                 # h, c: [layers, B, H]
        return h[-1], (h, c)

    def decode(self, z: Tensor, state: tuple[Tensor, Tensor], lengths: Tensor, t: int) -> Tensor:
        """z ``[B, H]`` -> reconstruction ``[B, t, 13]`` (zeros past each length)."""
        inp = z.unsqueeze(1).expand(-1, t, -1)                           # [B, t, H]
        packed = pack_padded_sequence(inp, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.decoder(packed, state)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=t)   # [B, t, H]
        return self.out(out)

    def loss(self, batch: dict[str, Tensor], dist: Dist = Dist()) -> tuple[Tensor, dict[str, float]]:
        x, lengths = batch["mfcc"].float(), batch["lengths"].long()
        mask = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]   # [B, T]
        target = self.norm(x, mask)
        inp = target
        if self.training and self.cfg.mask_prob > 0:                     # denoising variant
            shape = x.shape if self.cfg.mask_unit == "element" else (*mask.shape, 1)
            keep = torch.rand(shape, device=x.device) >= self.cfg.mask_prob   # [B, T, 13 or 1]
            inp = target * keep
        z, state = self.encode(inp, lengths)
        recon = self.decode(z, state, lengths, x.shape[1])
        loss = masked_mse(recon, target.detach(), mask.unsqueeze(-1))
        return loss, {}

    @torch.no_grad()
    def embed_frames(self, wave: Tensor) -> tuple[Tensor, Tensor]:
        """``[B, n]`` -> (z of max_s windows every embed_hop_s ``[B, W, H]``, centres ms ``[B, W]``)."""
        cfg = self.cfg
        win, hop = cfg.samples(cfg.max_s), max(1, cfg.samples(cfg.embed_hop_s))
        windows, times = sliding_windows(wave.float(), win, hop, cfg.frontend.sample_rate)
        b, w = windows.shape[:2]
        x = self.frontend(windows.reshape(b * w, win))                   # [B*W, Tmax, 13]
        lengths = torch.full((b * w,), x.shape[1], dtype=torch.long)
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        was_training = self.norm.training
        self.norm.eval()                                                 # running stats only
        z, _ = self.encode(self.norm(x, mask), lengths)
        self.norm.train(was_training)
        return z.reshape(b, w, -1), times.expand(b, w)
