"""Audio-text (Bengio & Heigold 2014): letter n-grams, the ranking loss against a slow reference
and closed forms, the sampler, training on synthetic clips (loss falls, linear probe beats
random init: learning.py) and full-size shapes."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tympan.datasets.synthetic import synthetic_clips
from tympan.methods.audio_text import (AudioText, AudioTextConfig, audio_text_ranking,
                                       letter_ngrams, ngram_vector)
from tympan.methods.registry import build_method

sys.path.insert(0, str(Path(__file__).parent))
from learning import (PROBE_C, assert_learned, probe_sets, train_and_compare,  # noqa: E402
                      unseen_probe_sets)


# ---- audio-text --------------------------------------------------------------------------------
AT_MARGIN = 0.15              # least probe lead over random init (docs/methods.md)
AT_UNSEEN_MARGIN = 0.12       # ... on the classes 8-15 it never trained on (docs/methods.md)
AT_SMALL = dict(crop_s=0.5, width=0.125, embed_dim=32, vocab_size=512, word_hidden=64,
                batch_size=16, embed_hop_s=0.25)


def test_letter_ngrams_and_hashing():
    assert letter_ngrams("Up") == ["#", "u", "p", "#", "#u", "up", "p#", "#up", "up#"]
    assert letter_ngrams("a b", 2) == ["#", "a", "#", "b", "#", "#a", "a#", "#b", "b#"]
    v = ngram_vector("yes", 4096)
    assert v.sum() == len(letter_ngrams("yes")) and np.array_equal(v, ngram_vector("YES", 4096))
    assert not np.array_equal(v, ngram_vector("yet", 4096))


def _reference_ranking(a, w, wn, words, margin, batch_negatives):
    """Slow loops over anchors and candidate words, straight from the definition."""
    cos = lambda x, y: float(F.cosine_similarity(x[None], y[None])[0])   # noqa: E731
    total = 0.0
    for i in range(len(a)):
        pos = cos(a[i], w[i])
        hinges = [max(0.0, margin - pos + cos(a[i], wn[i]))]
        if batch_negatives:
            hinges += [max(0.0, margin - pos + cos(a[i], w[j]))
                       for j in range(len(w)) if words[j] != words[i]]
        total += sum(hinges) / len(hinges)
    return total / len(a)


@pytest.mark.parametrize("batch_negatives", [True, False])
def test_audio_text_ranking_matches_reference(batch_negatives):
    g = torch.Generator().manual_seed(0)
    words = ["yes", "no", "yes", "up", "down", "no"]
    counts = torch.from_numpy(np.stack([ngram_vector(x, 64) for x in words]))
    a, w, wn = (torch.randn(6, 8, generator=g) for _ in range(3))
    got = audio_text_ranking(a, w, wn, counts, 0.7, batch_negatives=batch_negatives)
    ref = _reference_ranking(a, w, wn, words, 0.7, batch_negatives)
    assert math.isclose(float(got), ref, rel_tol=1e-5)


def test_audio_text_ranking_closed_forms():
    # Unit vectors with cos(a, w+) = 1 and cos(a, w-) = 1 - margin: exactly at the boundary.
    margin = 0.4
    a = torch.tensor([[1.0, 0.0]])
    wrong = torch.tensor([[1 - margin, math.sqrt(1 - (1 - margin) ** 2)]])
    counts = torch.eye(2)[:1]
    assert float(audio_text_ranking(a, a, wrong, counts, margin, batch_negatives=False)) == \
        pytest.approx(0.0, abs=1e-6)
    # Wrong word scored like the right one: the loss is the margin.
    assert float(audio_text_ranking(a, a, a, counts, margin, batch_negatives=False)) == \
        pytest.approx(margin)
    # With batch negatives, a pool word spelled like the anchor's own is never a negative.
    two = torch.cat([a, a])
    same = torch.cat([counts, counts])
    assert float(audio_text_ranking(two, two, torch.cat([wrong, wrong]), same, margin)) == \
        pytest.approx(0.0, abs=1e-6)


def test_audio_text_sampler_and_errors():
    cfg = AudioTextConfig(**AT_SMALL)
    clips = synthetic_clips(8, with_words=True, duration_s=1.0)
    batch = AudioText.sample_views(cfg, clips, np.random.default_rng(0))
    assert batch["audio"].shape == (8, cfg.frontend.n_frames(8000), 64)
    assert batch["word"].shape == batch["wrong_word"].shape == (8, 512)
    for i, c in enumerate(clips):
        assert np.array_equal(batch["word"][i], ngram_vector(c.meta["transcript"], 512))
        assert not np.array_equal(batch["wrong_word"][i], batch["word"][i])
    same = [c for c in clips if c.meta["transcript"] == clips[0].meta["transcript"]]
    b1 = AudioText.sample_views(cfg, same, np.random.default_rng(0))   # one word only
    assert all(not np.array_equal(x, y) for x, y in zip(b1["word"], b1["wrong_word"]))
    clips[3].meta.pop("transcript")
    with pytest.raises(ValueError, match="synthetic-0-000003"):
        AudioText.sample_views(cfg, clips, np.random.default_rng(0))


def learn_audio_text(seed: int = 0, recipe: str = "scratch", after_step=None):
    """``scratch``: 100 ranking steps (the measured runs in docs/methods.md); ``two-stage``: 60
    word-classifier steps, then the same 100 ranking steps."""
    pool = synthetic_clips(64, n_classes=8, with_words=True, duration_s=1.0, seed=0)
    probe_a, probe_b = probe_sets()
    stage_one = 60 if recipe == "two-stage" else 0
    cfg = AudioTextConfig(**AT_SMALL, recipe=recipe, classifier_steps=stage_one)
    return train_and_compare(AudioText, cfg, pool, probe_a, probe_b, steps=stage_one + 100,
                             seed=seed, probe_c=PROBE_C, after_step=after_step,
                             unseen=unseen_probe_sets())


def test_audio_text_trains_and_separates_classes(tmp_path):
    result = learn_audio_text()
    assert_learned("audio-text", result, 0.5, AT_MARGIN, tmp_path)
    # The probe classes above are the words it trained on. Classes 8-15 (sounds and words it
    # never met) are the factor the pretext never sees (docs/methods.md).
    print(f"audio-text unseen classes: {result.unseen}")
    result.unseen.assert_beats_random_init(AT_UNSEEN_MARGIN)


def test_audio_text_two_stage_recipe(tmp_path):
    """Bengio & Heigold: the audio CNN is first trained as a word classifier (softmax over the
    words), then the ranking loss trains the letter n-gram tower to meet it. Word labels: the
    paper's supervised recipe."""
    stats = []
    result = learn_audio_text(recipe="two-stage", after_step=stats.append)
    stage = [m["stage"] for m in stats]
    assert stage == [1.0] * 60 + [2.0] * 100
    word_acc = [m["word_accuracy"] for m in stats[:60]]
    rank_acc = [m["rank_accuracy"] for m in stats[60:]]
    print(f"audio-text two-stage: word accuracy {np.mean(word_acc[:10]):.2f} -> "
          f"{np.mean(word_acc[-10:]):.2f}; rank accuracy {np.mean(rank_acc[:10]):.2f} -> "
          f"{np.mean(rank_acc[-10:]):.2f}; {result}")
    assert np.mean(word_acc[-10:]) > np.mean(word_acc[:10]) + 0.3      # the classifier learns
    ranking = result.losses[60:]
    assert ranking[-20:].mean() < 0.5 * ranking[:20].mean()            # then the ranking loss falls
    result.assert_beats_random_init(AT_MARGIN)
    # The step count is in the checkpoint: a reloaded model stays past stage one.
    model = result.model
    model.save(tmp_path / "at.pt")
    from tympan.methods.registry import load_method
    loaded = load_method(tmp_path / "at.pt")
    assert int(loaded.steps_done) == 160 and not loaded.in_classifier_stage


