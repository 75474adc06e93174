"""Shared losses vs slow python-loop references and closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from tympan.methods.losses import (BilinearContrastive, batch_triplet, bilinear_contrastive,
                                   cosine_contrastive, masked_mse, ranking_triplet,
                                   triplet_margin)


def _logsumexp(xs):
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def _dot(u, v):
    return sum(x * y for x, y in zip(u, v))


def _unit(u):
    n = math.sqrt(_dot(u, u))
    return [x / n for x in u]


def _ref_bilinear(a, b, W):
    """Mean over i of -log softmax_j(a_i W b_j)[i], with python loops."""
    total = 0.0
    for i in range(len(a)):
        aw = [sum(a[i][k] * W[k][l] for k in range(len(W))) for l in range(len(W[0]))]
        scores = [_dot(aw, b[j]) for j in range(len(b))]
        total += _logsumexp(scores) - scores[i]
    return total / len(a)


def _ref_cosine(a, b, tau):
    a, b = [_unit(x) for x in a], [_unit(x) for x in b]
    total = 0.0
    for i in range(len(a)):
        scores = [_dot(a[i], b[j]) / tau for j in range(len(b))]
        total += _logsumexp(scores) - scores[i]
    return total / len(a)


def _sqdist(u, v):
    return sum((x - y) ** 2 for x, y in zip(u, v))


def _ref_batch_triplet(a, p, margin, mining, excluded=None, picks=None):
    """Per anchor: the mean hinge over its chosen negatives; then the mean over anchors that
    have any. ``excluded[i]``: rows that are no negative of anchor i."""
    a, p = [_unit(x) for x in a], [_unit(x) for x in p]
    per_anchor = []
    for i in range(len(a)):
        d_pos = _sqdist(a[i], p[i])
        d_negs = [_sqdist(a[i], p[j]) for j in range(len(p))
                  if j != i and j not in (excluded or {}).get(i, ())]
        if not d_negs:
            continue
        if mining == "hardest":
            d_negs = [min(d_negs)]
        elif mining == "semi-hard":
            farther = [d for d in d_negs if d > d_pos]
            d_negs = [min(farther)] if farther else [max(d_negs)]
        elif mining == "random":
            d_negs = [d_negs[int(picks[i] * len(d_negs))]]
        terms = [max(0.0, d_pos - d + margin) for d in d_negs]
        per_anchor.append(sum(terms) / len(terms))
    return sum(per_anchor) / len(per_anchor)


@pytest.fixture
def emb():
    g = torch.Generator().manual_seed(3)
    return (torch.randn(6, 5, generator=g, dtype=torch.float64),
            torch.randn(6, 5, generator=g, dtype=torch.float64),
            torch.randn(5, 5, generator=g, dtype=torch.float64))


def test_bilinear_matches_loop_reference(emb):
    a, b, W = emb
    got = bilinear_contrastive(a, b, W).item()
    assert got == pytest.approx(_ref_bilinear(a.tolist(), b.tolist(), W.tolist()), rel=1e-10)


@pytest.mark.parametrize("batch,scale", [(2, 1.0), (4, 1.0), (5, 3.0)])
def test_bilinear_closed_form_orthonormal(batch, scale):
    # a_i = b_i = e_i and W = scale * I: score matrix = scale * I, so every row's loss is
    # -log(e^s / (e^s + (B - 1))) = log(1 + (B - 1) e^{-s}).
    e = torch.eye(8, dtype=torch.float64)[:batch]
    got = bilinear_contrastive(e, e, scale * torch.eye(8, dtype=torch.float64)).item()
    assert got == pytest.approx(math.log(1 + (batch - 1) * math.exp(-scale)), rel=1e-12)


def test_bilinear_identical_embeddings_zero_W_is_uniform():
    # W = 0: all scores equal -> loss = log(B) whatever the embeddings.
    x = torch.randn(7, 4, dtype=torch.float64)
    assert bilinear_contrastive(x, x, torch.zeros(4, 4, dtype=torch.float64)).item() == \
        pytest.approx(math.log(7), rel=1e-12)


def test_bilinear_module_uses_its_W(emb):
    a, b, _ = emb
    mod = BilinearContrastive(5).double()
    assert mod(a, b).item() == pytest.approx(
        _ref_bilinear(a.tolist(), b.tolist(), mod.W.detach().tolist()), rel=1e-10)


def test_cosine_matches_reference_and_closed_form(emb):
    a, b, _ = emb
    assert cosine_contrastive(a, b, 0.2).item() == pytest.approx(
        _ref_cosine(a.tolist(), b.tolist(), 0.2), rel=1e-10)
    e = 3.0 * torch.eye(4, dtype=torch.float64)            # scale is normalised away
    assert cosine_contrastive(e, e, 0.5).item() == pytest.approx(
        math.log(1 + 3 * math.exp(-1 / 0.5)), rel=1e-12)
    with pytest.raises(ValueError, match="temperature"):
        cosine_contrastive(a, b, 0.0)


def _pair_at(d_neg: float) -> torch.Tensor:
    """Unit vector n with |e1 - n|^2 = d_neg (= 2 - 2 cos theta)."""
    c = 1 - d_neg / 2
    return torch.tensor([[c, math.sqrt(1 - c * c)]], dtype=torch.float64)


@pytest.mark.parametrize("delta", [-0.03, 0.0, 0.03])
def test_triplet_margin_boundaries(delta):
    margin = 0.1
    a = torch.tensor([[2.0, 0.0]], dtype=torch.float64, requires_grad=True)   # normalised inside
    p = torch.tensor([[1.0, 0.0]], dtype=torch.float64)                        # d_pos = 0
    n = _pair_at(margin + delta)                  # d_neg = margin + delta
    loss = triplet_margin(a, p, n, margin)
    assert loss.item() == pytest.approx(max(0.0, -delta), abs=1e-12)
    loss.backward()
    if delta > 0:                                 # inactive hinge: no gradient at all
        assert torch.count_nonzero(a.grad) == 0


def test_triplet_margin_k_negatives_and_reference():
    g = torch.Generator().manual_seed(0)
    a, p = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    n = torch.randn(4, 5, 3, generator=g, dtype=torch.float64)
    ref = []
    for i in range(4):
        ai, pi = _unit(a[i].tolist()), _unit(p[i].tolist())
        for k in range(5):
            ref.append(max(0.0, _sqdist(ai, pi) - _sqdist(ai, _unit(n[i, k].tolist())) + 0.5))
    assert triplet_margin(a, p, n, 0.5).item() == pytest.approx(sum(ref) / len(ref), rel=1e-10)


PICKS = [0.05, 0.95, 0.5, 0.3, 0.7]


@pytest.mark.parametrize("mining", ["all", "hardest", "semi-hard", "random"])
def test_batch_triplet_matches_reference(mining):
    g = torch.Generator().manual_seed(1)
    a, p = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(5, 4, generator=g, dtype=torch.float64)
    pick = torch.tensor(PICKS, dtype=torch.float64)
    got = batch_triplet(a, p, 0.3, mining=mining, pick=pick).item()
    assert got == pytest.approx(_ref_batch_triplet(a.tolist(), p.tolist(), 0.3, mining, picks=PICKS),
                                rel=1e-10)
    # Row identities: row 4 is clip 0 again (no negative of each other); row 3's positive has
    # clip 1 mixed in (p_mix), so it is no negative of anchor 1.
    keys = (torch.tensor([7, 8, 9, 10, 7]), torch.tensor([-1, -1, -1, 8, -1]))
    got = batch_triplet(a, p, 0.3, mining=mining, pick=pick, keys=keys).item()
    want = _ref_batch_triplet(a.tolist(), p.tolist(), 0.3, mining, picks=PICKS,
                              excluded={0: {4}, 4: {0}, 1: {3}})
    assert got == pytest.approx(want, rel=1e-10)
    with pytest.raises(ValueError, match="at least 2"):
        batch_triplet(a[:1], p[:1], 0.3)


def test_batch_triplet_mined_negatives():
    """Which negative each mining picks, in closed form. Unit vectors on a circle: anchor 0 at
    angle 0, its positive at 0.5 rad, the other rows' positives at 0.2 (closer than the
    positive), 0.8 and 2.0 rad. Rows 1-3 are one clip (no negatives of each other) and row 0's
    positive has that clip mixed in (no negative of theirs): only anchor 0 has negatives."""
    ang = torch.tensor([0.5, 0.2, 0.8, 2.0], dtype=torch.float64)
    p = torch.stack([ang.cos(), ang.sin()], 1)
    a = torch.tensor([[1.0, 0.0]] * 4, dtype=torch.float64)
    keys = (torch.tensor([0, 5, 5, 5]), torch.tensor([5, -1, -1, -1]))
    d = lambda x: 2 - 2 * math.cos(x)                                 # noqa: E731 squared distance
    term = lambda x: d(0.5) - d(x) + 3.0                              # noqa: E731 margin 3: all > 0
    for mining, pick, angle in (("hardest", 0.0, 0.2), ("semi-hard", 0.0, 0.8), ("random", 0.0, 0.2),
                                ("random", 0.5, 0.8), ("random", 0.99, 2.0)):
        got = batch_triplet(a, p, 3.0, mining=mining, keys=keys,
                            pick=torch.full((4,), pick, dtype=torch.float64)).item()
        assert got == pytest.approx(term(angle), rel=1e-12), (mining, pick)
    # all: the mean over anchor 0's three negatives
    assert batch_triplet(a, p, 3.0, keys=keys).item() == pytest.approx(
        (term(0.2) + term(0.8) + term(2.0)) / 3, rel=1e-12)
    # Semi-hard without any negative farther than the positive: the farthest one (TF Addons).
    close = torch.stack([ang.cos(), ang.sin()], 1)
    close[1:] = torch.tensor([[math.cos(0.1), math.sin(0.1)], [math.cos(0.2), math.sin(0.2)],
                              [math.cos(0.3), math.sin(0.3)]], dtype=torch.float64)
    assert batch_triplet(a, close, 3.0, mining="semi-hard", keys=keys).item() == pytest.approx(
        term(0.3), rel=1e-12)
    with pytest.raises(ValueError, match="semi-hard"):
        batch_triplet(a, p, 0.3, mining="nearest")
    with pytest.raises(ValueError, match="pick"):
        batch_triplet(a, p, 0.3, mining="random")


def test_ranking_triplet():
    pos = torch.tensor([1.0, 0.2, 0.5], dtype=torch.float64)
    neg = torch.tensor([0.0, 0.4, 0.5], dtype=torch.float64)
    ref = sum(max(0.0, 0.5 - x + y) for x, y in zip(pos.tolist(), neg.tolist())) / 3
    assert ranking_triplet(pos, neg, 0.5).item() == pytest.approx(ref, rel=1e-12)
    # exactly at the margin: s_pos - s_neg = margin -> 0
    assert ranking_triplet(pos[:1], pos[:1] - 0.5, 0.5).item() == 0.0
    neg_k = torch.stack([neg, neg + 1.0], dim=1)                      # [B, K]
    ref_k = sum(max(0.0, 0.5 - x + y + d) for x, y in zip(pos.tolist(), neg.tolist()) for d in (0, 1)) / 6
    assert ranking_triplet(pos, neg_k, 0.5).item() == pytest.approx(ref_k, rel=1e-12)


def test_masked_mse():
    g = torch.Generator().manual_seed(2)
    pred, target = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool).unsqueeze(-1)    # [2, 3, 1]
    total, count = 0.0, 0
    for b in range(2):
        for t in range(3):
            if mask[b, t, 0]:
                total += sum((x - y) ** 2 for x, y in zip(pred[b, t].tolist(), target[b, t].tolist()))
                count += 4
    assert masked_mse(pred, target, mask).item() == pytest.approx(total / count, rel=1e-6)
    assert masked_mse(pred, target).item() == pytest.approx(((pred - target) ** 2).mean().item(), rel=1e-6)
    assert masked_mse(pred, target, torch.zeros(2, 3, 1)).item() == 0.0
    with pytest.raises(ValueError, match="differ"):
        masked_mse(pred, target[:1])
