"""Shared encoders for the spectrogram methods (Audio2Vec, TemporalGap, Triplet, COLA, ...).

Every encoder takes a log-mel batch ``[B, T, F]`` (time-major, as the front end emits) and
returns ``[B, out_dim]``. A ``width`` multiplier scales every channel count so tests can
train a narrow version of the *same* architecture on two CPU cores; ``width=1`` is the
paper's network.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

# Tagliasacchi et al. 2020 (arXiv 1905.11796), Sec. 3: "the encoder consists of a stack of
# 6 convolutional layers with 3x3 kernels, [64, 128, 256, 256, 512, 512] channels, each
# followed by max-pooling"; the decoder mirrors it with nearest-neighbour upsampling.
AUDIO2VEC_CHANNELS: tuple[int, ...] = (64, 128, 256, 256, 512, 512)


def scale_channels(channels: Sequence[int], width: float) -> list[int]:
    """Channel counts times ``width``, at least 4 each (BatchNorm needs a few channels)."""
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    return [max(4, int(round(c * width))) for c in channels]


def pooled_shapes(t: int, f: int, n_layers: int) -> list[tuple[int, int]]:
    """Feature-map sizes after each 2x2 max-pool (ceil mode, so no size ever reaches 0).

    ``[(T, F), (ceil(T/2), ceil(F/2)), ...]``: n_layers + 1 entries, input first."""
    shapes = [(t, f)]
    for _ in range(n_layers):
        t, f = math.ceil(t / 2), math.ceil(f / 2)
        shapes.append((t, f))
    return shapes


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ConvEncoder2d(nn.Module):
    """Audio2Vec encoder: ``[B, T, F]`` -> ``[B, dim]``.

    Six (conv 3x3 -> BN -> ReLU -> max-pool 2x2) layers, global max-pool over time and
    frequency, dense to ``dim`` (128 in Tagliasacchi et al. 2020). ``forward_maps`` also
    returns the last feature map ``[B, C, T', F']`` for methods that need it.
    """

    def __init__(self, dim: int = 128, channels: Sequence[int] = AUDIO2VEC_CHANNELS,
                 width: float = 1.0):
        super().__init__()
        chs = scale_channels(channels, width)
        self.channels = chs
        self.blocks = nn.ModuleList(
            _conv_bn_relu(c_in, c_out) for c_in, c_out in zip([1] + chs[:-1], chs))
        self.proj = nn.Linear(chs[-1], dim)
        self.out_dim = dim

    def forward_maps(self, x: Tensor) -> Tensor:
        h = x.unsqueeze(1)                                   # [B, 1, T, F]
        for block in self.blocks:
            h = F.max_pool2d(block(h), 2, ceil_mode=True)    # [B, C, ceil(T/2), ceil(F/2)]
        return h

    def forward(self, x: Tensor) -> Tensor:
        h = self.forward_maps(x)
        return self.proj(h.amax(dim=(2, 3)))                 # [B, C] -> [B, dim]


class ConvDecoder2d(nn.Module):
    """Mirror of :class:`ConvEncoder2d`: ``[B, dim]`` -> ``[B, T, F]``.

    Dense to the encoder's last feature map, then six (nearest-neighbour upsample to the
    encoder's size at that depth -> conv 3x3 -> BN -> ReLU) layers with the channels
    reversed, and a final 1x1 conv to one channel (no activation: log-mel targets are
    unbounded). ``out_shape`` is the ``(T, F)`` of the slices it reconstructs.
    """

    def __init__(self, out_shape: tuple[int, int], dim: int = 128,
                 channels: Sequence[int] = AUDIO2VEC_CHANNELS, width: float = 1.0):
        super().__init__()
        chs = scale_channels(channels, width)
        self.shapes = pooled_shapes(out_shape[0], out_shape[1], len(chs))
        t0, f0 = self.shapes[-1]
        self.c0 = chs[-1]
        self.proj = nn.Linear(dim, self.c0 * t0 * f0)
        rev = chs[::-1]                                      # 512, 512, 256, 256, 128, 64
        outs = rev[1:] + [rev[-1]]
        self.blocks = nn.ModuleList(_conv_bn_relu(c_in, c_out) for c_in, c_out in zip(rev, outs))
        self.head = nn.Conv2d(outs[-1], 1, 1)

    def forward(self, z: Tensor) -> Tensor:
        t0, f0 = self.shapes[-1]
        h = self.proj(z).view(z.shape[0], self.c0, t0, f0)   # [B, C, T', F']
        for block, size in zip(self.blocks, self.shapes[-2::-1]):
            h = block(F.interpolate(h, size=size, mode="nearest"))
        return self.head(h).squeeze(1)                       # [B, T, F]


class EfficientNetEncoder(nn.Module):
    """COLA encoder: EfficientNet-B0 on a one-channel log-mel, global max-pool.

    Saeed et al. 2021 (COLA, arXiv 2010.10915), Sec. 3: "we use EfficientNet-B0 ... followed
    by a global max-pooling layer" giving 1280 features at ``width=1``. Built by timm's
    EfficientNet generator for the ``efficientnet_b0`` block definition with
    ``channel_multiplier=width`` and ``depth_multiplier=depth`` (1, 1 = exactly
    ``timm.create_model("efficientnet_b0")``), never with pretrained weights.
    ``[B, T, F]`` -> ``[B, out_dim]``.
    """

    def __init__(self, width: float = 1.0, depth: float = 1.0):
        super().__init__()
        from timm.models.efficientnet import _gen_efficientnet  # timm's own B0 builder

        if width <= 0 or depth <= 0:
            raise ValueError(f"width and depth must be positive, got {width}, {depth}")
        self.net = _gen_efficientnet("efficientnet_b0", channel_multiplier=width,
                                     depth_multiplier=depth, pretrained=False, in_chans=1,
                                     num_classes=0, global_pool="max")
        self.out_dim = int(self.net.num_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.unsqueeze(1))                      # [B, 1, T, F] -> [B, out_dim]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

