"""L3 (Arandjelovic & Zisserman 2017; Cramer et al. 2019): the crop / window helpers, the
audio-frame sampler, the loss against a slow reference, training on synthetic clips (loss
falls, correspondence rises, linear probe beats random init: learning.py) and full-size shapes."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tympan.config import ConfigError
from tympan.datasets.synthetic import synthetic_clips
from tympan.methods.base import OptimConfig
from tympan.methods.l3 import L3, L3Config, crop_at, resize_frame, sliding_windows
from tympan.methods.registry import build_method

sys.path.insert(0, str(Path(__file__).parent))
from learning import (PROBE_C, assert_mean_margin, assert_round_trip, probe_sets,  # noqa: E402
                      train_and_compare, unseen_probe_sets)


# ---- helpers of the samplers -------------------------------------------------------------------
def test_crop_loop_pads_and_stays_inside():
    a = np.arange(5, dtype=np.float32)
    assert crop_at(a, 0, 12).tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    assert crop_at(a, 4, 3).tolist() == [2, 3, 4]                 # shifted back inside
    assert crop_at(np.zeros(0, np.float32), 0, 3).tolist() == [0, 0, 0]
    w, t = sliding_windows(torch.arange(10.0)[None], 4, 3, sample_rate=1000)
    assert w.shape == (1, 3, 4) and w[0, 2].tolist() == [6, 7, 8, 9]
    assert t.tolist() == [2.0, 5.0, 8.0]                          # centres in ms at 1 kHz
    assert resize_frame(np.zeros((30, 40, 3), np.uint8), 16).shape == (3, 16, 16)


# ---- L3 ----------------------------------------------------------------------------------------
L3_STEPS = 500                # the learning test's steps (correspondence needs ~300 to lift off)
L3_MARGIN = 0.04              # least mean probe lead over random init, seeds 0-2 (docs/methods.md)
L3_UNSEEN_MARGIN = 0.08       # ... on classes 8-15, never in a picture or clip it trained on
L3_SEEDS = (0, 1, 2)
# embed_pool global: the learning test's margins were measured on the 1/8-width tower's global max
# (its 0.25-s crops are also too short for the paper's 3-cell time grid).
L3_SMALL = dict(audio_input="mel128", crop_s=0.25, image_size=32, width=0.125, batch_size=16,
                embed_hop_s=0.25, embed_pool="global")


def test_l3_sampler_pairs_frames_and_audio():
    clips = synthetic_clips(8, with_frames=True, duration_s=2.0, frame_size=48)
    for k, c in enumerate(clips):               # one flat colour per clip: provenance is visible
        c.frames[:] = 10 * k
    cfg = L3Config(**{**L3_SMALL, "batch_size": 8}, flip_prob=0.0, saturation=0.0, brightness=0.0)
    batch = L3.sample_views(cfg, clips, np.random.default_rng(3))
    assert batch["audio"].shape == (8, cfg.frontend.n_frames(4000), 128)
    assert batch["frame"].shape == (8, 3, 32, 32) and batch["frame"].dtype == np.float32
    assert batch["match"].sum() == 4                              # exactly 50 % mismatched
    own = np.array([(10 * k / 255.0) * 2 - 1 for k in range(8)], dtype=np.float32)
    got = batch["frame"][:, 0, 0, 0]
    np.testing.assert_allclose(got[batch["match"] == 1], own[batch["match"] == 1], atol=1e-5)
    assert not np.isclose(got[batch["match"] == 0], own[batch["match"] == 0], atol=1e-5).any()
    for name in ("linear", "mel256"):
        c = L3Config(**{**L3_SMALL, "audio_input": name})
        assert L3.sample_views(c, clips[:2], np.random.default_rng(0))["audio"].shape[-1] == \
            c.frontend.n_features


def test_l3_errors_and_short_clips():
    clips = synthetic_clips(2, with_frames=True, duration_s=1.0, frame_size=32)
    clips[1].frames = None
    with pytest.raises(ValueError, match="synthetic-0-000001"):
        L3.sample_views(L3Config(**L3_SMALL), clips, np.random.default_rng(0))
    short = synthetic_clips(2, with_frames=True, duration_s=0.05, frame_size=32)   # < crop
    batch = L3.sample_views(L3Config(**L3_SMALL), short, np.random.default_rng(0))
    assert np.isfinite(batch["audio"]).all()
    with pytest.raises(ConfigError, match="audio_input"):
        L3Config(audio_input="mel64")


def test_l3_loss_matches_reference():
    torch.manual_seed(0)
    model = L3(L3Config(**L3_SMALL, conv_l2=0.0)).eval()        # the cross-entropy alone
    batch = model.to_tensors(L3.sample_views(L3Config(**L3_SMALL), synthetic_clips(
        6, with_frames=True, duration_s=1.0, frame_size=32), np.random.default_rng(0)))
    with torch.no_grad():
        loss, _ = model.loss(batch)
        logits = model.logits(batch["audio"], batch["frame"]).double()
    ref = sum(-(logits[i, batch["match"][i]] - torch.logsumexp(logits[i], 0))
              for i in range(6)) / 6
    assert math.isclose(float(loss), float(ref), rel_tol=1e-5)


def learn_l3(seed: int = 0):
    """(learning.Learned, per-step correspondence accuracy) of the test's L3 setup."""
    pool = synthetic_clips(64, n_classes=8, with_frames=True, duration_s=2.0, frame_size=32, seed=0)
    probe_a, probe_b = probe_sets()
    cfg = L3Config(**{**L3_SMALL, "image_size": 16, "batch_size": 32}, optim=OptimConfig(lr=5e-4))
    acc = []
    result = train_and_compare(L3, cfg, pool, probe_a, probe_b, steps=L3_STEPS, seed=seed,
                               probe_c=PROBE_C, after_step=lambda m: acc.append(m["accuracy"]),
                               unseen=unseen_probe_sets())
    return result, acc


