"""Chunked execution as two pipeline stages on two threads (``conv_pipeline.execute.pipeline``,
``iter_features(..., pipeline=True)``): the same frames, bit for bit, as the one-thread chunked
executor; errors surface in the caller; no thread outlives the run.

References: the one-thread executor (``pipeline=False`` under ``torch.set_num_threads(1)``: the
same products, on one thread) for bit equality, and the stack's own modules on the whole input
(an independent computation) within float32 rounding.
"""

from __future__ import annotations

import threading

import pytest
import torch

from conv_pipeline.config.schema import LayerConfig
from conv_pipeline.errors import InputError
from conv_pipeline.execute.chunked import StreamingStack, iter_features
from conv_pipeline.execute.pipeline import TwoStages, split_point
from conv_pipeline.execute.segments import Segments
from conv_pipeline.stack.stack import ConvStack
from helpers.tensors import rel_diff, split

W2V_SHAPES = [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2
WORKER = "conv_pipeline-stage1"


def w2v_stack(channels: int, norms: dict[int, str] | None = None) -> ConvStack:
    """The wav2vec2-shaped stack (7 layers, GELU, no bias) with ``channels`` channels."""
    norms = norms or {}
    layers = [LayerConfig(out_channels=channels, kernel_size=k, stride=s, bias=False, activation="gelu", norm=norms.get(i))
              for i, (k, s) in enumerate(W2V_SHAPES)]
    torch.manual_seed(0)
    return ConvStack(1, layers).eval()


def one_thread_chunked(stack: ConvStack, blocks: list[torch.Tensor]) -> torch.Tensor:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.cat(list(iter_features(blocks, stack, pipeline=False)), dim=1)
    finally:
        torch.set_num_threads(threads)


def whole(stack: ConvStack, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return stack(x[None])[0]


def workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == WORKER]


def test_split_point_balances_the_stages():
    assert split_point([1, 4, 2, 1], 0) == 2  # 5 | 3
    assert split_point([4, 1, 1, 1, 1], 0) == 1  # 4 | 4
    assert split_point([10, 1], 0) is None  # 10 | 1: one stage keeps 91% of the work
    assert split_point([3], 0) is None
    assert split_point([1, 4, 2, 1], 9) is None  # too little work


def test_the_wav2vec2_stack_is_pipelined_and_a_mel_front_end_is_not():
    torch.set_num_threads(2)  # the decision needs two threads to share
    auto = StreamingStack(w2v_stack(512)).pipelined()  # the output pass: segments (test_segments.py)
    auto.close()
    assert isinstance(auto, Segments)
    big = StreamingStack(w2v_stack(512)).pipelined(True)
    try:
        assert isinstance(big, TwoStages) and len(workers()) == 1
    finally:
        big.close()
    assert workers() == []
    streamer = StreamingStack(ConvStack.from_preset("mel"))
    assert streamer.pipelined() is streamer  # an FFT front-end: too little work to hand over


@pytest.mark.parametrize("sizes", [[1], [7], [333], [1000, 3], [16001]])
def test_pipelined_equals_one_thread_chunked_bit_for_bit(sizes):
    stack = w2v_stack(8)
    n = 2000 if sizes == [1] else 9000
    x = torch.randn(1, n)
    blocks = split(x, sizes)
    ref = one_thread_chunked(stack, blocks)
    got = torch.cat(list(iter_features(blocks, stack, pipeline=True)), dim=1)
    assert torch.equal(got, ref)
    assert got.shape == (8, stack.geometry.output_length(n))
    assert rel_diff(got, whole(stack, x)) < 1e-5
    assert workers() == []


def test_the_worker_runs_while_features_are_produced():
    stack = w2v_stack(8)
    chunks = iter_features(split(torch.randn(1, 200000), [16000]), stack, pipeline=True)  # > MIN_ROWS frames
    next(chunks)
    assert len(workers()) == 1
    chunks.close()  # the caller stops early: the worker is joined
    assert workers() == []


def test_time_norm_statistics_passes_pipelined():
    """group_norm over time on layers 1 and 3: the pass for layer 3 runs three layers (pipelined too)."""
    stack = w2v_stack(8, {0: "group_norm", 2: "group_norm"})
    x = torch.randn(1, 12000)
    blocks = split(x, [1777])
    got = torch.cat(list(iter_features(blocks, stack, pipeline=True)), dim=1)
    assert torch.equal(got, one_thread_chunked(stack, blocks))
    assert rel_diff(got, whole(stack, x)) < 1e-4
    assert workers() == []


def test_an_error_in_the_worker_stage_surfaces_in_the_caller():
    stack = w2v_stack(8)
    threads = torch.get_num_threads()
    blocks = [torch.randn(1, 4000), torch.randn(1, 4000), torch.randn(2, 4000)]  # the worker refuses the third
    with pytest.raises(InputError, match=r"input has shape \(2, 4000\), the stack expects \(1, frames\)"):
        list(iter_features(blocks, stack, pipeline=True))
    assert workers() == []
    assert torch.get_num_threads() == threads


def test_keyboard_interrupt_leaves_no_thread():
    stack = w2v_stack(8)

    def blocks():
        yield torch.randn(1, 4000)
        yield torch.randn(1, 4000)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        list(iter_features(blocks(), stack, pipeline=True))
    assert workers() == []
