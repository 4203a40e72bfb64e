"""Chunked execution as alternate segments on two threads (``conv_pipeline.execute.segments``,
``StreamingStack.pipelined()`` for big stacks): the whole file's frames; errors surface in the
caller; no thread outlives the run.

References: each segment's input range against ``StackGeometry.frame_starts`` and
``receptive_field`` (``geometry.py``, independent of the segment code); the frames against the
stack's own modules on the whole input (``torch.nn.Conv1d``) and ``torch.nn.functional.conv1d``.
"""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F

import conv_pipeline.execute.chunked as chunked
from conv_pipeline.config.schema import LayerConfig
from conv_pipeline.errors import InputError
from conv_pipeline.execute.chunked import StreamingStack, iter_features
from conv_pipeline.execute.pipeline import TwoStages
from conv_pipeline.execute.segments import SegmentPlan, Segments
from conv_pipeline.stack.stack import ConvStack
from helpers.tensors import rel_diff, split

WORKER = "conv_pipeline-segments"
W2V = [(10, 5, 0, 1)] + [(3, 2, 0, 1)] * 4 + [(2, 2, 0, 1)] * 2
PADDED = [(25, 10, 0, 1), (3, 1, 1, 1), (3, 1, 1, 2), (5, 2, 2, 1), (4, 3, 1, 1)]


def make_stack(shapes, channels: int, norms: dict[int, str] | None = None) -> ConvStack:
    norms = norms or {}
    layers = [LayerConfig(out_channels=channels, kernel_size=k, stride=s, padding=p, dilation=d, activation="gelu",
                          norm=norms.get(i)) for i, (k, s, p, d) in enumerate(shapes)]
    torch.manual_seed(0)
    return ConvStack(1, layers).eval()


def whole(stack: ConvStack, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return stack(x[None])[0]


def workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == WORKER]


