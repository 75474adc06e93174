"""Third-octave levels enter every slice method centred per view, in 10 dB units
(:func:`tympan.methods.base.centre_levels`): a constant level offset (a sensor's calibration,
its distance to the street, a recording's gain) changes neither the views a method trains on
(Audio2Vec's reconstruction target included) nor any embedding, and the audio and sensor
paths centre alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tympan.datasets.clip import Clip
from tympan.distributed.sensor_eval import embed_levels
from tympan.methods.base import spectral_views
from tympan.methods.registry import build_method, get_method
from tympan.methods.sensor import SENSOR_PRESETS, sensor_config


def frames(rng: np.random.Generator, n: int = 80) -> np.ndarray:
    """A drifting spectrum around 55 dB (its own tilt and pattern) with noise: [n, 29] in dB."""
    t, f = np.arange(n)[:, None], np.arange(29)[None]
    tilt, rate = rng.uniform(-1.5, 1.5), rng.uniform(2, 8)
    return (55 + tilt * (f - 14) + 8 * np.sin(t / rate + f / 4) + rng.normal(0, 2, (n, 29))).astype(np.float32)


def views(method: str, cfg, levels: list[np.ndarray], seed: int = 1) -> dict[str, np.ndarray]:
    clips = [Clip(f"c{i}", np.zeros(0, np.float32), features=x) for i, x in enumerate(levels)]
    with spectral_views(cfg.frontend, clips) as proxies:
        return get_method(method).sample_views(cfg, proxies, np.random.default_rng(seed))


@pytest.mark.parametrize("method", sorted(SENSOR_PRESETS))
def test_a_level_offset_changes_no_view(method):
    cfg = sensor_config(method)
    rng = np.random.default_rng(0)
    lv = [frames(rng) for _ in range(4)]
    a = views(method, cfg, lv)
    b = views(method, cfg, [x + 23.0 for x in lv])          # every level 23 dB higher
    assert a.keys() == b.keys()
    feats = [k for k, v in a.items() if v.ndim >= 3 and v.shape[-1] == 29]
    assert feats, a.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-4, err_msg=k)
    for k in feats:                 # each view centred, in 10 dB units: order 1, not 55 dB
        assert np.abs(a[k].mean(axis=(-2, -1))).max() < 1e-4
        assert 0.2 < a[k].std() < 3.0


@pytest.mark.parametrize("method", ["audio2vec-cbow", "temporal-gap"])
def test_a_level_offset_changes_no_embedding_and_audio_centres_alike(method):
    torch.manual_seed(0)
    model = build_method(method, sensor_config(method, width=0.125, dim=16)).eval()
    rng = np.random.default_rng(2)
    lv = np.stack([frames(rng, 40) for _ in range(3)])
    e0, e1 = embed_levels(model, lv), embed_levels(model, lv + 23.0)
    np.testing.assert_allclose(e0, e1, atol=1e-5)
    # ... and that is the centring, not an encoder deaf to its input level
    with torch.no_grad():
        x = torch.as_tensor(lv[:, :8]) / 10.0
        raw0, raw1 = model.encoder(x), model.encoder(x + 2.3)
    assert (raw0 - raw1).abs().max() > 100 * np.abs(e0 - e1).max()
    # audio through the third-octave front end: its frames embed as the same frames would
    wave = torch.as_tensor(np.random.default_rng(3).normal(0, 0.1, (2, 16000 * 5)), dtype=torch.float32)
    with torch.no_grad():
        emb, _ = model.embed_frames(wave)                     # [2, T', D]
        audio_frames = model.frontend(wave).numpy()           # [2, 40, 29] dB
    np.testing.assert_allclose(emb.mean(1).numpy(), embed_levels(model, audio_frames), atol=1e-5)
