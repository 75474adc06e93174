"""Front ends: log-mel (paper default), mel128/256, linear, MFCC, and fast third-octave levels.

Defaults follow Tagliasacchi et al. 2020 and Saeed et al. 2021 (COLA): 16 kHz mono, 25 ms
window (400 samples), 10 ms hop (160), FFT 512, magnitude, 64 mel bins from 60 to 7800 Hz,
natural log with a floor of 1e-5 ("clip at 1e-5 before the log", google-research/cola).

One implementation, two call sites: :class:`Frontend` is a torch module (runs on the training
device) and :meth:`Frontend.numpy` runs the same module on CPU numpy batches inside Ray Data
workers. Output is time-major, ``[..., T, F]``, with ``T = 1 + n_samples // hop_length``
(centred frames, reflect padding). ``kind="third-octave"`` gives the 29 band levels in dB
that acoustic sensor networks store, one frame per ``hop_length`` samples (125 ms in the
preset), ``T = n_samples // hop_length`` (see :mod:`tympan.datasets.thirdoctave`; computed on
CPU with numpy/scipy, not differentiable, like any fixed front end here).
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Iterator, Literal

import numpy as np
import torch
import torchaudio
from torch import nn

from tympan.config import check
from tympan.datasets.thirdoctave import N_BANDS, third_octave_levels


@dataclass(frozen=True)
class FrontendConfig:
    kind: Literal["mel", "linear", "mfcc", "third-octave"] = "mel"
    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 64
    f_min: float = 60.0
    f_max: float = 7800.0
    n_mfcc: int = 13
    power: float = 1.0          # 1 = magnitude, 2 = power
    log: bool = True
    log_floor: float = 1e-5

    def __post_init__(self):
        check(self.kind in ("mel", "linear", "mfcc", "third-octave"), "kind", self.kind,
              "must be mel, linear, mfcc or third-octave")
        for key in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "n_mfcc"):
            v = getattr(self, key)
            check(v > 0, key, v, "must be positive")
        if self.kind == "third-octave":
            return          # levels in dB over frames of hop_length samples; no FFT settings
        check(self.win_length <= self.n_fft, "win_length", self.win_length,
              f"window longer than n_fft={self.n_fft}")
        check(self.hop_length <= self.win_length, "hop_length", self.hop_length,
              f"hop longer than the window win_length={self.win_length} would skip samples")
        check(self.f_min >= 0, "f_min", self.f_min, "must be >= 0")
        check(self.f_max <= self.sample_rate / 2, "f_max", self.f_max,
              f"above the Nyquist frequency {self.sample_rate / 2} of sample_rate={self.sample_rate}")
        check(self.f_min < self.f_max, "f_min", self.f_min, f"must be below f_max={self.f_max}")
        check(self.power in (1.0, 2.0), "power", self.power, "must be 1 (magnitude) or 2 (power)")
        check(self.log_floor > 0, "log_floor", self.log_floor, "must be positive")
        if self.kind in ("mel", "mfcc"):
            check(self.n_mels <= self.n_fft // 2 + 1, "n_mels", self.n_mels,
                  f"more mel bins than the {self.n_fft // 2 + 1} FFT bins of n_fft={self.n_fft}")
        if self.kind == "mfcc":
            check(self.n_mfcc <= self.n_mels, "n_mfcc", self.n_mfcc,
                  f"more coefficients than n_mels={self.n_mels}")

    @property
    def n_features(self) -> int:
        """Size of the feature axis F."""
        return {"mel": self.n_mels, "linear": self.n_fft // 2 + 1, "mfcc": self.n_mfcc,
                "third-octave": N_BANDS}[self.kind]

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    def n_frames(self, n_samples: int) -> int:
        """Number of frames T for ``n_samples`` of audio (centred frames; third-octave: whole
        frames from the first sample)."""
        if self.kind == "third-octave":
            return n_samples // self.hop_length
        return 1 + n_samples // self.hop_length

    def n_samples(self, n_frames: int) -> int:
        """Smallest number of samples that yields ``n_frames`` frames."""
        if self.kind == "third-octave":
            return n_frames * self.hop_length
        return (n_frames - 1) * self.hop_length


# Named presets. The l3-* ones are the inputs of the "Look, listen and learn more" design study
# (Cramer et al. 2019), moved from 48 kHz to tympan's 16 kHz shards at the papers' *time*
# resolution: 1 s, hop 5 ms (L3: 242 samples at 48 kHz -> 80); linear: L3's 512-sample window at
# 48 kHz is 10.7 ms -> win_length 171, zero-padded to n_fft 512 (257 bins, as L3); mel128 /
# mel256: OpenL3's n_fft 2048 at 48 kHz is a 42.7 ms window -> win_length 683, zero-padded to
# n_fft 2048 (fine enough bins for 256 mel bands). Keeping the window in samples (512 / 2048)
# would give 32 ms / 128 ms windows at 16 kHz.
PRESETS: dict[str, FrontendConfig] = {
    "logmel64": FrontendConfig(),
    "mfcc13": FrontendConfig(kind="mfcc", n_mels=40, f_min=20.0, f_max=8000.0, power=2.0),
    # Fast third-octave levels as sensor networks store them: 29 bands, 125 ms frames.
    "third-octave": FrontendConfig(kind="third-octave", n_fft=2000, win_length=2000,
                                   hop_length=2000, f_min=20.0, f_max=8000.0),
    "l3-linear": FrontendConfig(kind="linear", n_fft=512, win_length=171, hop_length=80,
                                f_min=0.0, f_max=8000.0),
    "l3-mel128": FrontendConfig(n_fft=2048, win_length=683, hop_length=80, n_mels=128,
                                f_min=0.0, f_max=8000.0),
    "l3-mel256": FrontendConfig(n_fft=2048, win_length=683, hop_length=80, n_mels=256,
                                f_min=0.0, f_max=8000.0),
}


class Frontend(nn.Module):
    """Waveform ``[..., n]`` -> features ``[..., T, F]`` per :class:`FrontendConfig`."""

    def __init__(self, cfg: FrontendConfig = FrontendConfig()):
        super().__init__()
        self.cfg = cfg
        if cfg.kind == "third-octave":
            return
        self.spectrogram = torchaudio.transforms.Spectrogram(
            n_fft=cfg.n_fft, win_length=cfg.win_length, hop_length=cfg.hop_length,
            power=cfg.power, center=True, pad_mode="reflect")
        self.mel = None
        if cfg.kind in ("mel", "mfcc"):
            self.mel = torchaudio.transforms.MelScale(
                n_mels=cfg.n_mels, sample_rate=cfg.sample_rate, f_min=cfg.f_min, f_max=cfg.f_max,
                n_stft=cfg.n_fft // 2 + 1, norm=None, mel_scale="htk")
        if cfg.kind == "mfcc":
            # [n_mels, n_mfcc], orthonormal DCT-II as in torchaudio.transforms.MFCC
            self.register_buffer("dct", torchaudio.functional.create_dct(cfg.n_mfcc, cfg.n_mels, "ortho"),
                                 persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if self.cfg.kind == "third-octave":
            levels = third_octave_levels(wave.detach().cpu().numpy(), self.cfg.sample_rate,
                                         frame_s=self.cfg.hop_length / self.cfg.sample_rate)
            return torch.from_numpy(levels).to(wave.device)
        x = self.spectrogram(wave)                     # [..., F_stft, T]
        if self.mel is not None:
            x = self.mel(x)                            # [..., n_mels, T]
        if self.cfg.log or self.cfg.kind == "mfcc":
            x = torch.log(torch.clamp(x, min=self.cfg.log_floor))
        x = x.transpose(-1, -2)                        # [..., T, F]
        if self.cfg.kind == "mfcc":
            x = x @ self.dct                           # [..., T, n_mfcc]
        return x

    @torch.no_grad()
    def numpy(self, wave: np.ndarray) -> np.ndarray:
        """The same transform on a CPU numpy array (float32 in, float32 out)."""
        x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
        return self.forward(x).numpy()


_CACHE: dict[FrontendConfig, Frontend] = {}
# Set by :func:`deferred_frontend`: the list that records the waveforms given to the front end.
_DEFERRED: contextvars.ContextVar[list | None] = contextvars.ContextVar("tympan_deferred_frontend",
                                                                       default=None)


@contextlib.contextmanager
def deferred_frontend() -> Iterator[list[tuple[FrontendConfig, np.ndarray]]]:
    """Inside this block :func:`frontend_numpy` returns a float32 copy of its waveform input
    (the features are computed later, on the training device) and records ``(cfg, wave)`` in
    the yielded list. Used by the data pipeline's ``frontend="device"`` placement: a view
    sampler runs unchanged and ships waveform crops where it would ship features."""
    calls: list[tuple[FrontendConfig, np.ndarray]] = []
    token = _DEFERRED.set(calls)
    try:
        yield calls
    finally:
        _DEFERRED.reset(token)


def frontend_numpy(cfg: FrontendConfig, wave: np.ndarray) -> np.ndarray:
    """Apply the front end for ``cfg`` to a numpy waveform batch; modules are cached per config."""
    calls = _DEFERRED.get()
    if calls is not None:
        calls.append((cfg, wave))
        return np.array(wave, dtype=np.float32, copy=True)
    fe = _CACHE.get(cfg)
    if fe is None:
        fe = _CACHE[cfg] = Frontend(cfg).eval()
    return fe.numpy(wave)