@pytest.mark.timeout(1800)      # three trainings; on a loaded 2-core machine one took 3-4 min
def test_l3_learns_correspondence(tmp_path):
    """L3 trains: the loss falls, its correspondence accuracy rises above chance (0.5), and
    its audio tower's clip embedding separates 8 held-out classes better than the same
    architecture at random initialisation (learning.py).

    Setup (why): lr 5e-4, not l3embedding's 1e-5 (tuned for millions of pairs); at 2e-3 one
    of init seeds 0-3 stayed on the ln 2 plateau for good (seed 2: probe 0.56 vs random 0.78).
    With the papers' 16 kHz windows (issue 15) a single seed's lead moved by 0.058 with the
    thread count (+0.051 / +0.109 at seed 0), more than it stands above its requirement, so the
    verdict is the mean over init seeds 0-2, as COLA's. The unseen classes 8-15 (no picture or
    clip of them in training) are probed too.
    Per-seed, per-thread-count numbers in docs/methods.md, "What the tests show"."""
    runs = [learn_l3(seed) for seed in L3_SEEDS]
    for seed, (result, acc) in zip(L3_SEEDS, runs):
        print(f"l3 seed {seed}: correspondence accuracy {np.mean(acc[:50]):.3f} -> "
              f"{np.mean(acc[-50:]):.3f}; {result}; unseen classes: {result.unseen}")
        assert np.mean(acc[-50:]) > np.mean(acc[:50]) + 0.08, (seed, np.mean(acc[:50]), np.mean(acc[-50:]))
        assert result.loss_ratio < 0.8, (seed, str(result))
    assert_mean_margin([r for r, _ in runs], L3_MARGIN)
    assert_mean_margin([r.unseen for r, _ in runs], L3_UNSEEN_MARGIN)
    assert_round_trip(runs[0][0].model, synthetic_clips(3, n_classes=8, duration_s=1.0, seed=2), tmp_path)


