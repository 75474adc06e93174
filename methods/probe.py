"""Linear probe: a frozen embedding + one linear layer (multinomial logistic regression).

This is the downstream protocol of the papers tympan reproduces (Tagliasacchi et al. 2020,
Saeed et al. 2021: "a linear classifier on top of the frozen encoder"). Features are
standardised with the training statistics, then the layer is fit full-batch with L-BFGS and an
L2 penalty chosen on the validation split when one is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn


@dataclass
class ProbeResult:
    accuracy: float                 # on the test split
    valid_accuracy: float | None    # on the validation split (None without one)
    l2: float                       # the chosen penalty
    classes: list[str] = field(default_factory=list)


def _fit(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float, max_iter: int) -> nn.Linear:
    torch.manual_seed(0)
    layer = nn.Linear(x.shape[1], n_classes, dtype=x.dtype)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    opt = torch.optim.LBFGS(layer.parameters(), lr=1.0, max_iter=max_iter,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(layer(x), y) + l2 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return layer


def _accuracy(layer: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((layer(x).argmax(1) == y).double().mean())


def linear_probe(train_x: np.ndarray, train_y: Sequence[str], test_x: np.ndarray,
                 test_y: Sequence[str], valid_x: np.ndarray | None = None,
                 valid_y: Sequence[str] | None = None, *, l2_grid: Sequence[float] = (1e-4, 1e-3, 1e-2),
                 max_iter: int = 100) -> ProbeResult:
    """Fit on train, pick L2 on valid (if given, else the middle of the grid), score on test.

    ``*_x``: ``[N, D]`` embeddings; ``*_y``: string labels. Test labels unseen in training
    count as errors.
    """
    classes = sorted(set(train_y))
    index = {c: i for i, c in enumerate(classes)}
    mean = train_x.mean(0, keepdims=True)
    std = train_x.std(0, keepdims=True) + 1e-6

    def prep(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((x - mean) / std).astype(np.float64))

    def labels(ys: Sequence[str]) -> torch.Tensor:
        return torch.tensor([index.get(c, -1) for c in ys])

    xtr, ytr = prep(train_x), labels(train_y)
    xte, yte = prep(test_x), labels(test_y)
    if valid_x is not None and valid_y is not None and len(valid_y):
        xva, yva = prep(valid_x), labels(valid_y)
        scored = [(_accuracy(_fit(xtr, ytr, len(classes), l2, max_iter), xva, yva), -l2, l2)
                  for l2 in l2_grid]
        best_valid, _, best_l2 = max(scored)
    else:
        best_valid, best_l2 = None, list(l2_grid)[len(l2_grid) // 2]
    layer = _fit(xtr, ytr, len(classes), best_l2, max_iter)
    return ProbeResult(accuracy=_accuracy(layer, xte, yte), valid_accuracy=best_valid,
                       l2=best_l2, classes=classes)
