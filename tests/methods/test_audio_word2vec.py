"""Audio Word2Vec (Chung et al. 2016): the segment sampler, the packed loss against a per-segment
reference, training the denoising variant on synthetic clips (loss falls, linear probe beats
random init: learning.py) and full-size shapes."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tympan.config import ConfigError
from tympan.datasets.clip import Clip
from tympan.datasets.frontend import frontend_numpy
from tympan.datasets.synthetic import synthetic_clips
from tympan.methods.audio_word2vec import AudioWord2Vec, AudioWord2VecConfig
from tympan.methods.base import OptimConfig
from tympan.methods.l3 import L3Config
from tympan.methods.registry import build_method

sys.path.insert(0, str(Path(__file__).parent))
from learning import PROBE_C, assert_learned, probe_sets, train_and_compare  # noqa: E402


# ---- Audio Word2Vec ----------------------------------------------------------------------------
W2V_MARGIN = 0.06             # least probe lead over random init (docs/methods.md)
W2V_SMALL = dict(min_s=0.2, max_s=0.5, hidden=32, batch_size=16, embed_hop_s=0.25)


def test_word2vec_sampler_lengths_and_padding():
    cfg = AudioWord2VecConfig(**W2V_SMALL)
    clips = synthetic_clips(6, duration_s=1.0) + synthetic_clips(2, duration_s=0.05, seed=9)
    batch = AudioWord2Vec.sample_views(cfg, clips, np.random.default_rng(0))
    assert batch["mfcc"].shape == (8, cfg.max_frames, 13) and batch["lengths"].dtype == np.int64
    lo, hi = cfg.frontend.n_frames(cfg.samples(0.2)), cfg.max_frames
    assert ((batch["lengths"] >= lo) & (batch["lengths"] <= hi)).all()
    for row, n in zip(batch["mfcc"], batch["lengths"]):
        assert (row[n:] == 0).all() and (np.abs(row[:n]).sum(1) > 0).all()
    with pytest.raises(ConfigError, match="frontend.kind"):
        AudioWord2VecConfig(frontend=L3Config().frontend)


def test_word2vec_word_aligned_segments():
    """segments=words (Chung et al. train on word segments): each example is one aligned word of
    its clip, cut at its boundaries (capped at max_s); random crops stay the default."""
    cfg = AudioWord2VecConfig(**W2V_SMALL, segments="words")
    assert AudioWord2VecConfig().segments == "random"
    audio = synthetic_clips(1, duration_s=2.0)[0].audio
    one = Clip("one-word", audio, meta={"word_alignment": [["house", 0.30, 0.55]]})
    two = Clip("two-words", audio, meta={"word_alignment": [["dog", 0.10, 0.25], ["cat", 1.0, 1.9]]})
    batch = AudioWord2Vec.sample_views(cfg, [one], np.random.default_rng(0))
    n = cfg.samples(0.25)
    assert batch["lengths"].tolist() == [cfg.frontend.n_frames(n)]
    word = np.zeros((1, cfg.samples(cfg.max_s)), dtype=np.float32)
    word[0, :n] = audio[cfg.samples(0.30):cfg.samples(0.55)]                 # exactly the word
    want = frontend_numpy(cfg.frontend, word)
    want[:, cfg.frontend.n_frames(n):] = 0
    np.testing.assert_allclose(batch["mfcc"], want, rtol=1e-5, atol=1e-5)
    # Several words: one drawn at random per example; a word longer than max_s is capped.
    lengths = {int(AudioWord2Vec.sample_views(cfg, [two], np.random.default_rng(s))["lengths"][0])
               for s in range(12)}
    assert lengths == {cfg.frontend.n_frames(cfg.samples(0.15)), cfg.max_frames}
    with pytest.raises(ValueError, match="'no-words'.*word_alignment"):
        AudioWord2Vec.sample_views(cfg, [one, Clip("no-words", audio)], np.random.default_rng(0))
    with pytest.raises(ValueError, match="'bad'"):
        AudioWord2Vec.sample_views(cfg, [Clip("bad", audio, meta={"word_alignment": [["x", 0.5, 0.2]]})],
                                   np.random.default_rng(0))
    with pytest.raises(ConfigError, match="segments"):
        AudioWord2VecConfig(segments="sentences")


@pytest.mark.parametrize("unit", ["element", "frame"])
def test_word2vec_denoising_masks_elements_as_the_paper(unit, monkeypatch):
    """Chung et al.'s DSA corrupts the input with masking noise on its elements (each MFCC
    coefficient of each frame on its own); mask_unit=frame zeroes whole frames."""
    torch.manual_seed(0)
    cfg = AudioWord2VecConfig(**W2V_SMALL, mask_prob=0.4, mask_unit=unit)
    assert AudioWord2VecConfig().mask_unit == "element"
    model = AudioWord2Vec(cfg).train()
    seen = {}
    encode = model.encode
    monkeypatch.setattr(model, "encode", lambda x, lengths: (seen.update(x=x.detach(), lengths=lengths),
                                                             encode(x, lengths))[1])
    batch = model.to_tensors(AudioWord2Vec.sample_views(cfg, synthetic_clips(16, duration_s=1.0),
                                                        np.random.default_rng(0)))
    model.loss(batch)
    x, lengths = seen["x"], seen["lengths"]
    valid = torch.arange(x.shape[1])[None, :] < lengths[:, None]               # [B, T]
    zero = (x == 0)[valid]                                                     # [frames, 13]
    assert abs(float(zero.float().mean()) - 0.4) < 0.05
    partly = (zero.any(1) & ~zero.all(1)).float().mean()
    if unit == "element":
        assert float(partly) > 0.9           # almost every frame has some, not all, zeros
    else:
        assert float(partly) == 0.0          # a frame is kept or zeroed whole


def test_word2vec_packed_loss_matches_per_sequence_reference():
    """The packed, padded batch loss equals a loop that runs each segment alone, unpadded."""
    torch.manual_seed(0)
    cfg = AudioWord2VecConfig(**W2V_SMALL)
    model = AudioWord2Vec(cfg).eval()
    batch = model.to_tensors(AudioWord2Vec.sample_views(
        cfg, synthetic_clips(5, duration_s=1.0), np.random.default_rng(1)))
    err, count = 0.0, 0
    with torch.no_grad():
        loss, _ = model.loss(batch)
        for x, n in zip(batch["mfcc"], batch["lengths"].tolist()):
            x = (x[:n] - model.norm.running_mean) / torch.sqrt(model.norm.running_var + model.norm.eps)
            _, (h, c) = model.encoder(x[None])
            out, _ = model.decoder(h[-1][:, None, :].expand(1, n, -1), (h, c))
            err += float((model.out(out)[0] - x).pow(2).sum())
            count += n * 13
    assert math.isclose(float(loss), err / count, rel_tol=1e-4)


def learn_word2vec(seed: int = 0):
    # The denoising variant (mask_prob > 0) runs every line the plain one does, plus masking.
    pool = synthetic_clips(64, n_classes=8, duration_s=1.0, seed=0)
    probe_a, probe_b = probe_sets()
    cfg = AudioWord2VecConfig(**{**W2V_SMALL, "hidden": 64}, mask_prob=0.3, optim=OptimConfig(lr=3e-3))
    return train_and_compare(AudioWord2Vec, cfg, pool, probe_a, probe_b, steps=500, seed=seed,
                             probe_c=PROBE_C)


def test_word2vec_denoising_trains_and_separates_classes(tmp_path):
    result = learn_word2vec()
    assert_learned("audio-word2vec (denoising)", result, 0.7, W2V_MARGIN, tmp_path)


def test_word2vec_full_size_shapes():
    model = build_method("audio-word2vec").eval()
    assert model.embedding_dim == 100 and model.cfg.max_frames == 101
    emb, times = model.embed_frames(torch.zeros(2, 24000))
    assert emb.shape == (2, 3, 100) and times[0].tolist() == [500.0, 750.0, 1000.0]
