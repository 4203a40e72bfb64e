"""One layer of the conv stack, and the tables of what a layer may contain.

Flow: source -> load -> **stack** -> execute -> sink -> engines. A ``ConvLayer`` is
``Conv1d -> norm (optional) -> activation (optional)``, ``(batch, C_in, frames)`` in,
``(batch, C_out, frames')`` out (``frames'`` from ``docs/geometry.md``). ``stack.py`` chains
layers into a ``ConvStack``; ``frontends.py`` builds front-ends out of the same layers.

The tables here are the only place that knows each activation and norm as torch code:

* ``ACTIVATION_TABLE``: name -> ``Activation`` (its ``nn.Module`` class and its in-place form,
  which chunked execution uses); ``ACTIVATION_TYPES`` is its name -> class view.
* ``NORM_TYPES``: name -> norm class. ``ChannelLayerNorm`` works per frame; ``TimeGroupNorm``
  pools over each item's whole time axis (``mixes_time``).

Their names equal the torch-free tuples of ``config/schema.py`` (``ACTIVATIONS``, ``NORMS``,
``TIME_NORMS``), which the config checks use; this module asserts that they agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from conv_pipeline.config.schema import ACTIVATIONS, NORMS, TIME_NORMS, LayerConfig
from conv_pipeline.stack.bands import BandCache
from conv_pipeline.stack.spectral import SpectralCache, split_magnitude, stft_layer

InPlace = Callable[[nn.Module, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Activation:
    """One activation a layer spec may name.

    ``module``: the ``nn.Module`` class ``ConvLayer`` builds (default arguments).
    ``in_place``: ``in_place(module, y)`` applies ``module``'s function to ``y`` in place and returns
    ``y`` (same values as ``module(y)``); None where torch has no in-place form. Every activation
    here is elementwise, so it applies to any shape, time-major buffers included.
    """

    module: type[nn.Module]
    in_place: Optional[InPlace] = None


ACTIVATION_TABLE: dict[str, Activation] = {
    "relu": Activation(nn.ReLU, lambda a, y: y.relu_()),
    "gelu": Activation(nn.GELU, lambda a, y: torch.ops.aten.gelu_(y, approximate=a.approximate)),
    "tanh": Activation(nn.Tanh, lambda a, y: y.tanh_()),
    "sigmoid": Activation(nn.Sigmoid, lambda a, y: y.sigmoid_()),
    "leaky_relu": Activation(nn.LeakyReLU, lambda a, y: F.leaky_relu_(y, a.negative_slope)),
    "elu": Activation(nn.ELU, lambda a, y: F.elu_(y, a.alpha)),
    "silu": Activation(nn.SiLU, lambda a, y: F.silu(y, inplace=True)),
    "softplus": Activation(nn.Softplus),
}


ACTIVATION_TYPES: dict[str, type[nn.Module]] = {name: a.module for name, a in ACTIVATION_TABLE.items()}


assert set(ACTIVATION_TABLE) == set(ACTIVATIONS)


_BY_MODULE = {a.module: a for a in ACTIVATION_TABLE.values()}


def activation_of(module: nn.Module) -> Optional[Activation]:
    """The table's entry for a built activation ``module`` (by its exact class), or None for a
    module the table does not hold (a front-end's magnitude, rectifier or log)."""
    return _BY_MODULE.get(type(module))


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


NORM_TYPES: dict[str, type[nn.Module]] = {"layer_norm": ChannelLayerNorm, "group_norm": TimeGroupNorm}


assert set(NORM_TYPES) == set(NORMS)
assert {name for name, cls in NORM_TYPES.items() if getattr(cls, "mixes_time", False)} == set(TIME_NORMS)


def _row_major(x: torch.Tensor) -> torch.Tensor:
    """``x`` with row-major strides. A per-frame norm leaves its output transposed, and torch's
    CPU grouped conv segfaults on such a tensor of 1 frame; ``contiguous()`` is not enough there
    (a 1-frame tensor counts as contiguous whatever its strides). No copy for the usual input."""
    b, c, t = x.shape
    if x.stride() == (c * t, t, 1):
        return x
    return x.clone(memory_format=torch.contiguous_format)


class ConvLayer(nn.Module):
    """``Conv1d``, then an optional norm (``NORM_TYPES``), then an optional activation
    (``ACTIVATION_TABLE``): ``(B, C_in, T) -> (B, C_out, T')``.

    A front-end may replace ``act`` with its own module (magnitude, rectifier, log). Execution
    only: a windowed-DFT conv runs as an FFT (``spectral.py``), a 1x1 conv as a matrix product
    (a filterbank over its bands only, ``bands.py``).
    """

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
        self.act = ACTIVATION_TABLE[spec.activation].module() if spec.activation else None
        self.spectral = SpectralCache()  # is the conv a windowed DFT (run as an FFT)? see spectral.py
        self.bands = BandCache()  # is a 1x1 conv a filterbank (its bands only)? see bands.py

    @property
    def mixes_time(self) -> bool:
        """True when the norm pools over time (its output depends on the whole item)."""
        return bool(getattr(self.norm, "mixes_time", False))

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        """The conv, ``(B, C_in, T) -> (B, C_out, T')``: a 1x1 conv as matrix products (any input
        strides, no copy; a filterbank over its bands only), else ``Conv1d`` on a row-major input."""
        c = self.conv
        if c.kernel_size == (1,) and c.stride == (1,) and c.padding in ((0,), "valid") and c.groups == 1:
            bands = self.bands.bands(c, x) if x.device.type == "cpu" else None  # a filterbank: its bands (bands.py)
            if bands is not None:
                return bands.apply(x, c.bias)
            y = torch.matmul(c.weight[:, :, 0], x)  # (C_out, C_in) @ (B, C_in, T) -> (B, C_out, T)
            return y if c.bias is None else y.add_(c.bias[:, None])
        return c(_row_major(x))

    def forward(self, x: torch.Tensor, valid: Optional[Sequence[int]] = None) -> torch.Tensor:
        """``(B, C_in, T) -> (B, C_out, T')``; ``valid``: each item's valid output frames (time norms).

        A windowed-DFT conv (the stft/mel front-ends, ``spectral.py``) runs as an FFT; followed
        directly by ``PairMagnitude`` it gives the magnitude ``(B, F, T')`` without the ``(re, im)`` rows.
        """
        act = self.act
        win = self.spectral.window(self.conv, x) if x.shape[1] == 1 else None
        if win is None:
            x = self._conv(x)  # (B, C_in, T) -> (B, C_out, T')
        else:
            magnitude, rest = split_magnitude(act) if self.norm is None else (None, act)
            x = stft_layer(x, self.conv.stride[0], self.conv.padding[0], win, magnitude)
            act = act if magnitude is None else rest
        if self.norm is not None:
            x = self.norm(x, valid) if self.mixes_time else self.norm(x)
        if act is not None:
            x = act(x)
        return x
