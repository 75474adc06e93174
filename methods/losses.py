"""Losses shared by the self-supervised methods: small pure functions + thin module wrappers.

No function reads a config. The ones with negatives take the local batch and an optional
``gather`` callable (``Dist.gather``: all-gather with gradients, rank order) plus the rank:
each rank scores its own rows against the *global* pool of candidates, and the target of
local row i is global row ``rank * B + i``. With ``gather=None`` (or world size 1) they are
the plain single-process losses. Averaging the per-rank losses (and, as DDP does, the
per-rank gradients) gives exactly the loss and gradient of the concatenated batch.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Gather = Callable[[Tensor], Tensor]


def _global(x: Tensor, gather: Gather | None, rank: int) -> tuple[Tensor, Tensor]:
    """(global pool [N, ...], global index of each local row [B])."""
    pool = x if gather is None else gather(x)
    offset = 0 if gather is None else rank * x.shape[0]
    return pool, torch.arange(x.shape[0], device=x.device) + offset


def negatives_ruled_out(rows: Tensor, n: int, keys: tuple[Tensor, Tensor] | None,
                        gather: Gather | None) -> Tensor:
    """Bool [B, N]: pool columns that are no negative of local row i (global row ``rows[i]``):
    itself, and with ``keys = (clip_key [B], mix_key [B])`` (int64, -1 = nothing mixed in) any
    row of the same clip or whose positive has row i's clip mixed into it."""
    cols = torch.arange(n, device=rows.device)
    out = cols.unsqueeze(0) == rows.unsqueeze(1)
    if keys is not None:
        own, mixed = keys
        clip_pool, mix_pool = (k if gather is None else gather(k) for k in (own, mixed))
        out = out | (clip_pool.unsqueeze(0) == own.unsqueeze(1))
        out = out | (mix_pool.unsqueeze(0) == own.unsqueeze(1))
    return out


def _softmax_over_pool(logits: Tensor, target: Tensor, keys, gather) -> Tensor:
    """Cross-entropy of each row against its target column; with ``keys``, the columns
    :func:`negatives_ruled_out` names (other than the target) leave the softmax."""
    if keys is not None:
        drop = negatives_ruled_out(target, logits.shape[1], keys, gather)
        drop[torch.arange(len(target), device=target.device), target] = False
        logits = logits.masked_fill(drop, float("-inf"))
    return F.cross_entropy(logits, target)


