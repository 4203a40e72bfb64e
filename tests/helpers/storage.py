"""Jobs on fsspec URLs (the sink, source and engine tests on ``memory://``, ``file://`` and S3):
a corpus with broken files, moving it to a filesystem, and comparing what two jobs recorded.
The S3 server itself is the ``s3`` fixture (``tests/conftest.py``)."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from conv_pipeline.config.schema import BatchConfig
from conv_pipeline.fs import join
from conv_pipeline.sink.manifest import MANIFEST_NAME, ManifestRecord, read_manifest
from helpers.audio import write_audio
from helpers.jobs import SR, batch_cfg

tone = functools.partial(write_audio, step=40)  # tone(path, seconds, sr, seed, channels=1)


def url_job(input: Any, out: Any, chunk_seconds: float | None = None, long_file_seconds: float | None = None,
            **kw) -> BatchConfig:
    """``batch_cfg`` whole-file: ``chunk_seconds`` with ``long_file_seconds``: files longer than that
    take the long-file path (``process_long_file``, the chunked executor)."""
    return batch_cfg(input, out, runtime={"chunk_seconds": chunk_seconds},
                     batch={"long_file_seconds": long_file_seconds}, **kw)


def make_corpus(root: Path, long_file: bool = False) -> dict[str, str]:
    """Good files of several rates and lengths in nested folders, and broken ones; returns
    ``{relative path: "ok" or a substring of the expected error}``."""
    tone(root / "a/b/two.flac", 0.3, 8000, 1)  # every file is mono (a mixed corpus is refused up front)
    tone(root / "a/one.wav", 0.5, 16000, 2)
    tone(root / "c/three.wav", 0.7, 22050, 3)
    tone(root / "c/d/four.flac", 1.1, 16000, 4)
    tone(root / "five.wav", 0.2, 16000, 5)
    tone(root / "six.wav", 0.4, 11025, 6)
    (root / "bad").mkdir(parents=True, exist_ok=True)
    (root / "bad/corrupt.wav").write_bytes(b"RIFF\x00\x01garbage" + bytes(range(256)) * 2)
    (root / "bad/empty.wav").write_bytes(b"")
    tone(root / "bad/short.wav", 3 / 8000, 8000, 7)  # 3 samples: shorter than the stack needs
    tone(root / "bad/cut.flac", 0.3, 16000, 8)  # then cut in the middle of its data
    (root / "bad/cut.flac").write_bytes((root / "bad/cut.flac").read_bytes()[:3000])
    nan = np.full((800, 1), 0.1, np.float32)
    nan[100] = np.nan
    sf.write(str(root / "bad/nan.wav"), nan, 8000, subtype="FLOAT")
    (root / "notes.txt").write_text("not audio, not picked up")
    expected = {
        "a/b/two.flac": "ok",
        "a/one.wav": "ok",
        "c/three.wav": "ok",
        "c/d/four.flac": "ok",
        "five.wav": "ok",
        "six.wav": "ok",
        "bad/corrupt.wav": "not a readable audio file",
        "bad/empty.wav": "empty file",
        "bad/short.wav": "needs at least",
        "bad/cut.flac": "truncated or corrupt",
        "bad/nan.wav": "NaN",
    }
    if long_file:  # longer than batch.long_file_seconds=1: the long-file path
        tone(root / "long/seven.wav", 2.5, 16000, 9)
        expected["long/seven.wav"] = "ok"
    return expected


def check_records(records: dict[str, ManifestRecord], prefix: str, expected: dict[str, str], fmt: str = "npy") -> None:
    """Every input has its expected status; outputs mirror the tree; errors name the input."""
    assert set(records) == {join(prefix, rel) for rel in expected}
    for rel, want in expected.items():
        rec = records[join(prefix, rel)]
        if want == "ok":
            assert rec.status == "ok" and rec.error is None, rec
            assert rec.output == f"{rel.rsplit('.', 1)[0]}.{fmt}"
            assert rec.sample_rate == SR and rec.shape and rec.shape[0] == 3
        else:
            assert rec.status == "failed" and rec.output is None, rec
            assert want in rec.error and "\n" not in rec.error
            assert join(prefix, rel) in rec.error  # names the input as given (the URL)
            assert "conv_pipeline-in-" not in rec.error  # never the local temporary copy


def same_results(a: dict[str, ManifestRecord], b: dict[str, ManifestRecord], prefix_a: str, prefix_b: str) -> None:
    """The two manifests agree on everything but timing and the input's location."""
    assert len(a) == len(b)
    for key, ra in a.items():
        rb = b[prefix_b + key[len(prefix_a):]]
        assert (ra.status, ra.output, ra.shape, ra.sample_rate, ra.num_samples) == (
            rb.status, rb.output, rb.shape, rb.sample_rate, rb.num_samples,
        )
        assert (ra.error or "").replace(prefix_a, "") == (rb.error or "").replace(prefix_b, "")


def upload(fs: Any, local: Path, remote: str) -> None:
    for p in sorted(local.rglob("*")):
        if p.is_file():
            fs.pipe_file(f"{remote}/{p.relative_to(local).as_posix()}", p.read_bytes())


def remote_files(fs: Any, root: str) -> set[str]:
    fs.invalidate_cache()
    return {p[len(root) + 1:] for p in fs.find(root)}


def read_manifest_from_records(fs: Any, root: str) -> dict[str, ManifestRecord]:
    """``read_manifest`` of the manifest under ``root`` on ``fs``: the current record per input."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, MANIFEST_NAME).write_bytes(fs.cat(f"{root}/{MANIFEST_NAME}"))
        return read_manifest(tmp)


def read_manifest_from(fs: Any, root: str) -> list[str]:
    """The inputs of the manifest under ``root`` on ``fs``, in order."""
    return list(read_manifest_from_records(fs, root))


def same_weights(a: bytes, b: bytes) -> bool:
    """Same tensors and metadata (the header's byte order is not deterministic)."""
    from safetensors import safe_open
    from safetensors.torch import load

    metas = []
    for data in (a, b):
        with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:
            f.write(data)
            f.flush()
            with safe_open(f.name, framework="pt") as st:
                metas.append(st.metadata())
    ta, tb = load(a), load(b)
    return metas[0] == metas[1] and ta.keys() == tb.keys() and all(bool((ta[k] == tb[k]).all()) for k in ta)
