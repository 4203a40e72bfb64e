"""The matrix product of chunked execution: windows ``(m, K)`` times a layer's weight ``(K, C_out)``.

Flow: source -> load -> stack -> **execute** -> sink -> engines. Used by ``execute/chunked.py``
(``_Layer.conv_into``): a ``groups=1`` conv over a stream is one product of its input windows with
the layer's weight, plus the bias.

On the CPU in float32, the product runs through oneDNN (``torch.ops.mkldnn._linear_pointwise``,
the kernel behind torch's own CPU ``Conv1d``, with the weight packed once into oneDNN's blocked
layout) rather than ``torch.addmm`` (MKL's sgemm): on AMD processors MKL takes a generic code path
and oneDNN's kernel does about 1.2x the work per second (AMD EPYC, one thread, ``(3200, 1536) @
(1536, 512)``: 111 vs 90 GFLOP/s); the whole-file ``Conv1d`` already runs on oneDNN. The values are
the same product up to float32 rounding (about 1e-7 relative). Elsewhere (no oneDNN, other
devices or dtypes), ``torch.addmm``.

A strided conv whose windows overlap by fewer taps than they advance (``stride < k <= 2 * stride``,
the ``(3, 2)`` layers of wav2vec2's encoder) shares work between neighbouring outputs, as a Winograd
``F(2, 2)`` on the overlap: with ``r = k - s`` overlapping taps, output ``t``'s window is
``[P_t, Q_t, P_{t+1}]`` (``P``: ``r`` rows, ``Q``: ``s - r`` rows) and its weight ``[A; B; C]``, so for
a pair of outputs

    y_2i   = (P_2i - P_2i+1) A + Q_2i B   + P_2i+1 (A + C) + bias
    y_2i+1 = Q_2i+1 B + (P_2i+2 - P_2i+1) C + P_2i+1 (A + C) + bias

three products with ``(s + k) * C_in`` rows of weight per pair instead of ``2 * k * C_in``
(``(3, 2)``: 5/6 of the multiply-adds). The same sums, grouped otherwise: equal to the direct
product up to float32 rounding.

Public API:

* ``Product(wt, bias)``: ``product(cols, out, add=None)`` writes ``cols @ wt + bias (+ add)`` into ``out``.
* ``PairProduct(wt, bias, k, s, c_in)`` (``PairProduct.applies(k, s, dilation, groups, c_in)``):
  ``pairs(buf, m, out)``, the ``m`` outputs of windows ``buf[t*s : t*s + k]`` into ``out`` ``(m, C_out)``.
"""

from __future__ import annotations

from typing import Optional

import torch

MIN_PAIR_ROWS = 32  # PairProduct only where its smallest product has this many weight rows

def onednn_usable(weight: torch.Tensor) -> bool:
    """True when ``weight``'s products can run through oneDNN: float32 on the CPU, torch built with it."""
    return (
        weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    )


class Product:
    """``cols (m, K) @ wt (K, C_out) + bias (C_out,)`` into a given ``(m, C_out)`` tensor.

    ``wt`` is kept as given (the statistics pass reads it); the oneDNN path also keeps it packed
    as ``(C_out, K)`` in oneDNN's layout, once per layer.
    """

    def __init__(self, wt: torch.Tensor, bias: Optional[torch.Tensor]) -> None:
        self.wt, self.bias = wt, bias
        self.packed = None
        if onednn_usable(wt):
            self.packed = torch.ops.mkldnn._reorder_linear_weight(wt.t().contiguous(), None)

    def __call__(self, cols: torch.Tensor, out: torch.Tensor, add: Optional[torch.Tensor] = None) -> None:
        if self.packed is not None and cols.shape[0]:
            y = torch.ops.mkldnn._linear_pointwise(cols, self.packed, self.bias, "none", [], "")
            if add is None:
                out.copy_(y)
            else:
                torch.add(y, add, out=out)
            return
        if add is not None and self.bias is not None:
            add = add + self.bias
        if add is not None:
            torch.addmm(add, cols, self.wt, out=out)
        elif self.bias is not None:
            torch.addmm(self.bias, cols, self.wt, out=out)
        else:
            torch.mm(cols, self.wt, out=out)


class PairProduct:
    """A ``groups=1``, undilated conv with ``stride < k <= 2 * stride`` over a time-major buffer,
    two outputs at a time with the overlap shared (module docstring). ``wt`` ``(k * C_in, C_out)``,
    rows in (tap, channel) order."""

    def __init__(self, wt: torch.Tensor, bias: Optional[torch.Tensor], k: int, s: int, c_in: int) -> None:
        self.k, self.s, self.r, self.c = k, s, k - s, c_in
        rc, sc = self.r * c_in, s * c_in
        self.even = Product(wt[:sc], None)  # [A; B] for [P_2i - P_2i+1, Q_2i]
        self.odd = Product(wt[rc:], None)  # [B; C] for [Q_2i+1, P_2i+2 - P_2i+1]
        self.mid = Product(wt[:rc] + wt[sc:], bias)  # A + C for P_2i+1, with the bias
        self.one = Product(wt, bias)  # an odd count's last output
        self.scratch = torch.empty(0, dtype=wt.dtype, device=wt.device)

    @staticmethod
    def applies(k: int, s: int, dilation: int, groups: int, c_in: int) -> bool:
        """Worth it: products of at least ``MIN_PAIR_ROWS`` weight rows (a few input channels, as in a
        first layer on audio, spend their time writing the output, not multiplying)."""
        return groups == 1 and dilation == 1 and s < k <= 2 * s and (k - s) * c_in >= MIN_PAIR_ROWS

    def _rows(self, buf: torch.Tensor, h: int, first: int, rows: int) -> torch.Tensor:
        """``(h, rows * C)``: for each pair ``i``, rows ``[2*i*s + first, ... + rows)`` of ``buf``, flattened."""
        c = self.c
        return buf.as_strided((h, rows * c), (2 * self.s * c, 1), buf.storage_offset() + first * c)

    def pairs(self, buf: torch.Tensor, m: int, out: torch.Tensor) -> None:
        s, r, c = self.s, self.r, self.c
        h = m // 2
        if h:
            need = 3 * h * s * c
            if self.scratch.numel() < need:
                self.scratch = torch.empty(need, dtype=buf.dtype, device=buf.device)
            even = self.scratch[: h * s * c].view(h, s * c)
            odd = self.scratch[h * s * c : 2 * h * s * c].view(h, s * c)
            p1 = self._rows(buf, h, s, r)
            torch.sub(self._rows(buf, h, 0, r), p1, out=even[:, : r * c])
            even[:, r * c :].copy_(self._rows(buf, h, r, s - r))
            odd[:, : (s - r) * c].copy_(self._rows(buf, h, s + r, s - r))
            torch.sub(self._rows(buf, h, 2 * s, r), p1, out=odd[:, (s - r) * c :])
            shared = torch.empty(h, out.shape[1], dtype=out.dtype, device=out.device)
            self.mid(p1, shared)
            pairs = out[: 2 * h].view(h, 2, out.shape[1])
            self.even(even, pairs[:, 0], shared)
            self.odd(odd, pairs[:, 1], shared)
        if m % 2:  # the last output alone: its window, one row
            t = m - 1
            self.one(buf[t * s : t * s + self.k].reshape(1, self.k * c), out[t:])
