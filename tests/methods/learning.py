"""What every "this method learns" test shares: train in-process on synthetic clips, then probe
the trained network and the same network at random initialisation, two ways.

"The same architecture at random initialisation" is measured twice, and a method must beat
both (tests/methods/test_methods_a.py, test_methods_b.py, test_teacher.py):

* ``random``: the initial weights *and* normalisation buffers, so BatchNorm in eval mode is
  the identity and the network is an un-normalised random net. On timbre-like classes its
  features are strong (0.70-0.91 on the 4-class probe): the baseline to beat.
* ``random_bn``: the same weights with BatchNorm statistics estimated on training batches
  (cumulative average, no gradient step): the function the architecture computes at init once
  it normalises.

The probe is scikit-learn's logistic regression on standardised clip embeddings
(``embed_clip``), fitted on one synthetic seed and scored on another.
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


def waves(clips) -> torch.Tensor:
    return torch.from_numpy(np.stack([c.audio for c in clips]))


def probe_accuracy(model, train, test, c: float = 1.0) -> float:
    """Logistic regression on standardised clip embeddings; test accuracy."""
    model.eval()
    with torch.no_grad():
        xtr, xte = model.embed_clip(waves(train)).numpy(), model.embed_clip(waves(test)).numpy()
    ytr, yte = [x.labels[0] for x in train], [x.labels[0] for x in test]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000)).fit(xtr, ytr)
    return float(clf.score(xte, yte))


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

    @property
    def loss_ratio(self) -> float:
        return float(self.losses[-20:].mean() / self.losses[:20].mean())

    def __str__(self) -> str:
        return (f"loss {self.losses[:20].mean():.4f} -> {self.losses[-20:].mean():.4f}; probe "
                f"{self.trained:.3f} vs random init {self.random:.3f} (BN statistics fitted "
                f"{self.random_bn:.3f})")

    def assert_beats_random_init(self, margin: float = 0.0) -> None:
        best = max(self.random, self.random_bn)
        assert self.trained > best + margin, str(self)


def train_and_compare(method_cls, cfg, pool: Sequence, probe_train: Sequence,
                      probe_test: Sequence, steps: int, seed: int = 0, probe_c: float = 1.0,
                      after_step=None) -> Learned:
    """Train ``method_cls(cfg)`` for ``steps`` on batches of ``pool`` (seeded), then probe it
    and both random-init baselines. ``after_step(metrics)`` sees every step's metrics."""
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
    return Learned(np.array(losses), probe_accuracy(model, probe_train, probe_test, probe_c),
                   probe_accuracy(random_model, probe_train, probe_test, probe_c),
                   probe_accuracy(random_bn, probe_train, probe_test, probe_c), model)
