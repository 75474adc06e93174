"""Linear probe: a frozen embedding + one linear layer, and the frozen-embedding extraction.

This is the downstream protocol of the papers tympan reproduces (Tagliasacchi et al. 2020,
Saeed et al. 2021: "a linear classifier on top of the frozen encoder"). Features are
standardised with the training statistics, then the layer is fit full-batch with L-BFGS and an
L2 penalty chosen on the validation split only (or by inner cross-validation over the training
folds, :func:`cv_probe`).

- multiclass (one label per clip): softmax cross-entropy, scored by accuracy;
- multilabel (AudioSet style, any number of labels): one sigmoid per class, scored by mean
  average precision over the classes present in the test split (``mAP``).

The objective is convex: the probe's ``seed`` (its random initialisation) moves the result only
by the optimiser's tolerance. The spread worth reporting comes from the models (init seeds of a
random network, training seeds of a supervised one); ``tympan evaluate`` runs every seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

L2_GRID: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
Labels = Sequence[str] | Sequence[Sequence[str]]   # multiclass: one str per clip; multilabel: lists


@dataclass
class ProbeResult:
    score: float                    # on the test split: accuracy (multiclass) or mAP (multilabel)
    valid_score: float | None       # on the validation split / inner folds (None without one)
    l2: float                       # the chosen penalty
    metric: str = "accuracy"
    classes: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float:    # the name the demo and older callers use
        return self.score


def metric_name(multilabel: bool) -> str:
    return "mAP" if multilabel else "accuracy"


def _classes(ys: Labels, multilabel: bool) -> list[str]:
    return sorted({c for y in ys for c in y}) if multilabel else sorted(set(ys))


def _targets(ys: Labels, index: dict[str, int], multilabel: bool) -> torch.Tensor:
    if not multilabel:          # an unseen class gets -1: it can never be predicted (an error)
        return torch.tensor([index.get(c, -1) for c in ys])
    t = torch.zeros(len(ys), len(index), dtype=torch.float64)
    for i, y in enumerate(ys):
        for c in y:
            if c in index:
                t[i, index[c]] = 1.0
    return t


def _fit(x: torch.Tensor, y: torch.Tensor, n_out: int, l2: float, max_iter: int,
         multilabel: bool, seed: int) -> nn.Linear:
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(x.shape[1], n_out, dtype=x.dtype)
    with torch.no_grad():
        layer.weight.copy_(0.01 * torch.randn(layer.weight.shape, generator=g, dtype=x.dtype))
        layer.bias.zero_()
    opt = torch.optim.LBFGS(layer.parameters(), lr=1.0, max_iter=max_iter,
                            line_search_fn="strong_wolfe")
    loss_fn = (nn.functional.binary_cross_entropy_with_logits if multilabel
               else nn.functional.cross_entropy)

    def closure():
        opt.zero_grad()
        loss = loss_fn(layer(x), y) + l2 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return layer


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Mean over classes with at least one positive of sklearn's average precision."""
    from sklearn.metrics import average_precision_score

    keep = targets.sum(0) > 0
    if not keep.any():
        return float("nan")
    return float(np.mean([average_precision_score(targets[:, j], scores[:, j])
                          for j in np.flatnonzero(keep)]))


def _score(layer: nn.Linear, x: torch.Tensor, y: torch.Tensor, multilabel: bool) -> float:
    with torch.no_grad():
        out = layer(x)
    if multilabel:
        return mean_average_precision(out.numpy(), y.numpy())
    return float((out.argmax(1) == y).double().mean())


class _Standardise:
    """Training statistics -> float64 tensors (a constant feature stays finite)."""

    def __init__(self, train_x: np.ndarray):
        self.mean = train_x.mean(0, keepdims=True)
        self.std = train_x.std(0, keepdims=True) + 1e-6

    def __call__(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((np.asarray(x, dtype=np.float64) - self.mean) / self.std))


