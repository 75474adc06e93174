"""Mixing and degradation helpers for the offline corpora: loop a bed, chain utterances, add
events (clips built from real recordings), and room reverb, coloured noise and length fitting
(synthesized clips).

Clean synthesizer output is far easier than the recordings the papers evaluate on (Speech
Commands was recorded on phones and laptops in ordinary rooms, Warden 2018, arXiv 1804.03209),
so synthesized speech gets a synthetic room and background noise.

All functions are pure numpy functions of their inputs and an RNG (deterministic for a seed);
audio is float32 [n] at 16 kHz.
"""

from __future__ import annotations

from typing import Sequence

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


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def loop_to(rng: np.random.Generator, x: np.ndarray, n: int, fade_s: float = 0.05) -> np.ndarray:
    """A bed of exactly ``n`` samples: ``x`` from a random start, repeated with short crossfades
    (ambience loops in games are made to repeat, so a loop is still the same place)."""
    if x.size == 0:
        raise ValueError("cannot loop an empty recording")
    start = int(rng.integers(0, x.size))
    x = np.concatenate([x[start:], x[:start]]).astype(np.float32)
    if x.size >= n:
        return x[:n].copy()
    f = min(int(fade_s * SR), x.size // 4)
    out = np.zeros(n + x.size, dtype=np.float32)
    pos = 0
    ramp = np.linspace(0.0, 1.0, f, dtype=np.float32) if f else np.zeros(0, np.float32)
    while pos < n:
        seg = x.copy()
        if f and pos > 0:
            seg[:f] *= ramp                                   # fade in over the previous tail
            out[pos - f:pos] *= ramp[::-1]
            out[pos - f:pos] += seg[:f]
            out[pos:pos + seg.size - f] = seg[f:]
            pos += seg.size - f
        else:
            out[pos:pos + seg.size] = seg
            pos += seg.size
    return out[:n]


def chain_to(rng: np.random.Generator, pieces: Sequence[np.ndarray], n: int,
             gap_s: tuple[float, float] = (0.1, 0.5)) -> tuple[np.ndarray, list[int]]:
    """Utterances one after another with random pauses until ``n`` samples are filled.

    Returns (audio [n], indices of the pieces used, in order); pieces are drawn at random."""
    out = np.zeros(n, dtype=np.float32)
    used: list[int] = []
    pos = int(rng.uniform(0, gap_s[1]) * SR)
    while pos < n:
        i = int(rng.integers(len(pieces)))
        p = pieces[i]
        k = min(p.size, n - pos)
        out[pos:pos + k] = p[:k]
        used.append(i)
        pos += p.size + int(rng.uniform(*gap_s) * SR)
    return out, used


# A random n-sample window of x, or x at a random offset in silence (one implementation).
crop_to = fit_length


def add_event(rng: np.random.Generator, bed: np.ndarray, event: np.ndarray, snr_db: float) -> np.ndarray:
    """``event`` added at a random offset inside ``bed`` at ``snr_db`` relative to the bed's RMS."""
    ev = event[: bed.size]
    active = ev[np.abs(ev) > 0.05 * (np.max(np.abs(ev)) + 1e-12)]
    scale = (rms(bed) + 1e-4) * 10 ** (snr_db / 20) / (rms(active) + 1e-9)
    out = bed.copy()
    s = int(rng.integers(0, bed.size - ev.size + 1))
    out[s:s + ev.size] += scale * ev
    return out


def normalise(rng: np.random.Generator, x: np.ndarray, db: tuple[float, float] = (-30.0, -14.0)) -> np.ndarray:
    """Scale to a random RMS level in ``db`` dBFS (recordings differ by 30 dB; a classifier should
    not learn the loudness of a package), then keep the peak under 0.99."""
    target = 10 ** (rng.uniform(*db) / 20)
    y = x * (target / (rms(x) + 1e-9))
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    return (y * (0.99 / peak) if peak > 0.99 else y).astype(np.float32)
