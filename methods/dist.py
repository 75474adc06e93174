"""Collective helpers handed to methods: rank, world size, gather-with-grad.

Methods never ask Ray how many workers there are; the training loop builds a :class:`Dist`
from ``torch.distributed`` (initialised by Ray Train) and passes it to ``Method.loss``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as tdist
from torch import Tensor


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sends each rank the gradient of its own slice, summed over
    ranks (every rank computes the loss over the full gathered batch)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.batch = x.shape[0]
        out = [torch.empty_like(x) for _ in range(tdist.get_world_size())]
        tdist.all_gather(out, x.contiguous())
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        tdist.all_reduce(grad, op=tdist.ReduceOp.SUM)
        rank = tdist.get_rank()
        return grad[rank * ctx.batch:(rank + 1) * ctx.batch]


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1

    @classmethod
    def from_torch(cls) -> "Dist":
        if tdist.is_available() and tdist.is_initialized():
            return cls(tdist.get_rank(), tdist.get_world_size())
        return cls()

    def gather(self, x: Tensor) -> Tensor:
        """Concatenate ``x`` ([B, ...], same B on every rank) over ranks, rank order, with
        gradients flowing back to each rank's own slice. Identity at world size 1."""
        if self.world_size == 1:
            return x
        return _GatherWithGrad.apply(x)

    def all_mean(self, value: float) -> float:
        if self.world_size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        tdist.all_reduce(t)
        return float(t.item()) / self.world_size

    @property
    def is_rank_zero(self) -> bool:
        return self.rank == 0
