"""The baselines every evaluation table carries next to a pretrained encoder.

- **random-init**: the same architecture, untrained (``random_init``), embedded and probed
  exactly like the pretrained one. Without it a probe score says nothing about pretraining: a
  random convolutional network already gives a usable linear feature space.
- **log-mel**: mean and standard deviation over time of the 64-bin log-mel (ANCHORS section
  1), ``logmel_stats``; the same features the offline tasks' build-time baseline uses.
- **supervised**: the same architecture trained end to end, with a linear head, on the task's
  training split (``train_supervised``), model selection on the validation split; the
  in-domain upper bound of Tagliasacchi et al. 2020 (arXiv 1905.11796, Table 2 "Supervised").
  It is scored like every other row (``supervised_score``): the trained encoder is frozen and
  the same standardised, validation-tuned linear probe is fit on its clip embeddings, so the
  rows differ only in the features. Trained on whole clips (up to ``crop_s``), with BatchNorm
  statistics re-estimated for the weights being scored (docs/results.md section 5 has the
  measurements behind these choices).

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
from tympan.methods.probe import embed_waves, linear_probe, mean_average_precision, metric_name


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
    steps: int = 100                 # optimisation steps on the training split
    batch_size: int = 16
    lr: float = 1e-3                 # Adam
    # Training crops: whole clips up to this length (loop-padded when a clip is shorter than the
    # longest training clip). A task's label is the clip's: a bird call somewhere in a 5-s bed
    # makes the clip "bird", so a 1-s crop of it is often a negative labelled positive; and the
    # clip embedding that is scored is the mean over the whole clip's windows.
    crop_s: float = 5.0
    eval_every: int = 25             # validation checks; the best one is kept
    bn_batches: int = 4              # training batches that re-estimate BatchNorm statistics
    score: str = "probe"             # "probe": linear probe on the frozen trained encoder; "head"

    def __post_init__(self):
        for k in ("steps", "batch_size", "eval_every"):
            check(getattr(self, k) >= 1, k, getattr(self, k), "must be >= 1")
        check(self.lr > 0, "lr", self.lr, "must be positive")
        check(self.crop_s > 0, "crop_s", self.crop_s, "must be positive")
        check(self.bn_batches >= 0, "bn_batches", self.bn_batches, "must be >= 0")
        check(self.score in ("probe", "head"), "score", self.score, "must be probe or head")


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


def _batch_idx(rng: np.random.Generator, n_clips: int, batch_size: int) -> np.ndarray:
    idx = rng.choice(n_clips, size=min(batch_size, n_clips), replace=False)
    if len(idx) < 2:                     # BatchNorm needs two examples
        idx = rng.choice(n_clips, size=2, replace=True)
    return idx


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, waves: Sequence[np.ndarray], n: int, batch_size: int,
                          n_batches: int, rng: np.random.Generator) -> None:
    """Replace every BatchNorm's running statistics by their plain average over ``n_batches``
    training batches through the current weights ("precise BN").

    Why: eval mode normalises with running averages (momentum 0.1) that mix the statistics of
    weights tens of steps old; after a few dozen steps of a fast-moving network they are off and
    a checkpoint scores near chance on validation although its training-mode outputs are right
    (measured in docs/results.md section 5). Leaves the model in eval mode."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or n_batches < 1:
        model.eval()
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None                # cumulative average over the batches below
    model.train()
    for _ in range(n_batches):
        model(_crops(waves, _batch_idx(rng, len(waves), batch_size), n, rng))
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    model.eval()


