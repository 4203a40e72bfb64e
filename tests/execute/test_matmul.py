"""The products of chunked execution (``conv_pipeline.execute.matmul``): ``Product`` (oneDNN on
the CPU, else ``addmm``) and ``TripleProduct`` (three outputs at a time, the windows' overlaps shared).

References: ``torch.addmm`` in float64 and ``torch.nn.functional.conv1d`` on the same input.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conv_pipeline.execute.matmul import Product, TripleProduct, onednn_usable
from helpers.tensors import rel_diff


@pytest.mark.parametrize("rows", [1, 5, 300])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("add", [True, False])
def test_product_equals_addmm(rows, bias, add):
    torch.manual_seed(rows)
    wt, cols = torch.randn(96, 40), torch.randn(rows, 96)
    b = torch.randn(40) if bias else None
    extra = torch.randn(rows, 40) if add else None
    out = torch.full((rows, 40), float("nan"))
    Product(wt, b)(cols, out, extra)
    ref = cols.double() @ wt.double()
    if bias:
        ref = ref + b.double()
    if add:
        ref = ref + extra.double()
    assert rel_diff(out.double(), ref) < 1e-6


def test_product_runs_on_onednn_for_float32_on_the_cpu_and_addmm_otherwise():
    wt = torch.randn(64, 8)
    assert (Product(wt, None).packed is not None) == onednn_usable(wt)
    wide = Product(wt.double(), None)  # float64: addmm, bit for bit
    cols, out = torch.randn(10, 64, dtype=torch.float64), torch.empty(10, 8, dtype=torch.float64)
    wide(cols, out)
    assert wide.packed is None and torch.equal(out, cols @ wt.double())


@pytest.mark.parametrize("k,s", [(3, 2), (4, 3), (4, 2), (5, 3), (7, 4)])  # (4, 2): no Q rows
@pytest.mark.parametrize("m", [1, 2, 3, 7, 8, 64])  # 0, 1 or 2 outputs past the last triple
@pytest.mark.parametrize("bias", [True, False])
def test_triple_product_equals_conv1d(k, s, m, bias):
    c_in, c_out = 40, 24
    torch.manual_seed(k * 100 + m)
    conv_w = torch.randn(c_out, c_in, k)
    b = torch.randn(c_out) if bias else None
    n = (m - 1) * s + k + 3  # a few rows more than the m windows read
    buf = torch.randn(n + 5, c_in)[5:]  # time-major, as chunked.py's windows; a view not at the storage's start
    wt = conv_w.permute(2, 1, 0).reshape(k * c_in, c_out).contiguous()  # rows in (tap, channel) order
    assert TripleProduct.applies(k, s, 1, 1, c_in)
    out = torch.full((m, c_out), float("nan"))
    TripleProduct(wt, b, k, s, c_in).outputs(buf, m, out)
    ref = F.conv1d(buf.t()[None].double(), conv_w.double(), None if b is None else b.double(), s)[0].t()[:m]
    assert rel_diff(out.double(), ref) < 1e-5


def test_pair_product_applies_only_to_overlapping_undilated_dense_windows():
    assert TripleProduct.applies(3, 2, 1, 1, 512)
    assert not TripleProduct.applies(2, 2, 1, 1, 512)  # no overlap
    assert not TripleProduct.applies(5, 2, 1, 1, 512)  # overlap wider than the stride
    assert not TripleProduct.applies(3, 1, 1, 1, 512)
    assert not TripleProduct.applies(3, 2, 2, 1, 512)  # dilated
    assert not TripleProduct.applies(3, 2, 1, 4, 512)  # grouped
    assert not TripleProduct.applies(10, 5, 1, 1, 1)  # one input channel: too few rows to share