def bilinear_contrastive(a: Tensor, b: Tensor, W: Tensor, *, gather: Gather | None = None,
                         rank: int = 0, keys: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """COLA loss (Saeed, Grangier, Zeghidour, ICASSP 2021, arXiv 2010.10915, Eq. 1-2).

    "s(x, x') = g(f(x))^T W g(f(x'))" between anchors ``a`` [B, D] and positives ``b``
    [B, D]; softmax cross-entropy where the positive of anchor i is b_i and the other
    clips' positives of the (global) batch are the negatives, less those ``keys`` rule out
    (:func:`negatives_ruled_out`). ``W`` [D, D]. Returns the mean over local anchors (scalar).
    """
    pool, target = _global(b, gather, rank)
    logits = (a @ W) @ pool.T                                # [B, N]
    return _softmax_over_pool(logits, target, keys, gather)


def cosine_contrastive(a: Tensor, b: Tensor, temperature: float, *,
                       gather: Gather | None = None, rank: int = 0,
                       keys: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """COLA's cosine variant (Saeed et al. 2021, Sec. 4.3: "cosine similarity with
    temperature 0.2"): the same cross-entropy over cos(a_i, b_j) / temperature."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    pool, target = _global(b, gather, rank)
    return _softmax_over_pool(a @ pool.T / temperature, target, keys, gather)


def triplet_margin(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float) -> Tensor:
    """Triplet margin loss on L2-normalised embeddings (Jansen et al. 2018, arXiv 1711.02209,
    Eq. 1; TRILL, Shor et al. 2020, arXiv 2002.12764):

        mean over triplets of max(0, |a - p|^2 - |a - n|^2 + margin)

    with squared Euclidean distances between unit vectors (= 2 - 2 cos, in [0, 4]).
    ``anchor``, ``positive`` [B, D]; ``negative`` [B, D] (one per anchor) or [B, K, D]
    (K negatives per anchor, every triplet weighted equally).
    """
    a, p, n = (F.normalize(x, dim=-1) for x in (anchor, positive, negative))
    d_pos = (a - p).pow(2).sum(-1)                           # [B]
    if n.dim() == 3:
        d_neg = (a.unsqueeze(1) - n).pow(2).sum(-1)          # [B, K]
        d_pos = d_pos.unsqueeze(1)
    else:
        d_neg = (a - n).pow(2).sum(-1)                       # [B]
    return F.relu(d_pos - d_neg + margin).mean()


def batch_triplet(anchor: Tensor, positive: Tensor, margin: float, *,
                  gather: Gather | None = None, rank: int = 0, mining: str = "all",
                  keys: tuple[Tensor, Tensor] | None = None, pick: Tensor | None = None) -> Tensor:
    """Triplet loss whose negatives are the other clips' positives of the global batch.

    ``anchor``, ``positive`` [B, D] (row i of both from clip i). For local anchor i (global
    row g) the candidate negatives are pool rows j != g, less those ``keys`` rule out:
    ``keys = (clip_key [B], mix_key [B])`` (int64, -1 = nothing mixed in) drops row j when it
    is the same clip (``clip_key[j] == clip_key[i]``) or its positive has anchor i's clip
    mixed into it (``mix_key[j] == clip_key[i]``). Mining:

    * ``"all"``: every remaining triplet, mean over each anchor's negatives, then over anchors;
    * ``"hardest"``: the nearest negative of each anchor (FaceNet-style batch-hard);
    * ``"semi-hard"``: the nearest negative farther than the positive (Schroff et al., FaceNet,
      CVPR 2015, Sec. 3.2: d(a, p) < d(a, n)); an anchor without one takes its farthest
      negative (the rule of TensorFlow Addons' ``triplet_semihard_loss``);
    * ``"random"``: one negative per anchor drawn uniformly from the other clips (Jansen et al.
      2018), ``pick`` [B] uniforms in [0, 1) choosing it.

    Anchors left without a negative are dropped from the mean. Needs N >= 2.
    """
    pool, rows = _global(positive, gather, rank)
    n = pool.shape[0]
    if n < 2:
        raise ValueError("batch_triplet needs at least 2 clips in the global batch for negatives")
    if mining not in ("all", "hardest", "semi-hard", "random"):
        raise ValueError(f"mining must be 'all', 'hardest', 'semi-hard' or 'random', got {mining!r}")
    valid = ~negatives_ruled_out(rows, n, keys, gather)                  # [B, N]
    a, p, pool = (F.normalize(x, dim=-1) for x in (anchor, positive, pool))
    d_pos = (a - p).pow(2).sum(-1)                                       # [B]
    d_neg = (a.unsqueeze(1) - pool.unsqueeze(0)).pow(2).sum(-1)          # [B, N]
    has = valid.any(dim=1)                                               # [B]
    if mining == "all":
        hinge = F.relu(d_pos.unsqueeze(1) - d_neg + margin) * valid
        per_anchor = hinge.sum(1) / valid.sum(1).clamp_min(1)
    else:
        d = d_neg.detach()
        if mining == "hardest":
            sel = d.masked_fill(~valid, float("inf")).argmin(1)
        elif mining == "semi-hard":
            semi = valid & (d > d_pos.detach().unsqueeze(1))
            nearest_semi = d.masked_fill(~semi, float("inf")).argmin(1)
            farthest = d.masked_fill(~valid, float("-inf")).argmax(1)
            sel = torch.where(semi.any(1), nearest_semi, farthest)
        else:
            if pick is None or pick.shape != d_pos.shape:
                raise ValueError("mining='random' needs pick [B], uniforms in [0, 1)")
            count = valid.sum(1)
            k = (pick.to(d.dtype) * count).long().clamp(max=(count - 1).clamp_min(0))
            sel = ((valid.long().cumsum(1) == (k + 1).unsqueeze(1)) & valid).long().argmax(1)
        chosen = d_neg.gather(1, sel.unsqueeze(1)).squeeze(1)
        per_anchor = F.relu(d_pos - chosen + margin)
    if not bool(has.any()):
        return (anchor.sum() + positive.sum()) * 0.0                     # no negative anywhere
    return per_anchor[has].mean()


def ranking_triplet(score_pos: Tensor, score_neg: Tensor, margin: float) -> Tensor:
    """Triplet ranking hinge on scores (Bengio & Heigold 2014, "Word embeddings for speech
    recognition", Sec. 3): mean of max(0, margin - s(audio, word) + s(audio, wrong word)).
    ``score_pos`` [B], ``score_neg`` [B] or [B, K]."""
    if score_neg.dim() == score_pos.dim() + 1:
        score_pos = score_pos.unsqueeze(-1)
    return F.relu(margin - score_pos + score_neg).mean()


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error, optionally over the entries where ``mask`` (broadcastable to
    ``pred``, bool or 0/1) is set: Audio2Vec's reconstruction loss (Tagliasacchi et al. 2020)
    and Audio Word2Vec's over padded sequences (Chung et al. 2016). An empty mask gives 0."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    err = (pred - target).pow(2)
    if mask is None:
        return err.mean()
    m = mask.to(err.dtype).expand_as(err)
    return (err * m).sum() / m.sum().clamp_min(1.0)


class BilinearContrastive(nn.Module):
    """COLA's bilinear similarity as a module: holds ``W`` [dim, dim], initialised
    N(0, 0.05^2) as google-research/cola's ``BilinearProduct`` ("random_normal")."""

    def __init__(self, dim: int, init_std: float = 0.05):
        super().__init__()
        self.W = nn.Parameter(torch.randn(dim, dim) * init_std)

    def forward(self, a: Tensor, b: Tensor, *, gather: Gather | None = None, rank: int = 0,
                keys: tuple[Tensor, Tensor] | None = None) -> Tensor:
        return bilinear_contrastive(a, b, self.W, gather=gather, rank=rank, keys=keys)


class CosineContrastive(nn.Module):
    def __init__(self, temperature: float = 0.2):
        super().__init__()
        self.temperature = temperature

    def forward(self, a: Tensor, b: Tensor, *, gather: Gather | None = None, rank: int = 0,
                keys: tuple[Tensor, Tensor] | None = None) -> Tensor:
        return cosine_contrastive(a, b, self.temperature, gather=gather, rank=rank, keys=keys)