def train_supervised(method: str, method_cfg: Any, train_waves: Sequence[np.ndarray],
                     train_labels: Sequence, valid_waves: Sequence[np.ndarray] | None,
                     valid_labels: Sequence | None, *, multilabel: bool = False,
                     cfg: SupervisedConfig = SupervisedConfig(), seed: int = 0
                     ) -> tuple[SupervisedModel, list[str], dict[str, Any]]:
    """Train the method's architecture (fresh, seeded init) + a linear head on the labels.

    Every ``eval_every`` steps the BatchNorm statistics are re-estimated for the current weights
    and the head's validation score is measured; the best weights are kept (the last ones
    without a validation split). Returns (model in eval mode, classes, log)."""
    classes = (sorted({c for ys in train_labels for c in ys}) if multilabel
               else sorted(set(train_labels)))
    model = SupervisedModel(random_init(method, method_cfg, seed), len(classes))
    sr = model.encoder.sample_rate
    n = min(int(round(cfg.crop_s * sr)), max(len(w) for w in train_waves))   # whole clips
    y_train = torch.from_numpy(_targets(train_labels, classes, multilabel))
    has_valid = valid_waves is not None and len(valid_waves) > 0
    y_valid = _targets(valid_labels, classes, multilabel) if has_valid else None
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = nn.functional.binary_cross_entropy_with_logits if multilabel else nn.functional.cross_entropy
    rng = np.random.default_rng(seed)
    bn_rng = np.random.default_rng([seed, 1])    # BN batches leave the training batches unchanged
    best = (-np.inf, None, 0)
    losses, curve = [], []
    for step in range(1, cfg.steps + 1):
        model.train()
        idx = _batch_idx(rng, len(train_waves), cfg.batch_size)
        loss = loss_fn(model(_crops(train_waves, idx, n, rng)), y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if has_valid and (step % cfg.eval_every == 0 or step == cfg.steps):
            recalibrate_batchnorm(model, train_waves, n, cfg.batch_size, cfg.bn_batches, bn_rng)
            s = score_logits(model.predict(valid_waves), y_valid, multilabel)
            curve.append((step, round(s, 4)))
            if s > best[0]:
                best = (s, copy.deepcopy(model.state_dict()), step)
    if best[1] is not None:
        model.load_state_dict(best[1])
    else:
        recalibrate_batchnorm(model, train_waves, n, cfg.batch_size, cfg.bn_batches, bn_rng)
    log = {"loss_first": float(np.mean(losses[:10])), "loss_last": float(np.mean(losses[-10:])),
           "valid_score": None if not has_valid else float(best[0]), "best_step": best[2],
           "valid_curve": curve, "metric": metric_name(multilabel)}
    return model.eval(), classes, log


def supervised_scores(method: str, method_cfg: Any, train: tuple[Sequence, Sequence],
                      valid: tuple[Sequence, Sequence] | None,
                      tests: dict[str, tuple[Sequence, Sequence]], *, multilabel: bool = False,
                      cfg: SupervisedConfig = SupervisedConfig(), seed: int = 0
                      ) -> tuple[dict[str, float], dict[str, Any]]:
    """Train once on ``train`` = (waves, labels), select on ``valid``, score on each of ``tests``
    (name -> (waves, labels)): accuracy (multiclass; unseen test classes are errors) or mAP
    (multilabel).

    ``cfg.score == "probe"`` (default): the trained encoder is frozen and scored by the protocol
    of every other row, :func:`tympan.methods.probe.linear_probe` on its clip embeddings
    (standardised; L2 chosen on ``valid`` with the first test set, reused for the others, as
    ``tympan evaluate`` does). ``"head"``: the end-to-end classifier's own logits. The log has
    both (``head_scores``)."""
    model, classes, log = train_supervised(method, method_cfg, *train, *(valid or (None, None)),
                                           multilabel=multilabel, cfg=cfg, seed=seed)
    log["head_scores"] = {k: score_logits(model.predict(w), _targets(y, classes, multilabel), multilabel)
                          for k, (w, y) in tests.items()}
    if cfg.score == "head":
        return dict(log["head_scores"]), log
    x_train = embed_waves(model.encoder, train[0])
    has_valid = valid is not None and len(valid[0]) > 0
    va = (embed_waves(model.encoder, valid[0]), valid[1]) if has_valid else ()
    out, l2 = {}, None
    for k, (w, y) in tests.items():
        res = linear_probe(x_train, train[1], embed_waves(model.encoder, w), y,
                           *(va if l2 is None else ()), multilabel=multilabel, l2=l2, seed=seed)
        out[k], l2 = res.score, res.l2
    log["probe_l2"] = l2
    return out, log


def supervised_score(method: str, method_cfg: Any, train: tuple[Sequence, Sequence],
                     valid: tuple[Sequence, Sequence] | None, test: tuple[Sequence, Sequence], *,
                     multilabel: bool = False, cfg: SupervisedConfig = SupervisedConfig(),
                     seed: int = 0) -> tuple[float, dict[str, Any]]:
    """:func:`supervised_scores` with one test set -> (score, log)."""
    scores, log = supervised_scores(method, method_cfg, train, valid, {"test": test},
                                    multilabel=multilabel, cfg=cfg, seed=seed)
    return scores["test"], log
