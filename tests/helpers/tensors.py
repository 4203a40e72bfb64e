"""Comparing tensors and cutting them into blocks (the streaming tests)."""

from __future__ import annotations

import torch


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest difference, relative to the largest magnitude of ``b``."""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def max_abs(t: torch.Tensor) -> float:
    return float(t.abs().max())


def split(x: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """``x`` ``(C, T)`` cut into consecutive blocks of ``sizes`` (cycled), the last one shorter."""
    blocks, start, i = [], 0, 0
    while start < x.shape[1]:
        blocks.append(x[:, start : start + sizes[i % len(sizes)]])
        start += sizes[i % len(sizes)]
        i += 1
    return blocks
