"""Acoustic degradations for synthesized clips: room reverb, coloured noise, length fitting.

Clean synthesizer output is far easier than the recordings the papers evaluate on (Speech
Commands was recorded on phones and laptops in ordinary rooms, Warden 2018, arXiv 1804.03209),
so synthesized speech gets a synthetic room and background noise. All functions are pure numpy
functions of their input and an RNG (deterministic for a seed). Arrays are float32 [n] at 16 kHz.
"""

from __future__ import annotations

import numpy as np

SR = 16000


def coloured_noise(rng: np.random.Generator, n: int, colour: str = "white") -> np.ndarray:
    """Unit-RMS noise with power spectrum 1/f^k: white k=0, pink k=1, brown k=2. float32 [n]."""
    k = {"white": 0.0, "pink": 1.0, "brown": 2.0}.get(colour)
    if k is None:
        raise ValueError(f"noise colour={colour!r} is not white/pink/brown")
    spec = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    f = np.arange(n // 2 + 1, dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spec / f ** (k / 2.0), n=n)
    x -= x.mean()
    return (x / (np.sqrt(np.mean(x ** 2)) + 1e-12)).astype(np.float32)


def add_noise(rng: np.random.Generator, x: np.ndarray, *, snr_db: float,
              colour: str = "white") -> np.ndarray:
    """x + noise scaled to ``snr_db`` relative to x's power over its non-silent part."""
    active = x[np.abs(x) > 0.01 * (np.max(np.abs(x)) + 1e-12)]
    p_sig = float(np.mean(active ** 2)) if active.size else float(np.mean(x ** 2))
    noise = coloured_noise(rng, x.size, colour) * np.sqrt(p_sig / 10 ** (snr_db / 10.0))
    return _limit(x + noise)


def room_impulse(rng: np.random.Generator, rt60_s: float) -> np.ndarray:
    """A diffuse-tail room impulse response: Gaussian noise under an exponential decay reaching
    -60 dB at ``rt60_s`` (Schroeder's statistical model of late reverberation), with the
    direct path as its first tap. float32 [~rt60_s * 16000], peak 1."""
    if not 0.01 <= rt60_s <= 5.0:
        raise ValueError(f"rt60_s={rt60_s} outside 0.01..5 s")
    n = int(rt60_s * SR)
    t = np.arange(n) / SR
    h = rng.standard_normal(n) * 10 ** (-3.0 * t / rt60_s)   # -60 dB at rt60
    h[0] = 0.0
    h /= np.sqrt(np.sum(h ** 2)) + 1e-12
    h[0] = 1.0
    return h.astype(np.float32)


def reverberate(rng: np.random.Generator, x: np.ndarray, *, rt60_s: float,
                wet: float = 0.4) -> np.ndarray:
    """Mix x (weight 1 - wet) with x convolved with a room impulse (weight wet); same length."""
    h = room_impulse(rng, rt60_s)
    h[0] = 0.0
    m = x.size + h.size - 1
    nfft = 1 << (m - 1).bit_length()
    tail = np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(h, nfft), nfft)[: x.size]
    y = (1.0 - wet) * x + wet * tail * (np.max(np.abs(x)) / (np.max(np.abs(tail)) + 1e-12))
    return _limit(y)


def fit_length(rng: np.random.Generator, x: np.ndarray, n: int) -> np.ndarray:
    """Place x at a random offset in n zeros (or crop a random n-sample window when longer)."""
    if x.size >= n:
        start = int(rng.integers(0, x.size - n + 1))
        return x[start:start + n].astype(np.float32)
    out = np.zeros(n, dtype=np.float32)
    start = int(rng.integers(0, n - x.size + 1))
    out[start:start + x.size] = x
    return out


def _limit(x: np.ndarray, peak: float = 0.99) -> np.ndarray:
    m = float(np.max(np.abs(x))) if x.size else 0.0
    return (x * (peak / m) if m > peak else x).astype(np.float32)
