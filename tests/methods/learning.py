"""What every "this method learns" test shares: train in-process on synthetic clips, then probe
the trained network and the same network at random initialisation, two ways.

"The same architecture at random initialisation" is measured twice, and a method must beat
both (tests/methods/test_slice_methods.py, test_l3.py, test_audio_word2vec.py,
test_audio_text.py, test_teacher.py):

* ``random``: the initial weights *and* normalisation buffers, so BatchNorm in eval mode is
  the identity and the network is an un-normalised random net. On timbre-like classes its
  features are strong (0.70-0.91 on the 4-class probe): the baseline to beat.
* ``random_bn``: the same weights with BatchNorm statistics estimated on training batches
  (cumulative average, no gradient step): the function the architecture computes at init once
  it normalises.

The probe is scikit-learn's logistic regression on standardised clip embeddings
(``embed_clip``) of two probe sets (two synthetic seeds), fitted on each and scored on the
other (``probe_accuracy``), so all probe clips are test clips. A test passes when the trained
probe leads the better baseline by a margin it sets from the per-seed, per-thread-count
numbers in docs/methods.md (``sweep_seeds.py`` measures them).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tympan.datasets.synthetic import synthetic_clips
from tympan.methods.registry import load_method


def waves(clips) -> torch.Tensor:
    return torch.from_numpy(np.stack([c.audio for c in clips]))


def probe_accuracy(model, a, b, c: float = 1.0) -> float:
    """Logistic regression on standardised clip embeddings, both ways: fitted on ``a`` and
    scored on ``b``, then fitted on ``b`` and scored on ``a``. The fraction of all
    ``len(a) + len(b)`` clips classified right, so every probe clip is a test clip once and
    one clip moves the accuracy by 1 / (len(a) + len(b))."""
    model.eval()
    with torch.no_grad():
        xa, xb = model.embed_clip(waves(a)).numpy(), model.embed_clip(waves(b)).numpy()
    ya, yb = [x.labels[0] for x in a], [x.labels[0] for x in b]
    right = 0.0
    for xtr, ytr, xte, yte in ((xa, ya, xb, yb), (xb, yb, xa, ya)):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000)).fit(xtr, ytr)
        right += clf.score(xte, yte) * len(yte)
    return float(right / (len(ya) + len(yb)))


def calibrate_norms(model, batches) -> None:
    """Estimate ``model``'s BatchNorm running statistics from the loss's forward passes over
    ``batches`` (train mode, no gradient step), as a cumulative average."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for b in batches:
            model.loss(model.to_tensors(b))
    for m, mom in zip(norms, momenta):
        m.momentum = mom
    model.eval()


@dataclass
class Learned:
    losses: np.ndarray            # per step
    trained: float                # probe accuracy of the trained network
    random: float                 # ... of the same initial weights and buffers
    random_bn: float              # ... of the same initial weights, BatchNorm statistics fitted
    model: torch.nn.Module
    unseen: "Learned | None" = None   # the same three networks probed on unseen classes

    @property
    def loss_ratio(self) -> float:
        return float(self.losses[-20:].mean() / self.losses[:20].mean())

    def __str__(self) -> str:
        return (f"loss {self.losses[:20].mean():.4f} -> {self.losses[-20:].mean():.4f}; probe "
                f"{self.trained:.3f} vs random init {self.random:.3f} (BN statistics fitted "
                f"{self.random_bn:.3f}), margin {self.margin:+.3f}")

    @property
    def margin(self) -> float:
        """How far the trained probe is above the better random-init baseline."""
        return self.trained - max(self.random, self.random_bn)

    def assert_beats_random_init(self, margin: float) -> None:
        """``margin``: the least lead over both baselines that counts as learned; each test
        sets it below the margins measured over init seeds and thread counts
        (docs/methods.md, "What the tests show")."""
        assert self.margin >= margin, f"margin {self.margin:+.3f} < {margin}: {self}"


def assert_mean_margin(results: Sequence[Learned], margin: float) -> None:
    """The verdict over several training runs (init seeds): their mean lead over the better
    random-init baseline is at least ``margin``."""
    mean = float(np.mean([r.margin for r in results]))
    assert mean >= margin, (f"mean margin {mean:+.3f} < {margin} over {len(results)} runs: "
                            + "; ".join(str(r) for r in results))