def test_audio_text_recipes_and_old_checkpoints(tmp_path):
    from tympan.config import ConfigError
    from tympan.methods.registry import load_method
    cfg = AudioTextConfig(**AT_SMALL, classifier_steps=2, word_classes=64)
    model = AudioText(cfg)
    assert (model.word_classifier.in_features, model.word_classifier.out_features) == (32, 64)
    batch = model.to_tensors(AudioText.sample_views(
        cfg, synthetic_clips(8, with_words=True, duration_s=1.0), np.random.default_rng(0)))
    assert batch["word_class"].dtype == torch.int64 and int(batch["word_class"].max()) < 64
    opt = model.configure_optimizer()
    stages = [model.train_step(batch, opt)["stage"] for _ in range(3)]
    assert stages == [1.0, 1.0, 2.0]
    # Stage one never moves the word tower (its gradient is exactly zero).
    model2 = AudioText(cfg)
    opt2 = model2.configure_optimizer()
    w0 = [p.detach().clone() for p in model2.word_encoder.parameters()]
    model2.train_step(batch, opt2)
    assert all(torch.equal(a, b) for a, b in zip(w0, model2.word_encoder.parameters()))
    scratch = AudioText(AudioTextConfig(**AT_SMALL, recipe="scratch"))
    assert scratch.word_classifier is None and not scratch.in_classifier_stage
    with pytest.raises(ConfigError, match="recipe"):
        AudioTextConfig(recipe="pretrained")
    # A checkpoint from before the recipe (no classifier, no step count) loads past stage one.
    payload = scratch.payload()
    del payload["state_dict"]["steps_done"]
    del payload["config"]["recipe"], payload["config"]["classifier_steps"], payload["config"]["word_classes"]
    torch.save(payload, tmp_path / "old.pt")
    old = load_method(tmp_path / "old.pt")
    assert old.cfg.recipe == "two-stage" and not old.in_classifier_stage
    wave = torch.from_numpy(synthetic_clips(1, duration_s=1.0)[0].audio)[None]
    scratch.eval()
    old.eval()
    with torch.no_grad():
        assert torch.equal(scratch.embed_clip(wave), old.embed_clip(wave))


def test_audio_text_full_size_shapes():
    model = build_method("audio-text").eval()
    batch = model.to_tensors(AudioText.sample_views(
        model.cfg, synthetic_clips(2, with_words=True, duration_s=1.0), np.random.default_rng(0)))
    loss, metrics = model.loss(batch)
    assert loss.shape == () and metrics["stage"] == 1.0 and "word_accuracy" in metrics
    # Stage one: a softmax over the hashed word classes on the 128-d audio embedding.
    assert (model.word_classifier.in_features, model.word_classifier.out_features) == (128, 1024)
    model.steps_done.fill_(model.cfg.classifier_steps)
    loss, metrics = model.loss(batch)
    assert loss.shape == () and metrics["stage"] == 2.0 and "rank_accuracy" in metrics
    assert model.embed_clip(torch.zeros(2, 16000)).shape == (2, 128)
    assert model.embed_word("yes").shape == (128,)
    # Bengio & Heigold's word side: 3 linear layers over the letter n-gram counts
    linears = [m for m in model.word_encoder if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16384, 256), (256, 256), (256, 128)]
    assert isinstance(model.word_encoder[-1], torch.nn.Linear)