def test_l3_full_size_shapes():
    cfg = L3Config(embed_pool="grid")                 # paper sizes: 1 s mel256, 224 x 224
    model = L3(cfg).eval()
    batch = L3.sample_views(cfg, synthetic_clips(2, with_frames=True, duration_s=1.5),
                            np.random.default_rng(0))
    assert batch["audio"].shape == (2, 201, 256) and batch["frame"].shape == (2, 3, 224, 224)
    with torch.no_grad():
        assert model.logits(*[torch.from_numpy(batch[k]) for k in ("audio", "frame")]).shape == (2, 2)
        emb, times = model.embed_frames(torch.zeros(1, 16000 + 1600))
    # OpenL3 "original" pooling: the last block's 512-channel map max-pooled to 3 x 4 = 6144-d
    assert emb.shape == (1, 2, 6144) and times[0].tolist() == [500.0, 600.0]
    assert cfg.optim.lr == 1e-5 and model.embedding_dim == 6144
    assert build_method("l3").embedding_dim == 6144           # default: the paper's grid
    glob = L3(L3Config(embed_pool="global")).eval()
    glob.load_state_dict(model.state_dict())          # same weights: pooling only differs
    with torch.no_grad():
        g, _ = glob.embed_frames(torch.zeros(1, 16000))
        spec = model.frontend(torch.randn(1, 16000))
        grid, flat = model.embed_audio(spec), glob.embed_audio(spec)
    assert g.shape == (1, 1, 512) and glob.embedding_dim == 512
    # the global max is the max over the grid cells of each channel
    assert torch.allclose(grid.view(1, 512, 12).amax(-1), flat)


def test_l3_presets_keep_the_papers_window_durations():
    """At 16 kHz the presets keep the papers' analysis windows in *time*: L3's linear
    spectrogram 512 samples at 48 kHz (10.7 ms), OpenL3's mel n_fft 2048 at 48 kHz (42.7 ms),
    each zero-padded to the papers' FFT size (257 linear bins; fine bins for 256 mel bands);
    hop 5 ms. A Hann window of win_length samples inside n_fft: a 1 kHz tone's energy spreads
    over ~2 x n_fft / win_length FFT bins, so the window length is visible in the output."""
    from tympan.datasets.frontend import PRESETS, frontend_numpy
    for name, win_s, n_fft in (("linear", 512 / 48000, 512), ("mel128", 2048 / 48000, 2048),
                               ("mel256", 2048 / 48000, 2048)):
        fe = PRESETS[f"l3-{name}"]
        assert fe.sample_rate == 16000 and fe.n_fft == n_fft and fe.hop_length == 80
        assert abs(fe.win_length / fe.sample_rate - win_s) < 1 / fe.sample_rate, name
        assert L3Config(audio_input=name).frontend == fe
    # A 1 kHz tone through the linear preset: the Hann main lobe is 4 x n_fft / win_length bins
    # wide, ~12 bins for 171 samples against ~4 for a full 512-sample window (the 48 kHz count).
    import dataclasses
    tone = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000).astype(np.float32)[None]

    def width(fe):                                      # bins within 20 dB of the peak
        spec = np.exp(frontend_numpy(fe, tone)[0, 100])
        return int((spec > spec.max() * 0.01).sum())
    full = dataclasses.replace(PRESETS["l3-linear"], win_length=512)
    assert width(PRESETS["l3-linear"]) >= 3 * width(full), (width(PRESETS["l3-linear"]), width(full))


def test_l3_conv_weight_decay_is_in_the_loss():
    """l3embedding's L2 1e-5 on conv kernels: the loss is the cross-entropy + 1e-5 x sum w^2."""
    torch.manual_seed(0)
    model = L3(L3Config(**L3_SMALL, conv_l2=1e-5)).eval()
    plain = L3(L3Config(**L3_SMALL, conv_l2=0.0)).eval()
    plain.load_state_dict(model.state_dict())
    batch = model.to_tensors(L3.sample_views(L3Config(**L3_SMALL), synthetic_clips(
        4, with_frames=True, duration_s=1.0, frame_size=32), np.random.default_rng(0)))
    with torch.no_grad():
        l2 = sum(float((m.weight ** 2).sum()) for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        assert math.isclose(float(model.loss(batch)[0]) - float(plain.loss(batch)[0]), 1e-5 * l2,
                            rel_tol=1e-3)