@pytest.fixture
def always_segments(monkeypatch):
    """Segments for any stack, however little work (the decision is tested on its own below)."""
    monkeypatch.setattr(chunked, "PIPELINE_MACS", 0)
    monkeypatch.setattr(chunked, "SEGMENT_OVERHEAD", 100.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("shapes", [W2V, PADDED])
@pytest.mark.parametrize("frames", [1, 7, 64])
def test_segment_input_ranges_are_the_frames_receptive_fields(shapes, frames):
    stack = make_stack(shapes, 2)
    g = stack.geometry
    plan = SegmentPlan(shapes, frames)
    for j in range(5):
        start, stop = plan.start(j), plan.start(j + 1)
        assert stop - start == (plan.first if j == 0 else frames)
        a, b = plan.ranges(start, stop)
        starts = g.frame_starts(stop)  # sample of each frame's first input, t*J - P
        assert a[0] == int(starts[start]) and b[0] == int(starts[stop - 1]) + g.receptive_field
        if j:  # a segment after the first reads no padding on the left at any layer
            assert min(a) >= 0
    for n in (0, 1, 999, 12345):
        assert plan.output_length(n) == g.output_length(n)


@pytest.mark.parametrize("shapes", [W2V, PADDED])
@pytest.mark.parametrize("length,sizes", [(30000, [4000]), (30000, [333, 7000]),
                                          pytest.param(9001, [1], marks=pytest.mark.slow), (2500, [100000])])
def test_segments_equal_the_whole_file(always_segments, shapes, length, sizes):
    stack = make_stack(shapes, 48)
    streamer = StreamingStack(stack)
    run = streamer.pipelined()
    assert isinstance(run, Segments)
    run.close()
    x = torch.randn(1, length)
    got = torch.cat(list(iter_features(split(x, sizes), stack)), dim=1)
    assert got.shape == (48, stack.geometry.output_length(length))
    assert rel_diff(got, whole(stack, x)) < 1e-5
    assert workers() == []


@pytest.mark.parametrize("slow", ["worker", "caller"])
def test_the_caller_goes_on_while_the_worker_computes_and_the_frames_stay_in_order(always_segments, monkeypatch, slow):
    """The worker keeps two segments; the caller computes the others and returns the frames no
    segment of the worker's still precedes (the rest later, in order, at most ``MAX_HELD`` held):
    whichever thread is slower, the frames are the whole file's."""
    import time

    import conv_pipeline.execute.segments as segments

    stack = make_stack(W2V, 16)
    original = StreamingStack.segment

    def segment(self, *args, **kwargs):
        here = threading.current_thread().name == WORKER
        if (slow == "worker") == here:
            time.sleep(0.02)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(StreamingStack, "segment", segment)
    held: list[int] = []
    push = segments.Segments.push

    def watched(self, x):
        y = push(self, x)
        held.append(len(self.results))
        return y

    monkeypatch.setattr(segments.Segments, "push", watched)
    x = torch.randn(1, 120000)
    got = torch.cat(list(iter_features(split(x, [3200]), stack)), dim=1)
    assert rel_diff(got, whole(stack, x)) < 1e-5
    assert max(held) >= 1  # some segments waited for an earlier one of the worker's
    assert max(held) <= segments.MAX_HELD + 1
    assert workers() == []


def test_the_second_thread_shares_the_packed_weights_not_the_scratch(always_segments):
    stack = make_stack(W2V, 64)
    run = StreamingStack(stack).pipelined()
    try:
        assert isinstance(run, Segments)
        mine, twin = run.streamers
        for a, b in zip(mine.layers, twin.layers):
            assert b.product is a.product and b.wt is a.wt  # packed once
            assert b.window is not a.window and b.cols is not a.cols
        overlaps = [(a.overlap, b.overlap) for a, b in zip(mine.layers, twin.layers) if a.overlap is not None]
        assert len(overlaps) == 4  # the (3, 2) layers
        for a, b in overlaps:
            assert b is not a and b.plus is a.plus and b.scratch is not a.scratch
    finally:
        run.close()


@pytest.mark.parametrize("shapes,length", [(W2V, 120000), (PADDED, 23000)])  # 6 segments of 64 frames
def test_flush_takes_back_what_the_worker_has_not_started(always_segments, monkeypatch, shapes, length):
    """At the true end this thread computes every queued segment the worker has not started. Here
    the worker starts nothing until the run is over, so the caller computes all of them, the first
    segment (the left zeros of the padded stack) after later ones: the frames are the whole file's."""
    import conv_pipeline.execute.segments as segments

    gate = threading.Event()
    work, close = segments.Segments._work, segments.Segments.close
    on_worker: list[int] = []
    original = StreamingStack.segment

    def segment(self, *args, **kwargs):
        on_worker.append(threading.current_thread().name == WORKER)
        return original(self, *args, **kwargs)

    def late_work(self):
        gate.wait(60)  # (a bound: were more than MAX_HELD segments held, the caller would wait for it)
        work(self)

    def release_and_close(self):
        gate.set()
        close(self)

    monkeypatch.setattr(StreamingStack, "segment", segment)
    monkeypatch.setattr(segments.Segments, "_work", late_work)
    monkeypatch.setattr(segments.Segments, "close", release_and_close)
    stack = make_stack(shapes, 16)
    x = torch.randn(1, length)  # fewer segments than MAX_HELD: none waits for the worker's first
    got = torch.cat(list(iter_features(split(x, [4000]), stack)), dim=1)
    assert got.shape == (16, stack.geometry.output_length(length))
    assert rel_diff(got, whole(stack, x)) < 1e-5
    assert len(on_worker) >= 5 and not any(on_worker)  # all on the caller, the worker's two taken back
    assert workers() == []


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_a_rewound_edge_window_starts_like_a_new_one(mode):
    """``EdgeWindow.rewind(True)`` makes the start's padding again from the next frames; ``False``:
    none (a restart mid-file), the end's padding still made from the last frames."""
    from conv_pipeline.stack.classic import EdgeWindow

    def fed(window, rows, finish=False):
        window.append(rows)
        if finish:
            window.finish()
        return window.buf[: window.n].clone()

    x, other = torch.randn(40, 3), torch.randn(25, 3)
    fresh = fed(EdgeWindow(9, 2, 4, mode, 3, torch.float32, "cpu"), x, True)
    used = EdgeWindow(9, 2, 4, mode, 3, torch.float32, "cpu")
    fed(used, other, True)
    used.rewind(True)
    assert torch.equal(fed(used, x, True), fresh)
    assert fresh.shape[0] == 48 and torch.equal(fresh[4:44], x)
    used.rewind(False)
    assert torch.equal(fed(used, x, True), fresh[4:])  # no padding at the start, the same at the end


def test_segments_of_one_layer_equal_conv1d(always_segments):
    stack = make_stack([(3, 2, 0, 1), (3, 2, 0, 1)], 64)
    x = torch.randn(1, 20000)
    got = torch.cat(list(iter_features(split(x, [1500]), stack)), dim=1)
    c1, c2 = stack.layers[0].conv, stack.layers[1].conv
    ref = F.gelu(F.conv1d(F.gelu(F.conv1d(x[None], c1.weight, c1.bias, 2)), c2.weight, c2.bias, 2))[0]
    assert rel_diff(got, ref.detach()) < 1e-5


def test_time_norms_take_their_statistics_passes_then_segments(always_segments):
    stack = make_stack(W2V, 16, {0: "group_norm", 2: "group_norm"})
    x = torch.randn(1, 40000)
    got = torch.cat(list(iter_features(split(x, [3001]), stack)), dim=1)
    assert rel_diff(got, whole(stack, x)) < 1e-4
    assert workers() == []


@pytest.mark.slow
def test_big_stacks_run_as_segments_and_pipeline_true_is_two_stages():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        streamer = StreamingStack(make_stack(W2V, 512))
        run = streamer.pipelined()
        try:
            assert isinstance(run, Segments) and len(workers()) == 1
        finally:
            run.close()
        assert workers() == [] and torch.get_num_threads() == 2
        two = StreamingStack(make_stack(W2V, 512)).pipelined(True)
        assert isinstance(two, TwoStages)
        two.close()
        # a receptive field of ~40 segments' frames: every segment would recompute most of its context
        wide = StreamingStack(make_stack([(3, 1, 0, 2 ** i) for i in range(10)] + [(9, 1, 0, 256)], 256))
        assert wide.segmentable() is False
        # reflect padding at the true ends (an EdgeWindow) cannot restart mid-file
        centred = StreamingStack(ConvStack.from_preset("mel", ["model.frontend.center=true"], in_channels=1))
        assert centred.segmentable() is False
    finally:
        torch.set_num_threads(threads)


def test_an_error_surfaces_in_the_caller_and_no_thread_is_left(always_segments):
    stack = make_stack(W2V, 8)
    threads = torch.get_num_threads()
    blocks = [torch.randn(1, 40000), torch.randn(1, 40000), torch.randn(2, 4000)]
    with pytest.raises(InputError, match=r"input has shape \(2, 4000\), the stack expects \(1, frames\)"):
        list(iter_features(blocks, stack))
    assert workers() == []
    assert torch.get_num_threads() == threads
    chunks = iter_features(split(torch.randn(1, 200000), [20000]), stack)
    next(chunks)
    assert len(workers()) == 1
    chunks.close()  # the caller stops early: the worker is joined
    assert workers() == []
