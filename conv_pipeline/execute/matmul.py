"""The matrix product of chunked execution: windows ``(m, K)`` times a layer's weight ``(K, C_out)``.

Flow: source -> load -> stack -> **execute** -> sink -> engines. Used by chunked execution
(``execute/stream_layer.py: StreamLayer.conv_into``): a ``groups=1`` conv over a stream is one
product of its input windows with the layer's weight, plus the bias.

On the CPU in float32, the product runs through oneDNN (``torch.ops.mkldnn._linear_pointwise``,
the kernel behind torch's own CPU ``Conv1d``, with the weight packed once into oneDNN's blocked
layout) rather than ``torch.addmm`` (MKL's sgemm): on AMD processors MKL takes a generic code path
and oneDNN's kernel does about 1.2x the work per second (AMD EPYC, one thread, ``(3200, 1536) @
(1536, 512)``: 111 vs 90 GFLOP/s); the whole-file ``Conv1d`` already runs on oneDNN. The values are
the same product up to float32 rounding (about 1e-7 relative). Elsewhere (no oneDNN, other
devices or dtypes), ``torch.addmm``.

A strided conv whose windows overlap by fewer taps than they advance (``stride < k <= 2 * stride``,
the ``(3, 2)`` layers of wav2vec2's encoder) shares work between neighbouring outputs, as a Winograd
``F(3, 2)`` on the overlap (points 0, 1, -1 and infinity): with ``r = k - s`` overlapping taps,
output ``t``'s window is ``[P_t, Q_t, P_{t+1}]`` (``P``: ``r`` rows, ``Q``: ``s - r`` rows) and its
weight ``[A; B; C]``, so for three outputs, with ``P_j = P_3i+j``, ``Q_j = Q_3i+j``,

    M1 = (P1 + P2) (A + C) / 2 + bias        M2 = (P2 - P1) (A - C) / 2
    y_3i   = (P0 - P2) A + Q0 B + (M1 + M2)
    y_3i+1 = Q1 B                 + (M1 - M2)
    y_3i+2 = Q2 B + (P3 - P1) C   + (M1 + M2)

five products with ``(3s + r) * C_in`` rows of weight per three outputs instead of
``3 * k * C_in`` (``(3, 2)``: 7/9 of the multiply-adds; two at a time, ``F(2, 2)``, made 5/6). The
same sums, grouped otherwise: equal to the direct product up to float32 rounding (about 1e-6
relative; the direct product gives about 1e-7). One thread, AMD EPYC, a ``(3, 2)`` layer of 512
channels: 1.04x ``F(2, 2)`` on 3,200 and 1,600 outputs, 0.98x on 400.

Public API:

* ``Product(wt, bias)``: ``product(cols, out, add=None)`` writes ``cols @ wt + bias (+ add)`` into ``out``;
  ``product.new(cols)`` returns ``cols @ wt + bias`` as the product's own new tensor.
* ``TripleProduct(wt, bias, k, s, c_in, whole=None)`` (``TripleProduct.applies(k, s, dilation, groups, c_in)``):
  ``outputs(buf, m, out)``, the ``m`` outputs of windows ``buf[t*s : t*s + k]`` into ``out`` ``(m, C_out)``;
  ``twin()``, the same packed weights with scratch of its own (another thread's).
"""

from __future__ import annotations

import copy
from typing import Optional

import torch

MIN_SHARED_ROWS = 32  # TripleProduct only where its smallest product has this many weight rows

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

    def new(self, cols: torch.Tensor) -> torch.Tensor:
        """``cols @ wt + bias`` as a new ``(m, C_out)`` tensor (the product's own output, not copied)."""
        if self.packed is not None and cols.shape[0]:
            return torch.ops.mkldnn._linear_pointwise(cols, self.packed, self.bias, "none", [], "")
        return torch.mm(cols, self.wt) if self.bias is None else torch.addmm(self.bias, cols, self.wt)

    def __call__(self, cols: torch.Tensor, out: torch.Tensor, add: Optional[torch.Tensor] = None) -> None:
        if self.packed is not None and cols.shape[0]:
            y = self.new(cols)
            if add is None:
                out.copy_(y)
            else:
                torch.add(y, add, out=out)
            return
        base = add if self.bias is None else (self.bias if add is None else add + self.bias)
        if base is None:
            torch.mm(cols, self.wt, out=out)
        else:
            torch.addmm(base, cols, self.wt, out=out)


