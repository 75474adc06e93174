"""Mixing helpers for clips built from real recordings: loop a bed, chain utterances, add events.

Pure numpy functions of their inputs and an RNG (deterministic for a seed); audio is float32 [n]
at 16 kHz. The room and noise degradations live in :mod:`offline_synth_mix`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tympan.datasets.offline_synth_mix import fit_length

SR = 16000


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
