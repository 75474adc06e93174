"""The baselines every evaluation table carries next to a pretrained encoder.

- **random-init**: the same architecture, untrained (``random_init``), embedded and probed
  exactly like the pretrained one. Without it a probe score says nothing about pretraining: a
  random convolutional network already gives a usable linear feature space.
- **log-mel**: mean and standard deviation over time of the 64-bin log-mel (ANCHORS section
  1), ``logmel_stats``; the same features the offline tasks' build-time baseline uses.
- **supervised**: the same architecture trained end to end, with a linear head, on the task's
  training split (``train_supervised``), model selection on the validation split; the
  in-domain upper bound of Tagliasacchi et al. 2020 (arXiv 1905.11796, Table 2 "Supervised").

Pure torch / numpy: ``tympan.distributed.evaluate`` runs them per task.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from tympan.config import check
from tympan.methods.probe import mean_average_precision, metric_name


def random_init(method: str, cfg: Any, seed: int):
    """The method's network at random initialisation (seeded), in eval mode."""
    from tympan.methods.registry import build_method

    torch.manual_seed(seed)
    return build_method(method, cfg).eval()


def logmel_stats(waves: Sequence[np.ndarray]) -> np.ndarray:
    """``[N, 128]`` float32: log-mel mean and std over time per clip (16 kHz waves)."""
    from tympan.datasets.offline.tasks import baseline_features

    return np.stack([baseline_features(np.asarray(w, dtype=np.float32)) for w in waves])


# ---- supervised ------------------------------------------------------------------------------

@dataclass
class SupervisedConfig:
    steps: int = 300                 # optimisation steps on the training split
    batch_size: int = 32
    lr: float = 1e-3                 # Adam
    crop_s: float = 1.0              # training crops (loop-padded when a clip is shorter)
    eval_every: int = 50             # validation checks; the best one is kept

    def __post_init__(self):
        for k in ("steps", "batch_size", "eval_every"):
            check(getattr(self, k) >= 1, k, getattr(self, k), "must be >= 1")
        check(self.lr > 0, "lr", self.lr, "must be positive")
        check(self.crop_s > 0, "crop_s", self.crop_s, "must be positive")


def clip_embed_with_grad(model, wave: Tensor) -> Tensor:
    """``model.embed_clip`` with gradients: a few methods decorate ``embed_frames`` with
    ``torch.no_grad`` (inference only); training end to end calls the undecorated function."""
    fn = type(model).embed_frames
    fn = getattr(fn, "__wrapped__", fn)        # functools.wraps keeps the original here
    emb, _ = fn(model, wave)
    return emb.mean(dim=1)


class SupervisedModel(nn.Module):
    """Encoder (a method's network) + linear head over its clip embedding."""

    def __init__(self, encoder, n_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.embedding_dim, n_classes)

    def forward(self, wave: Tensor) -> Tensor:
        return self.head(clip_embed_with_grad(self.encoder, wave))

    @torch.no_grad()
    def predict(self, waves: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """Logits ``[N, C]`` of whole clips (equal lengths batched together)."""
        self.eval()
        out = np.zeros((len(waves), self.head.out_features), dtype=np.float32)
        by_length: dict[int, list[int]] = {}
        for i, w in enumerate(waves):
            by_length.setdefault(len(w), []).append(i)
        for idx in by_length.values():
            for j in range(0, len(idx), batch_size):
                chunk = idx[j:j + batch_size]
                out[chunk] = self(torch.from_numpy(np.stack([waves[i] for i in chunk]))).numpy()
        return out


def _targets(labels: Sequence, classes: list[str], multilabel: bool) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    if not multilabel:
        return np.array([index.get(y, -1) for y in labels])
    t = np.zeros((len(labels), len(classes)), dtype=np.float32)
    for i, ys in enumerate(labels):
        for c in ys:
            if c in index:
                t[i, index[c]] = 1.0
    return t


def score_logits(logits: np.ndarray, targets: np.ndarray, multilabel: bool) -> float:
    if multilabel:
        return mean_average_precision(logits, targets)
    return float((logits.argmax(1) == targets).mean())


def _crops(waves: Sequence[np.ndarray], idx: np.ndarray, n: int, rng: np.random.Generator) -> Tensor:
    from tympan.methods.base import crop, random_start

    return torch.from_numpy(np.stack([crop(waves[i], random_start(rng, len(waves[i]), n), n)
                                      for i in idx]).astype(np.float32))


def train_supervised(method: str, method_cfg: Any, train_waves: Sequence[np.ndarray],
                     train_labels: Sequence, valid_waves: Sequence[np.ndarray] | None,
                     valid_labels: Sequence | None, *, multilabel: bool = False,
                     cfg: SupervisedConfig = SupervisedConfig(), seed: int = 0
                     ) -> tuple[SupervisedModel, list[str], dict[str, Any]]:
    """Train the method's architecture (fresh, seeded init) + a linear head on the labels.

    Every ``eval_every`` steps the validation score is measured and the best weights kept (the
    last ones without a validation split). Returns (model in eval mode, classes, log)."""
    classes = (sorted({c for ys in train_labels for c in ys}) if multilabel
               else sorted(set(train_labels)))
    model = SupervisedModel(random_init(method, method_cfg, seed), len(classes))
    sr = model.encoder.sample_rate
    n = int(round(cfg.crop_s * sr))
    y_train = torch.from_numpy(_targets(train_labels, classes, multilabel))
    has_valid = valid_waves is not None and len(valid_waves) > 0
    y_valid = _targets(valid_labels, classes, multilabel) if has_valid else None
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = nn.functional.binary_cross_entropy_with_logits if multilabel else nn.functional.cross_entropy
    rng = np.random.default_rng(seed)
    best = (-np.inf, None, 0)
    losses = []
    for step in range(1, cfg.steps + 1):
        model.train()
        idx = rng.choice(len(train_waves), size=min(cfg.batch_size, len(train_waves)), replace=False)
        if len(idx) < 2:                     # BatchNorm needs two examples
            idx = rng.choice(len(train_waves), size=2, replace=True)
        loss = loss_fn(model(_crops(train_waves, idx, n, rng)), y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if has_valid and (step % cfg.eval_every == 0 or step == cfg.steps):
            s = score_logits(model.predict(valid_waves), y_valid, multilabel)
            if s > best[0]:
                best = (s, copy.deepcopy(model.state_dict()), step)
    if best[1] is not None:
        model.load_state_dict(best[1])
    log = {"loss_first": float(np.mean(losses[:10])), "loss_last": float(np.mean(losses[-10:])),
           "valid_score": None if not has_valid else float(best[0]), "best_step": best[2],
           "metric": metric_name(multilabel)}
    return model.eval(), classes, log


def supervised_score(method: str, method_cfg: Any, train: tuple[Sequence, Sequence],
                     valid: tuple[Sequence, Sequence] | None, test: tuple[Sequence, Sequence], *,
                     multilabel: bool = False, cfg: SupervisedConfig = SupervisedConfig(),
                     seed: int = 0) -> tuple[float, dict[str, Any]]:
    """Train on ``train`` = (waves, labels), select on ``valid``, score the end-to-end classifier
    on ``test``: accuracy (multiclass; unseen test classes are errors) or mAP (multilabel)."""
    model, classes, log = train_supervised(method, method_cfg, *train, *(valid or (None, None)),
                                           multilabel=multilabel, cfg=cfg, seed=seed)
    logits = model.predict(test[0])
    return score_logits(logits, _targets(test[1], classes, multilabel), multilabel), log