class TripleProduct:
    """A ``groups=1``, undilated conv with ``stride < k <= 2 * stride`` over a time-major buffer,
    three outputs at a time with the overlaps shared (module docstring). ``wt`` ``(k * C_in, C_out)``,
    rows in (tap, channel) order."""

    def __init__(self, wt: torch.Tensor, bias: Optional[torch.Tensor], k: int, s: int, c_in: int,
                 whole: Optional[Product] = None) -> None:
        self.k, self.s, self.r, self.c = k, s, k - s, c_in
        rc, sc = self.r * c_in, s * c_in
        a, c = wt[:rc], wt[sc:]
        self.first = Product(wt[:sc], None)  # [A; B] for [P0 - P2, Q0]
        self.last = Product(wt[rc:], None)  # [B; C] for [Q2, P3 - P1]
        self.plus = Product((a + c) / 2, bias)  # for P1 + P2, with the bias: M1 + M2 and M1 - M2 carry it
        self.minus = Product((a - c) / 2, None)  # for P2 - P1
        self.middle = Product(wt[rc:sc], None) if sc > rc else None  # B for Q1
        # the last one or two outputs of a count not divisible by 3 (``whole``: the layer's own Product(wt, bias))
        self.one = whole if whole is not None else Product(wt, bias)
        self.scratch = torch.empty(0, dtype=wt.dtype, device=wt.device)

    def twin(self) -> "TripleProduct":
        """The same products (weights packed once, read-only) with scratch of its own, for another thread."""
        twin = copy.copy(self)
        twin.scratch = torch.empty(0, dtype=self.scratch.dtype, device=self.scratch.device)
        return twin

    @staticmethod
    def applies(k: int, s: int, dilation: int, groups: int, c_in: int) -> bool:
        """Worth it: products of at least ``MIN_SHARED_ROWS`` weight rows (a few input channels, as in a
        first layer on audio, spend their time writing the output, not multiplying)."""
        return groups == 1 and dilation == 1 and s < k <= 2 * s and (k - s) * c_in >= MIN_SHARED_ROWS

    def _rows(self, buf: torch.Tensor, h: int, first: int, rows: int) -> torch.Tensor:
        """``(h, rows * C)``: for each triple ``i``, rows ``[3*i*s + first, ... + rows)`` of ``buf``, flattened."""
        c = self.c
        return buf.as_strided((h, rows * c), (3 * self.s * c, 1), buf.storage_offset() + first * c)

    def _inputs(self, buf: torch.Tensor, h: int) -> tuple[torch.Tensor, ...]:
        """The transformed inputs ``[P0 - P2, Q0]``, ``P1 + P2``, ``P2 - P1``, ``[Q2, P3 - P1]``, in scratch."""
        s, r, c = self.s, self.r, self.c
        q, sc, rc = s - r, h * s * c, h * r * c
        if self.scratch.numel() < 2 * (sc + rc):
            self.scratch = torch.empty(2 * (sc + rc), dtype=buf.dtype, device=buf.device)
        x0, x3 = self.scratch[:sc].view(h, s * c), self.scratch[sc : 2 * sc].view(h, s * c)
        x1, x2 = self.scratch[2 * sc : 2 * sc + rc].view(h, r * c), self.scratch[2 * sc + rc : 2 * (sc + rc)].view(h, r * c)
        p = [self._rows(buf, h, j * s, r) for j in range(4)]
        torch.sub(p[0], p[2], out=x0[:, : r * c])
        torch.add(p[1], p[2], out=x1)
        torch.sub(p[2], p[1], out=x2)
        torch.sub(p[3], p[1], out=x3[:, q * c :])
        if q:
            x0[:, r * c :].copy_(self._rows(buf, h, r, q))
            x3[:, : q * c].copy_(self._rows(buf, h, 2 * s + r, q))
        return x0, x1, x2, x3

    def outputs(self, buf: torch.Tensor, m: int, out: torch.Tensor) -> None:
        h = m // 3
        if h:
            x0, x1, x2, x3 = self._inputs(buf, h)
            m1, m2 = self.plus.new(x1), self.minus.new(x2)  # M1 + bias, M2: the products' own outputs
            both = torch.add(m1, m2)  # y_3i and y_3i+2
            diff = m1.sub_(m2)  # y_3i+1
            triples = out[: 3 * h].view(h, 3, out.shape[1])
            self.first(x0, triples[:, 0], both)
            self.last(x3, triples[:, 2], both)
            if self.middle is not None:
                self.middle(self._rows(buf, h, self.s + self.r, self.s - self.r), triples[:, 1], diff)
            else:
                triples[:, 1].copy_(diff)
        c = self.c
        for t in range(3 * h, m):  # the last one or two: their windows, one row each
            self.one(buf[t * self.s : t * self.s + self.k].reshape(1, self.k * c), out[t : t + 1])