def train_and_compare(method_cls, cfg, pool: Sequence, probe_a: Sequence, probe_b: Sequence,
                      steps: int, seed: int = 0, probe_c: float = 1.0, after_step=None,
                      unseen: tuple[Sequence, Sequence] | None = None) -> Learned:
    """Train ``method_cls(cfg)`` for ``steps`` on batches of ``pool`` (seeded), then probe it
    and both random-init baselines. ``after_step(metrics)`` sees every step's metrics.
    ``unseen``: a second pair of probe sets (:func:`unseen_probe_sets`), scored into
    ``Learned.unseen`` by the same three networks."""
    torch.manual_seed(seed)
    model = method_cls(cfg)
    random_model, random_bn = copy.deepcopy(model), copy.deepcopy(model)
    rng = np.random.default_rng(seed)

    def batch(r):
        return method_cls.sample_views(cfg, [pool[i] for i in r.choice(len(pool), cfg.batch_size,
                                                                      replace=False)], r)

    opt = model.configure_optimizer()
    losses = []
    for _ in range(steps):
        metrics = model.train_step(model.to_tensors(batch(rng)), opt)
        assert np.isfinite(metrics["loss"]), metrics
        losses.append(metrics["loss"])
        if after_step is not None:
            after_step(metrics)
    calib_rng = np.random.default_rng(seed + 1)
    calibrate_norms(random_bn, [batch(calib_rng) for _ in range(8)])
    random_model.eval()

    def scored(a, b) -> Learned:
        return Learned(np.array(losses), probe_accuracy(model, a, b, probe_c),
                       probe_accuracy(random_model, a, b, probe_c),
                       probe_accuracy(random_bn, a, b, probe_c), model)
    result = scored(probe_a, probe_b)
    if unseen is not None:
        result.unseen = scored(*unseen)
    return result


# ---- the 8-class learning tests' verdict (L3, Audio Word2Vec, audio-text, SoundNet) -----------
PROBE_C = 0.1       # 8 classes, 128 probe clips a side: a stronger L2 than probe_accuracy's 1.0


def probe_sets(n: int = 128, n_classes: int = 8) -> tuple[list, list]:
    """The 8-class tests' two probe sets: ``n`` one-second clips each, synthetic seeds 1 and 2
    (scored both ways, so 2n test clips: one clip is 1 / (2n) of the accuracy)."""
    return (synthetic_clips(n, n_classes=n_classes, duration_s=1.0, seed=1),
            synthetic_clips(n, n_classes=n_classes, duration_s=1.0, seed=2))


UNSEEN_CLASSES = range(8, 16)


def unseen_probe_sets(n: int = 128) -> tuple[list, list]:
    """Probe sets of classes the label-aligned tests' pretexts never see: ``n`` one-second
    clips each of synthetic classes 8-15 (seeds 3 and 4). The 8-class training pools hold
    classes 0-7 only, and a class's sound and picture do not depend on ``n_classes``, so none
    of these classes' words (audio-text), pictures (L3) or teacher classes (SoundNet: its
    teacher is trained on pictures of classes 0-7) reached the pretext."""
    out = []
    for seed in (3, 4):
        clips = synthetic_clips(2 * n, n_classes=16, duration_s=1.0, seed=seed)
        out.append([c for c in clips if c.meta["class_index"] in UNSEEN_CLASSES])
    return out[0], out[1]


def assert_round_trip(model, clips, tmp_path) -> None:
    """``save`` -> ``load_method`` (torch.load weights_only=True inside) embeds identically."""
    path = tmp_path / f"{model.name}.pt"
    model.save(path)
    loaded = load_method(path)
    model.eval()
    with torch.no_grad():
        a, b = model.embed_clip(waves(clips)), loaded.embed_clip(waves(clips))
    assert a.shape == (len(clips), model.embedding_dim)
    assert torch.equal(a, b)


def assert_learned(name: str, result: Learned, loss_factor: float, margin: float, tmp_path) -> None:
    """Loss fell below ``loss_factor`` of its start, the probe leads both random-init
    baselines by ``margin``, and the trained model survives a checkpoint round trip."""
    print(f"{name}: {result}")
    assert result.loss_ratio < loss_factor, f"{name}: loss did not fall enough: {result}"
    result.assert_beats_random_init(margin)
    assert_round_trip(result.model, synthetic_clips(3, n_classes=8, duration_s=1.0, seed=2), tmp_path)