def linear_probe(train_x: np.ndarray, train_y: Labels, test_x: np.ndarray, test_y: Labels,
                 valid_x: np.ndarray | None = None, valid_y: Labels | None = None, *,
                 multilabel: bool = False, l2_grid: Sequence[float] = L2_GRID,
                 l2: float | None = None, max_iter: int = 100, seed: int = 0) -> ProbeResult:
    """Fit on train, pick L2 on valid (if given; else ``l2`` or the middle of the grid), score on
    test.

    ``*_x``: ``[N, D]`` embeddings; ``*_y``: string labels (lists of them when ``multilabel``).
    Multiclass test labels unseen in training count as errors.
    """
    classes = _classes(train_y, multilabel)
    index = {c: i for i, c in enumerate(classes)}
    prep = _Standardise(np.asarray(train_x))
    xtr, ytr = prep(train_x), _targets(train_y, index, multilabel)
    xte, yte = prep(test_x), _targets(test_y, index, multilabel)
    best_valid = None
    if l2 is None and valid_x is not None and valid_y is not None and len(valid_y):
        xva, yva = prep(valid_x), _targets(valid_y, index, multilabel)
        scored = [(_score(_fit(xtr, ytr, len(classes), c, max_iter, multilabel, seed), xva, yva,
                          multilabel), -c, c) for c in l2_grid]
        best_valid, _, l2 = max(scored, key=lambda s: (np.nan_to_num(s[0], nan=-1.0), s[1]))
    elif l2 is None:
        l2 = list(l2_grid)[len(l2_grid) // 2]
    layer = _fit(xtr, ytr, len(classes), l2, max_iter, multilabel, seed)
    return ProbeResult(score=_score(layer, xte, yte, multilabel), valid_score=best_valid, l2=l2,
                       metric=metric_name(multilabel), classes=classes)


def cv_probe(x: np.ndarray, y: Labels, folds: Sequence[str], *, multilabel: bool = False,
             l2_grid: Sequence[float] = L2_GRID, max_iter: int = 100, seed: int = 0
             ) -> dict[str, ProbeResult]:
    """K-fold cross-validation over named folds (ESC-50's fold1..fold5): each fold is the test
    set once; the L2 penalty is chosen by inner cross-validation over the remaining folds only
    (mean inner score), then the probe is refit on all of them. Returns fold -> result."""
    folds = np.asarray(folds)
    names = sorted(set(folds.tolist()))
    if len(names) < 3:
        raise ValueError(f"cross-validation needs at least 3 folds, got {names}")
    y = list(y)

    def take(mask: np.ndarray):
        return x[mask], [y[i] for i in np.flatnonzero(mask)]

    out = {}
    for test in names:
        inner = [f for f in names if f != test]
        inner_scores = []
        for c in l2_grid:
            s = [linear_probe(*take((folds != test) & (folds != v)), *take(folds == v),
                              multilabel=multilabel, l2=c, max_iter=max_iter, seed=seed).score
                 for v in inner]
            inner_scores.append((float(np.nanmean(s)), -c, c))
        best, _, c = max(inner_scores)
        res = linear_probe(*take(folds != test), *take(folds == test), multilabel=multilabel,
                           l2=c, max_iter=max_iter, seed=seed)
        res.valid_score = best
        out[test] = res
    return out


# ---- frozen embeddings ----------------------------------------------------------------------

@torch.no_grad()
def embed_waves(model, waves: Sequence[np.ndarray], batch_size: int = 64,
                device: torch.device | str = "cpu") -> np.ndarray:
    """Clip (scene) embeddings ``[N, D]`` float32 of waveforms at ``model.sample_rate``.

    Clips of equal length are embedded together (padding would change a clip's mean
    embedding), in batches of ``batch_size``. The one implementation behind ``tympan embed``,
    ``tympan evaluate`` and the demo's table."""
    out = np.zeros((len(waves), model.embedding_dim), dtype=np.float32)
    by_length: dict[int, list[int]] = {}
    for i, w in enumerate(waves):
        by_length.setdefault(len(w), []).append(i)
    for idx in by_length.values():
        for j in range(0, len(idx), batch_size):
            chunk = idx[j:j + batch_size]
            batch = torch.from_numpy(np.stack([np.asarray(waves[i], dtype=np.float32) for i in chunk]))
            out[chunk] = model.embed_clip(batch.to(device)).float().cpu().numpy()
    return out


@torch.no_grad()
def embed_waves_frames(model, waves: Sequence[np.ndarray], device: torch.device | str = "cpu"
                       ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per clip: (frame embeddings ``[T', D]`` float32, centre times ``[T']`` in ms)."""
    out: list = [None] * len(waves)
    by_length: dict[int, list[int]] = {}
    for i, w in enumerate(waves):
        by_length.setdefault(len(w), []).append(i)
    for idx in by_length.values():
        for j in range(0, len(idx), 32):
            chunk = idx[j:j + 32]
            batch = torch.from_numpy(np.stack([np.asarray(waves[i], dtype=np.float32) for i in chunk]))
            emb, t_ms = model.embed_frames(batch.to(device))
            for k, i in enumerate(chunk):
                out[i] = (emb[k].float().cpu().numpy(), t_ms[k].float().cpu().numpy())
    return out
