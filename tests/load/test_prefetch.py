"""``load/prefetch.py``: a generator's items decoded ahead on a worker thread, same order, same
errors, nothing left running; and a ``BlockReader`` pass through it gives the blocks of a plain read."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import soundfile as sf
import torch

from conv_pipeline.config.schema import AudioConfig
from conv_pipeline.load.blocks import open_blocks
from conv_pipeline.load.prefetch import prefetched


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "conv_pipeline-decode-ahead"]


def test_items_in_order_and_the_worker_is_gone():
    assert list(prefetched(iter(range(100)), depth=2)) == list(range(100))
    assert list(prefetched(x for x in [])) == []
    assert not _workers()


def test_an_error_comes_after_the_items_before_it():
    def gen():
        yield 1
        yield 2
        raise ValueError("boom at 3")

    got = []
    with pytest.raises(ValueError, match="boom at 3"):
        for x in prefetched(gen()):
            got.append(x)
    assert got == [1, 2] and not _workers()


def test_stopping_early_closes_the_generator_in_the_worker():
    closed = []

    def gen():
        try:
            for i in range(10**9):
                yield i
        finally:
            closed.append(threading.current_thread().name)

    it = prefetched(gen(), depth=2)
    assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
    it.close()
    assert closed == ["conv_pipeline-decode-ahead"] and not _workers()


def test_a_block_reader_pass_equals_soundfile(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.uniform(-0.9, 0.9, (16001, 2)).astype(np.float32)
    path = tmp_path / "a.wav"
    sf.write(path, data, 16000, subtype="FLOAT")
    reader = open_blocks(path, AudioConfig(channels="mono"), block_frames=997)
    for _ in range(2):  # every pass decodes again
        got = torch.cat(list(reader), dim=1)
        want = torch.from_numpy(sf.read(path, dtype="float32")[0]).t().mean(dim=0, keepdim=True)
        assert torch.equal(got, want) and reader.frames_read == 16001
    assert not _workers()
