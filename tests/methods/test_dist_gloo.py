"""Two real processes, a gloo group on 127.0.0.1: losses with negatives gathered across workers
(``Dist.gather``) give the loss AND gradients of one process on the concatenated batch.

Each rank embeds its half of a global batch with the same small linear model, computes the
loss with ``gather=dist.gather``; the mean of the per-rank losses and the DDP-style average
of the per-rank parameter gradients must equal the single-process loss / gradients of the
full batch (computed in the same process with ``gather=None``). To cover another loss, add
one line to LOSS_CASES: ``name: fn(a, b, gather, rank) -> scalar``.
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from tympan.methods.audio_text import audio_text_ranking
from tympan.methods.dist import Dist
from tympan.methods.losses import batch_triplet, bilinear_contrastive, cosine_contrastive

_W = torch.eye(6, dtype=torch.float64) * 0.7 + 0.05      # a fixed, non-trivial bilinear W

# Row identities over the global batch of 6 (triplet and COLA ``keys``): row 3 is clip 0 again, row 5's positive has
# row 1's clip mixed in (losses.batch_triplet ``keys``), and fixed random-negative picks.
_KEYS = (torch.tensor([10, 11, 12, 10, 14, 15]), torch.tensor([-1, -1, 14, -1, -1, 11]))
_PICK = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.7, 0.99], dtype=torch.float64)


def _local(tensors, a, gather, rank):
    """The rows of global-batch tensors that go with local batch ``a`` (rank's slice; from row 0
    in the one-process reference)."""
    start = 0 if gather is None else rank * a.shape[0]
    return tuple(t[start:start + a.shape[0]] for t in tensors)


LOSS_CASES = {
    "cola_bilinear": lambda a, b, gather, rank: bilinear_contrastive(a, b, _W, gather=gather, rank=rank),
    "cola_cosine": lambda a, b, gather, rank: cosine_contrastive(a, b, 0.2, gather=gather, rank=rank),
    "cola_bilinear_keys": lambda a, b, gather, rank: bilinear_contrastive(
        a, b, _W, gather=gather, rank=rank, keys=_local(_KEYS, a, gather, rank)),
    "cola_cosine_keys": lambda a, b, gather, rank: cosine_contrastive(
        a, b, 0.2, gather=gather, rank=rank, keys=_local(_KEYS, a, gather, rank)),
    "triplet_all": lambda a, b, gather, rank: batch_triplet(a, b, 0.4, gather=gather, rank=rank),
    "triplet_hardest": lambda a, b, gather, rank: batch_triplet(a, b, 0.4, gather=gather, rank=rank,
                                                                 mining="hardest"),
    "triplet_semihard_keys": lambda a, b, gather, rank: batch_triplet(
        a, b, 0.4, gather=gather, rank=rank, mining="semi-hard", keys=_local(_KEYS, a, gather, rank)),
    "triplet_all_keys": lambda a, b, gather, rank: batch_triplet(
        a, b, 0.4, gather=gather, rank=rank, keys=_local(_KEYS, a, gather, rank)),
    "triplet_random": lambda a, b, gather, rank: batch_triplet(
        a, b, 0.4, gather=gather, rank=rank, mining="random", keys=_local(_KEYS, a, gather, rank),
        pick=_local((_PICK,), a, gather, rank)[0]),
    "audio_text": lambda a, b, gather, rank: audio_text_ranking(a, b, b.flip(-1), (b.detach()[:, :2] > 0).double(), 0.5, gather=gather),
}

WORLD, LOCAL_B, IN_DIM = 2, 3, 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model() -> torch.nn.Module:
    torch.manual_seed(0)                                  # identical weights on every rank
    return torch.nn.Linear(IN_DIM, 6).double()


def _global_batch():
    g = torch.Generator().manual_seed(42)
    return (torch.randn(WORLD * LOCAL_B, IN_DIM, generator=g, dtype=torch.float64),
            torch.randn(WORLD * LOCAL_B, IN_DIM, generator=g, dtype=torch.float64))


def _worker(rank: int, port: int, results) -> None:
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                             world_size=WORLD)
    try:
        dist = Dist.from_torch()
        assert (dist.rank, dist.world_size) == (rank, WORLD)
        xa, xb = _global_batch()
        mine = slice(rank * LOCAL_B, (rank + 1) * LOCAL_B)
        out = {}
        for name, fn in LOSS_CASES.items():
            # distributed: local half, negatives gathered with gradients
            model = _model()
            loss = fn(model(xa[mine]), model(xb[mine]), dist.gather, dist.rank)
            loss.backward()
            loss_mean = dist.all_mean(float(loss))
            grads = []
            for p in model.parameters():
                g = p.grad.clone()
                tdist.all_reduce(g)                       # what DDP does: average over ranks
                grads.append(g / WORLD)
            # reference: one process, the concatenated batch, no gather
            ref_model = _model()
            ref = fn(ref_model(xa), ref_model(xb), None, 0)
            ref.backward()
            out[name] = (loss_mean, float(ref), [g.tolist() for g in grads],
                         [p.grad.tolist() for p in ref_model.parameters()])
        results[rank] = out
    finally:
        tdist.destroy_process_group()


@pytest.mark.timeout(180)
def test_gathered_losses_and_grads_equal_single_process():
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        results = manager.dict()
        mp.start_processes(_worker, args=(_free_port(), results), nprocs=WORLD, join=True,
                           start_method="spawn")
        results = dict(results)
    assert sorted(results) == list(range(WORLD))
    for rank in range(WORLD):
        for name in LOSS_CASES:
            loss, ref, grads, ref_grads = results[rank][name]
            assert loss == pytest.approx(ref, rel=1e-10, abs=1e-12), (name, rank)
            assert ref > 0, name                          # a live loss, not a trivially zero one
            for g, r in zip(grads, ref_grads):
                torch.testing.assert_close(torch.tensor(g), torch.tensor(r), rtol=1e-9, atol=1e-12,
                                           msg=f"{name} rank {rank}")
            assert any(abs(v) > 1e-6 for row in ref_grads[0] for v in row), name


def test_gather_is_identity_at_world_size_one():
    x = torch.randn(4, 3, requires_grad=True)
    assert Dist().gather(x) is x
    a, b = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    for name, fn in LOSS_CASES.items():
        assert fn(a, b, Dist().gather, 0).item() == fn(a, b, None, 0).item(), name
