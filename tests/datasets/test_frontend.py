"""The spectrogram front ends against an independent numpy reference (DFT of hann-windowed,
reflect-padded frames + triangular HTK mel filters + orthonormal DCT-II), plus closed-form
checks: a 1 kHz tone peaks in the mel band holding 1 kHz, silence gives log(floor)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tympan.datasets.frontend import PRESETS, Frontend, FrontendConfig, frontend_numpy


# ---- reference, written from the definitions (float64 numpy, no torch/torchaudio) ----------

def ref_stft_mag(cfg: FrontendConfig, x: np.ndarray) -> np.ndarray:
    """|STFT| (power cfg.power) as [T, n_fft//2+1]: centred frames, reflect padding, periodic
    hann window of win_length zero-padded to n_fft in the middle."""
    pad = cfg.n_fft // 2
    xp = np.pad(x.astype(np.float64), pad, mode="reflect")
    n = np.arange(cfg.win_length)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / cfg.win_length)         # periodic
    window = np.zeros(cfg.n_fft)
    left = (cfg.n_fft - cfg.win_length) // 2
    window[left:left + cfg.win_length] = hann
    n_frames = 1 + (len(xp) - cfg.n_fft) // cfg.hop_length
    frames = np.stack([xp[t * cfg.hop_length:t * cfg.hop_length + cfg.n_fft] for t in range(n_frames)])
    # Plain DFT matrix rather than np.fft, to stay independent of any FFT code path.
    k = np.arange(cfg.n_fft // 2 + 1)[:, None]
    dft = np.exp(-2j * np.pi * k * np.arange(cfg.n_fft)[None, :] / cfg.n_fft)   # [F, n_fft]
    mag = np.abs((frames * window) @ dft.T)                                       # [T, F]
    return mag ** cfg.power


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def ref_mel_points(cfg: FrontendConfig) -> np.ndarray:
    """n_mels + 2 band edges in Hz, equally spaced on the HTK mel scale."""
    return mel_to_hz(np.linspace(hz_to_mel(cfg.f_min), hz_to_mel(cfg.f_max), cfg.n_mels + 2))


def ref_mel_filters(cfg: FrontendConfig) -> np.ndarray:
    """Triangles [n_freqs, n_mels]: band m rises from edge m to m+1 and falls to m+2 (Hz)."""
    freqs = np.linspace(0, cfg.sample_rate // 2, cfg.n_fft // 2 + 1)
    pts = ref_mel_points(cfg)
    fb = np.zeros((len(freqs), cfg.n_mels))
    for m in range(cfg.n_mels):
        lo, mid, hi = pts[m], pts[m + 1], pts[m + 2]
        rise = (freqs - lo) / (mid - lo)
        fall = (hi - freqs) / (hi - mid)
        fb[:, m] = np.maximum(0.0, np.minimum(rise, fall))
    return fb


def ref_dct_ortho(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II as a matrix [n_in, n_out]."""
    n = np.arange(n_in)[:, None]
    k = np.arange(n_out)[None, :]
    d = np.cos(np.pi / n_in * (n + 0.5) * k) * np.sqrt(2.0 / n_in)
    d[:, 0] /= np.sqrt(2.0)
    return d


def reference(cfg: FrontendConfig, x: np.ndarray) -> np.ndarray:
    spec = ref_stft_mag(cfg, x)
    if cfg.kind in ("mel", "mfcc"):
        spec = spec @ ref_mel_filters(cfg)
    if cfg.log or cfg.kind == "mfcc":
        spec = np.log(np.maximum(spec, cfg.log_floor))
    if cfg.kind == "mfcc":
        spec = spec @ ref_dct_ortho(cfg.n_mels, cfg.n_mfcc)
    return spec


def test_signal(seconds: float = 1.0, sr: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    chirp = 0.4 * np.sin(2 * np.pi * (200 * t + 1500 * t ** 2))
    return (chirp + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


test_signal.__test__ = False    # a helper, not a test


# ---- tests ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["logmel64", "mfcc13", "l3-linear", "l3-mel128", "l3-mel256"])
def test_matches_numpy_reference(name):
    cfg = PRESETS[name]
    x = test_signal(0.5, cfg.sample_rate)
    got = frontend_numpy(cfg, x)
    want = reference(cfg, x)
    assert got.shape == want.shape == (cfg.n_frames(len(x)), cfg.n_features)
    assert_close_to_reference(cfg, got, want)


def assert_close_to_reference(cfg: FrontendConfig, got: np.ndarray, want: np.ndarray) -> None:
    if cfg.kind == "linear":
        # Single FFT bins sit far below the frame's peak, where the float32 STFT's rounding
        # (~1e-6 of the frame energy) dominates their log: compare magnitudes, relative to
        # the bin and to the frame's peak.
        g, w = np.exp(got), np.exp(want)
        err = np.abs(g - w)
        bound = 1e-4 * w + 1e-5 * w.max(axis=-1, keepdims=True)
        assert np.all(err <= bound), float((err / bound).max())
        return
    # ~1e-4 relative: float32 STFT vs float64 DFT, on log values of order 1-10.
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_linear_and_mel_of_paper_default():
    cfg = FrontendConfig()
    assert (cfg.sample_rate, cfg.win_length, cfg.hop_length, cfg.n_fft, cfg.n_mels) == \
        (16000, 400, 160, 512, 64)
    assert (cfg.f_min, cfg.f_max, cfg.log_floor) == (60.0, 7800.0, 1e-5)
    x = test_signal(1.0)
    assert_close_to_reference(cfg, frontend_numpy(cfg, x), reference(cfg, x))
    lin = dataclasses.replace(cfg, kind="linear")
    assert_close_to_reference(lin, frontend_numpy(lin, x), reference(lin, x))
    assert frontend_numpy(lin, x).shape == (101, 257)


def test_1khz_tone_peaks_in_the_band_holding_1khz():
    cfg = FrontendConfig()
    t = np.arange(16000) / 16000
    x = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    peak = int(np.argmax(frontend_numpy(cfg, x).mean(axis=0)))
    pts = ref_mel_points(cfg)
    assert pts[peak] < 1000 < pts[peak + 2]
    # ... and it is the band whose centre is nearest 1 kHz (the triangle's highest response).
    assert peak == int(np.argmin(np.abs(pts[1:-1] - 1000)))


def test_silence_gives_the_log_floor():
    for name in ("logmel64", "l3-linear"):
        cfg = PRESETS[name]
        out = frontend_numpy(cfg, np.zeros(cfg.sample_rate, np.float32))
        np.testing.assert_array_equal(out, np.full_like(out, np.log(np.float32(cfg.log_floor))))


@pytest.mark.parametrize("seconds,frames", [(1.0, 101), (10.0, 1001)])
def test_shapes_for_1s_and_10s_and_batches(seconds, frames):
    cfg = FrontendConfig()
    n = int(seconds * 16000)
    assert cfg.n_frames(n) == frames
    out = frontend_numpy(cfg, np.zeros((3, n), np.float32))
    assert out.shape == (3, frames, 64) and out.dtype == np.float32
    mfcc = frontend_numpy(PRESETS["mfcc13"], np.zeros(n, np.float32))
    assert mfcc.shape == (frames, 13)
    lin = frontend_numpy(PRESETS["l3-linear"], np.zeros(n, np.float32))
    assert lin.shape == (1 + n // 80, 257)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_numpy_path_equals_torch_module(name):
    cfg = PRESETS[name]
    x = np.stack([test_signal(0.7, cfg.sample_rate), test_signal(0.7, cfg.sample_rate)[::-1]])
    module = Frontend(cfg)
    with torch.no_grad():
        from_torch = module(torch.from_numpy(x.copy())).numpy()
    from_numpy = frontend_numpy(cfg, x)
    assert from_numpy.shape == from_torch.shape == (2, cfg.n_frames(x.shape[1]), cfg.n_features)
    np.testing.assert_allclose(from_numpy, from_torch, rtol=1e-4, atol=1e-4)
    wave = torch.from_numpy(x.copy()).requires_grad_(True)
    if cfg.kind == "third-octave":
        # sensor levels are a fixed CPU filter bank (scipy), documented as not differentiable
        assert not module(wave).requires_grad
        return
    # The spectral torch paths are differentiable end to end (they run inside the model).
    module(wave).sum().backward()
    assert wave.grad is not None and torch.isfinite(wave.grad).all()


def test_presets_all_build():
    assert {"logmel64", "mfcc13", "l3-linear", "l3-mel128", "l3-mel256"} <= set(PRESETS)
    for name, cfg in PRESETS.items():
        fe = Frontend(cfg)
        out = fe.numpy(np.zeros(cfg.sample_rate // 4, np.float32))
        assert out.shape[-1] == cfg.n_features, name
    assert PRESETS["l3-mel128"].n_features == 128 and PRESETS["l3-mel256"].n_features == 256
