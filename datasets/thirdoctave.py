"""Fast third-octave band levels: the representation acoustic sensor networks store.

Sensors such as the CENSE network of Lorient never keep audio (privacy): each computes 29
third-octave band levels from 20 Hz to 12.5 kHz, in dB, one frame every 125 ms ("fast"),
and stores the frames as timestamped CSV rows (Gontier et al., "An efficient audio coding
scheme for quantitative and qualitative large scale acoustic monitoring using the sensor grid
approach", Sensors 2017). This module computes the same from a waveform, so methods can
pretrain on audio in the sensors' representation and encoders transfer to sensor data.

Filter design (IEC 61260-1 base-10 bands, the usual digital filter-bank construction):

- centre frequencies ``fm = 1000 * G**(k/3)`` with ``G = 10**0.3``, k = -17..11 (nominal
  20, 25, 31.5, ..., 10k, 12.5k Hz); band edges ``fm * G**(-1/6)`` and ``fm * G**(1/6)``;
- each band is a 6th-order Butterworth band-pass (``butter(3, [f1, f2])``, second-order
  sections), run at a decimated rate: the signal is halved (zero-phase FIR anti-alias filter)
  while the Nyquist frequency stays above 8 times the band's upper edge, which keeps the
  narrow low bands numerically sound and makes the bank cheap (~200x real time at 16 kHz);
- a frame's level is the energy average (Leq) of the band output over 125 ms, in dB:
  ``ref_db + 10 log10(mean(y**2) / 0.5)``, so a digital sine of amplitude 1 at a band centre
  reads ``ref_db`` (default 94 dB, the level of a 1 Pa calibrator tone) in that band;
- a band that reaches past the Nyquist frequency is measured up to it (high-pass from its
  lower edge: a partial band), a band entirely above it reads ``floor_db``; every level is
  at least ``floor_db`` (digital silence has no level). At tympan's 16 kHz the 10 kHz and
  12.5 kHz bands are therefore at the floor and the 8 kHz band holds 7.1-8 kHz only: decode
  at 32 kHz (as the sensors sample) for all 29 bands.

Accuracy (tests/datasets/test_thirdoctave.py): a steady tone at a band centre reads its
known level within 0.1 dB in that band and at least 15 dB less in each neighbour (the
Butterworth skirt is ~18 dB down one third-octave away).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import signal

G = 10.0 ** 0.3
BAND_INDEX = np.arange(-17, 12)                       # 29 bands
CENTRES_HZ = 1000.0 * G ** (BAND_INDEX / 3.0)         # exact base-10 centres
NOMINAL_HZ = (20, 25, 31.5, 40, 50, 63, 80, 100, 125, 160, 200, 250, 315, 400, 500, 630, 800,
              1000, 1250, 1600, 2000, 2500, 3150, 4000, 5000, 6300, 8000, 10000, 12500)
FRAME_S = 0.125
N_BANDS = len(CENTRES_HZ)


def band_edges(i: int) -> tuple[float, float]:
    fm = CENTRES_HZ[i]
    return fm * G ** (-1 / 6), fm * G ** (1 / 6)


@lru_cache(maxsize=None)
def _plan(sample_rate: int, hop: int) -> tuple[tuple[int, int, np.ndarray | None], ...]:
    """Per band: (decimation factor, band index, SOS filter or None for 'above Nyquist')."""
    nyq = sample_rate / 2
    plan = []
    for i in range(N_BANDS):
        f1, f2 = band_edges(i)
        if f1 >= 0.98 * nyq:
            plan.append((1, i, None))
            continue
        d = 1
        while sample_rate / (4 * d) > 8 * f2 and hop % (2 * d) == 0:
            d *= 2
        fs = sample_rate / d
        if f2 < 0.98 * fs / 2:
            sos = signal.butter(3, [f1, f2], btype="bandpass", fs=fs, output="sos")
        else:       # partial band: everything from the lower edge up to the Nyquist frequency
            sos = signal.butter(6, f1, btype="highpass", fs=fs, output="sos")
        plan.append((d, i, sos))
    return tuple(plan)


def third_octave_levels(wave: np.ndarray, sample_rate: int = 16000, *, ref_db: float = 94.0,
                        floor_db: float = 0.0, frame_s: float = FRAME_S) -> np.ndarray:
    """Waveform ``[..., n]`` -> band levels ``[..., T, 29]`` in dB, T = n // (frame_s * rate).

    Frames are consecutive, non-overlapping ``frame_s`` windows from the first sample; a
    trailing partial frame is dropped (as a sensor does not report an unfinished frame)."""
    x = np.asarray(wave, dtype=np.float64)
    hop = int(round(frame_s * sample_rate))
    if abs(hop - frame_s * sample_rate) > 1e-6:
        raise ValueError(f"frame of {frame_s} s is not a whole number of samples at {sample_rate} Hz")
    lead, n = x.shape[:-1], x.shape[-1]
    x = x.reshape(-1, n)
    t = n // hop
    out = np.full((x.shape[0], t, N_BANDS), floor_db, dtype=np.float64)
    if t == 0:
        return out.reshape(*lead, 0, N_BANDS).astype(np.float32)
    pyramid = {1: x}
    floor_power = 0.5 * 10 ** ((floor_db - ref_db) / 10)
    for d, i, sos in _plan(sample_rate, hop):
        if sos is None:
            continue
        k = 1
        while k < d:        # halve step by step: each level of the pyramid is computed once
            if 2 * k not in pyramid:
                pyramid[2 * k] = signal.decimate(pyramid[k], 2, ftype="fir", zero_phase=True, axis=-1)
            k *= 2
        y = signal.sosfilt(sos, pyramid[d], axis=-1)
        h = hop // d
        power = (y[:, :t * h] ** 2).reshape(-1, t, h).mean(-1)                 # [B, T]
        out[:, :, i] = ref_db + 10 * np.log10(np.maximum(power, floor_power) / 0.5)
    return out.reshape(*lead, t, N_BANDS).astype(np.float32)
