"""Fast third-octave levels against closed-form references: tones at band centres, white noise
(+1 dB per band), silence, framing, and the front-end integration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tympan.datasets.frontend import PRESETS, Frontend, frontend_numpy
from tympan.datasets.thirdoctave import CENTRES_HZ, N_BANDS, NOMINAL_HZ, third_octave_levels


def tone(freq: float, amp: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_centres_are_the_iec_base10_series():
    assert N_BANDS == 29 and len(NOMINAL_HZ) == 29
    # IEC 61260-1 nominal values round the exact base-10 centres to within 3 %
    assert np.all(np.abs(CENTRES_HZ / np.array(NOMINAL_HZ) - 1) < 0.03)
    assert np.allclose(CENTRES_HZ[1:] / CENTRES_HZ[:-1], 10 ** 0.1)


@pytest.mark.parametrize("rate", [16000, 32000])
def test_a_tone_at_a_band_centre_reads_its_level_in_that_band(rate):
    # a steady sine of amplitude a reads ref_db + 20 log10(a) (94 dB for a = 1)
    top = 25 if rate == 16000 else 28          # 8 kHz and up are above 16 kHz's Nyquist range
    for b in (0, 4, 10, 17, 21, top):
        amp = 0.05
        x = tone(CENTRES_HZ[b], amp, 4.0, rate)
        levels = third_octave_levels(x, rate)[8:-2].mean(0)         # steady frames only
        expect = 94.0 + 20 * np.log10(amp)
        assert abs(levels[b] - expect) < 0.1, (rate, b, levels[b], expect)
        for nb in (b - 1, b + 1):
            if 0 <= nb < N_BANDS:
                assert levels[nb] < expect - 15, (rate, b, nb, levels[nb])


def test_white_noise_rises_one_db_per_band():
    # bandwidth grows by 10**0.1 per band, so white noise gains 1 dB per band
    x = np.random.default_rng(0).standard_normal(32000 * 20).astype(np.float32) * 0.1
    levels = third_octave_levels(x, 32000).mean(0)
    slope = np.diff(levels[8:27])                              # 125 Hz - 10 kHz
    assert abs(slope.mean() - 1.0) < 0.1 and np.all(np.abs(slope - 1.0) < 0.6), slope


def test_bands_above_nyquist_and_silence_read_the_floor():
    levels = third_octave_levels(np.zeros(16000, np.float32), 16000, floor_db=0.0)
    assert np.all(levels == 0.0)
    noisy = third_octave_levels(tone(1000.0, 0.5, 2.0, 16000), 16000, floor_db=-20.0)
    assert np.all(noisy[:, 27:] == -20.0)                      # 10 kHz, 12.5 kHz at 16 kHz
    assert np.all(noisy[:, 17] > 80)


def test_frames_are_whole_125_ms_windows_from_the_first_sample():
    rate = 16000
    x = np.zeros(rate * 3 + 1000, np.float32)                 # 24 whole frames + a partial one
    x[rate:2 * rate] = tone(1000.0, 0.5, 1.0, rate)            # frames 8..15
    levels = third_octave_levels(x, rate)
    assert levels.shape == (24, 29)
    on = levels[:, 17] > 60
    assert on[9:15].all() and not on[:7].any() and not on[17:].any()


def test_frontend_preset_batches_and_torch_module_agree():
    cfg = PRESETS["third-octave"]
    assert cfg.n_features == 29 and cfg.frames_per_second == 8.0 and cfg.n_frames(16000) == 8
    x = np.random.default_rng(1).standard_normal((3, 2, 16000)).astype(np.float32) * 0.1
    a = frontend_numpy(cfg, x)
    assert a.shape == (3, 2, 8, 29) and a.dtype == np.float32
    b = Frontend(cfg)(torch.from_numpy(x)).numpy()
    assert np.array_equal(a, b)
    assert np.allclose(a[1, 0], third_octave_levels(x[1, 0], 16000))
