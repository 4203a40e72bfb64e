"""A 1x1 conv whose weight is zero outside bands of its input channels, computed over the bands only.

Flow: source -> load -> **stack** -> execute -> sink -> engines. A filterbank as a 1x1 conv (the
``mel`` front-end's 80 x 201 mel matrix, Kaldi's ``fbank`` banks) has each output channel read
a few neighbouring input channels: the mel matrix holds 392 non-zero weights of 16,080. Its dense
product multiplies mostly zeros; here the output channels are split into a few consecutive
groups, and each group is one product with the input channels its rows reach
(``weight[rows, lo:hi] @ x[lo:hi]``): 4 groups of the mel matrix make 4,120 products per frame
instead of 16,080, 2.5x faster on one thread (1,080 frames, AMD EPYC) with the per-call costs.

The bands are read from the weights, not from a preset's name, so a checkpoint with other
weights gets its own (or the dense product, when no grouping saves enough). On the CPU only
(``layer.py``, and chunked execution's ``execute/stream_layer.py``): a GPU runs the dense product
in one kernel. The sums are the
dense product's with the zero terms left out: equal up to float32 rounding (about 1e-7 of the
largest value).

Public API:

* ``row_bands(weight)``: ``(C_out, C_in)`` -> ``RowBands``, or None when the dense product is as cheap.
* ``RowBands.apply(x, bias)``: ``(B, C_in, T)`` (any strides) -> ``(B, C_out, T)``;
  ``RowBands.rows_into(x, out, bias)``: time-major ``(T, C_in)`` -> ``(T, C_out)`` in place.
* ``BandCache``: the decision for one conv, cached per weight (``spectral.WeightDecision``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from conv_pipeline.stack.spectral import WeightDecision

GROUP_COUNTS = (2, 3, 4, 6, 8)  # candidate numbers of consecutive row groups
SAVING = 0.6  # bands are used when they cost at most this share of the dense product


@dataclass(frozen=True, eq=False)
class RowBands:
    """Output rows ``[r0, r1)`` read input channels ``[c0, c1)`` only, for each group; ``weights``:
    the ``(r1 - r0, c1 - c0)`` blocks, contiguous."""

    groups: tuple[tuple[int, int, int, int], ...]  # (r0, r1, c0, c1)
    weights: tuple[torch.Tensor, ...]
    out_channels: int

    def apply(self, x: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``(B, C_in, T)`` -> ``(B, C_out, T)``: each group's block times its input rows."""
        out = x.new_empty(x.shape[0], self.out_channels, x.shape[-1])  # (B, C_out, T)
        for b in range(x.shape[0]):  # (T, C_in) -> (T, C_out) views: the same (rows, span) @ (span, T) products
            self.rows_into(x[b].t(), out[b].t())
        return out if bias is None else out.add_(bias[:, None])

    def rows_into(self, x: torch.Tensor, out: torch.Tensor, bias: Optional[torch.Tensor] = None) -> None:
        """Time-major ``x`` ``(T, C_in)`` (any strides) -> ``out`` ``(T, C_out)``, written in place
        (chunked execution, ``execute/stream_layer.py``): each group's input columns times its block."""
        for (r0, r1, c0, c1), w in zip(self.groups, self.weights):
            if c1 > c0:
                torch.mm(x[:, c0:c1], w.t(), out=out[:, r0:r1])  # (T, span) @ (span, rows)
            else:
                out[:, r0:r1].zero_()
        if bias is not None:
            out.add_(bias)


def _groups(lo: torch.Tensor, hi: torch.Tensor, n: int) -> list[tuple[int, int, int, int]]:
    """``n`` consecutive row groups of (nearly) equal size, each with the input span its rows reach."""
    rows = int(lo.shape[0])
    bounds = [rows * i // n for i in range(n + 1)]
    out = []
    for r0, r1 in zip(bounds, bounds[1:]):
        used = hi[r0:r1] > lo[r0:r1]  # rows with a non-zero weight
        if bool(used.any()):
            out.append((r0, r1, int(lo[r0:r1][used].min()), int(hi[r0:r1][used].max())))
        else:
            out.append((r0, r1, 0, 0))
    return out


def row_bands(weight: torch.Tensor) -> Optional[RowBands]:
    """``RowBands`` of a ``(C_out, C_in)`` weight, or None when no grouping costs at most ``SAVING``
    of the dense product (each group counted as the products it makes plus a sixteenth of the
    dense product, for its call)."""
    rows, cols = int(weight.shape[0]), int(weight.shape[1])
    if rows < 2 or cols < 2:
        return None
    nz = (weight != 0).cpu()
    any_nz = nz.any(dim=1)
    lo = torch.where(any_nz, nz.int().argmax(dim=1), 0)
    hi = torch.where(any_nz, cols - nz.flip(1).int().argmax(dim=1), 0)
    dense = rows * cols
    best, best_cost = None, SAVING * dense
    for n in GROUP_COUNTS:
        if n > rows:
            break
        groups = _groups(lo, hi, n)
        cost = sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in groups) + n * dense / 16
        if cost <= best_cost:
            best, best_cost = groups, cost
    if best is None:
        return None
    blocks = tuple(weight[r0:r1, c0:c1].detach().contiguous() for r0, r1, c0, c1 in best)
    return RowBands(tuple(best), blocks, rows)


class BandCache(WeightDecision):
    """``row_bands`` of one 1x1 conv's weight, decided once per weight (None: the dense product)."""

    def bands(self, conv: nn.Conv1d, x: Optional[torch.Tensor] = None) -> Optional[RowBands]:
        return self.decide(conv, lambda c: row_bands(c.weight[:, :, 0]), x)
