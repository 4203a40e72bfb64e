"""The conv stack: an ordinary ``nn.Module`` built from a ``ModelConfig``.

Each layer is ``Conv1d -> norm (optional, per frame) -> activation (optional)``. With
``lengths`` the stack runs a padded batch exactly as if each item ran alone: positions past
each item's valid length (from the geometry module) are zeroed before every layer, so padding
never leaks into valid frames.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from conv_pipeline.config.schema import ACTIVATIONS, NORMS, LayerConfig

ACTIVATION_TYPES = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
}


assert set(ACTIVATION_TYPES) == set(ACTIVATIONS)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over channels at every frame: ``(batch, channels, frames)`` in and out."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)  # (B, C, T) -> (B, T, C) -> (B, C, T)


class TimeGroupNorm(nn.Module):
    """GroupNorm with one group per channel: each channel normalised over the item's whole
    time axis (``nn.GroupNorm(C, C)``, as in the wav2vec2 base feature encoder).

    ``forward(x, valid)``: with ``valid`` (frames per item, ``(batch,)``), statistics use only each
    item's first ``valid[b]`` frames, so a padded batch gives each item's single-file result.
    ``normalize(x, mean, var)`` applies known statistics (``(batch, C)`` each): the second pass of
    chunked execution.
    """

    mixes_time = True

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(channels, channels, affine=True)

    def normalize(self, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        inv = torch.rsqrt(var.to(x.dtype) + self.norm.eps)[..., None]  # (B, C, 1)
        y = (x - mean.to(x.dtype)[..., None]) * inv  # (B, C, T)
        return y * self.norm.weight[:, None] + self.norm.bias[:, None]

    def forward(self, x: torch.Tensor, valid: Optional[Sequence[int]] = None) -> torch.Tensor:
        if valid is None:
            valid = [x.shape[-1]] * x.shape[0]
        if x.shape[-1] > 1 and all(v >= x.shape[-1] for v in valid):
            return self.norm(x)  # nn.GroupNorm refuses a single frame; the masked path handles it
        idx = torch.arange(x.shape[-1], device=x.device)
        n = torch.tensor(valid, device=x.device, dtype=x.dtype).clamp(min=1)  # (B,)
        mask = (idx[None, :] < n[:, None]).to(x.dtype)[:, None, :]  # (B, 1, T)
        mean = (x * mask).sum(-1) / n[:, None]  # (B, C)
        var = (((x - mean[..., None]) * mask) ** 2).sum(-1) / n[:, None]  # (B, C)
        return self.normalize(x, mean, var)


NORM_TYPES = {"layer_norm": ChannelLayerNorm, "group_norm": TimeGroupNorm}


assert set(NORM_TYPES) == set(NORMS)


def _row_major(x: torch.Tensor) -> torch.Tensor:
    """``x`` with row-major strides. A per-frame norm leaves its output transposed, and torch's
    CPU grouped conv segfaults on such a tensor of 1 frame; ``contiguous()`` is not enough there
    (a 1-frame tensor counts as contiguous whatever its strides). No copy for the usual input."""
    b, c, t = x.shape
    if x.stride() == (c * t, t, 1):
        return x
    return x.clone(memory_format=torch.contiguous_format)


class ConvLayer(nn.Module):
    """``Conv1d``, then an optional per-frame norm, then an optional activation."""

    def __init__(self, in_channels: int, spec: LayerConfig) -> None:
        super().__init__()
        self.conv = nn.Conv1d(
            in_channels,
            spec.out_channels,
            spec.kernel_size,
            stride=spec.stride,
            padding=spec.padding,
            dilation=spec.dilation,
            groups=spec.groups,
            bias=spec.bias,
        )
        self.norm = NORM_TYPES[spec.norm](spec.out_channels) if spec.norm else None
        self.act = ACTIVATION_TYPES[spec.activation]() if spec.activation else None

    @property
    def mixes_time(self) -> bool:
        """True when the norm pools over time (its output depends on the whole item)."""
        return bool(getattr(self.norm, "mixes_time", False))

    def forward(self, x: torch.Tensor, valid: Optional[Sequence[int]] = None) -> torch.Tensor:
        """``(B, C_in, T) -> (B, C_out, T')``; ``valid``: each item's valid output frames (time norms)."""
        x = self.conv(_row_major(x))  # (B, C_in, T) -> (B, C_out, T')
        if self.norm is not None:
            x = self.norm(x, valid) if self.mixes_time else self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x
