"""The batch job (and the single-file run) writing parquet, kaldi and lhotse (issue 15): read back
by each format's own library and by FeatureDataset, equal to the npy output of the same job
transposed; bad inputs fail alone; a job killed with SIGKILL resumes and redoes only the inputs
of the shard in progress; float16 + time-major npy."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conv_pipeline.engines.job import run_batch
from conv_pipeline.sink.manifest import iter_records, read_manifest
from helpers.audio import write_audio
from helpers.files import temp_files
from helpers.jobs import LAYERS_CLI, SR, batch_cfg
from helpers.paths import SCRIPT

SHARDED = ("parquet", "kaldi", "lhotse")
LIBRARY = {"parquet": "pyarrow", "kaldi": "kaldiio", "lhotse": "lhotse"}


def corpus_with_a_broken_file(folder, n=7):
    for i in range(n):
        write_audio(folder / f"d{i % 2}/f{i}.wav", 0.05 + 0.02 * i, seed=i)
    (folder / "d0/broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    return n


def with_output(cfg, **output):
    return dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, **output))


def peer_arrays(fmt, out):
    """{input: (frames, channels)} as the format's own library reads ``out``."""
    recs = {r.item: r.input for r in read_manifest(out).values() if r.status in ("ok", "skipped")}
    if fmt == "parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(out / "data").to_pylist()
        return {r["input"]: np.asarray(r["features"], np.float32).reshape(r["num_frames"], r["num_channels"]) for r in rows}
    if fmt == "kaldi":
        import kaldiio

        return {recs[k]: np.asarray(v) for k, v in kaldiio.load_scp(str(out / "feats.scp")).items()}
    from lhotse import CutSet

    return {c.custom["input"]: c.load_features() for c in CutSet.from_file(out / "cuts.jsonl.gz")}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", SHARDED)
def test_a_job_in_each_format_reads_back_equal_to_npy_transposed(tmp_path, fmt):
    pytest.importorskip(LIBRARY[fmt])
    corpus = tmp_path / "corpus"
    n = corpus_with_a_broken_file(corpus)
    ref = run_batch(batch_cfg(corpus, tmp_path / "npy"))
    cfg = with_output(batch_cfg(corpus, tmp_path / fmt), format=fmt, shard_items=3)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, checkpoint=str(tmp_path / "npy/model.safetensors")))
    s = run_batch(cfg)
    assert (s.ok, s.failed) == (ref.ok, ref.failed) == (n, 1)
    npy = {r.input: np.load(tmp_path / "npy" / r.output) for r in read_manifest(tmp_path / "npy").values() if r.status == "ok"}
    got = peer_arrays(fmt, tmp_path / fmt)
    assert set(got) == set(npy)
    for name, want in npy.items():
        np.testing.assert_allclose(got[name], want.T, atol=1e-5)  # padded batches: float rounding
    recs = read_manifest(tmp_path / fmt)
    bad = [r for r in recs.values() if r.status == "failed"]
    assert len(bad) == 1 and "broken.wav" in bad[0].error and bad[0].output is None
    assert all(r.item and r.offset is not None for r in recs.values() if r.status == "ok")
    from conv_pipeline.dataset.features import FeatureDataset

    a, b = FeatureDataset(tmp_path / "npy"), FeatureDataset(tmp_path / fmt)
    assert len(a) == len(b) == n
    by_input = {m["input"]: (f, m) for f, m in b}  # in manifest order: the order inputs were committed
    for fa, ma in a:
        fb, mb = by_input[ma["input"]]
        assert (ma["hop"], ma["sample_rate"], ma["num_samples"]) == (mb["hop"], mb["sample_rate"], mb["num_samples"])
        np.testing.assert_allclose(fa.numpy(), fb.numpy(), atol=1e-5)
        np.testing.assert_array_equal(ma["frame_times"], mb["frame_times"])
    again = run_batch(cfg)  # resumed: nothing redone, nothing written again
    assert (again.ok, again.skipped) == (0, n)
    assert not temp_files(tmp_path / fmt)


@pytest.mark.slow
def test_float16_time_major_npy_equals_float32_within_half_precision(tmp_path):
    corpus = tmp_path / "corpus"
    for i in range(3):
        write_audio(corpus / f"f{i}.wav", 0.1, seed=i)
    run_batch(batch_cfg(corpus, tmp_path / "f32"))
    cfg = with_output(batch_cfg(corpus, tmp_path / "f16"), dtype="float16", time_major=True)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, checkpoint=str(tmp_path / "f32/model.safetensors")))
    assert run_batch(cfg).ok == 3
    for i in range(3):
        full, half = np.load(tmp_path / f"f32/f{i}.npy"), np.load(tmp_path / f"f16/f{i}.npy")
        assert half.dtype == np.float16 and half.shape == full.T.shape
        np.testing.assert_array_equal(half, full.T.astype(np.float16))
        np.testing.assert_allclose(half.astype(np.float32), full.T, rtol=2 ** -10, atol=2 ** -24)


def _kill_mid_job(proc, out, fmt):
    """SIGKILL ``proc`` once two shards are committed and recorded; the ok records it left."""
    shard = {"parquet": "data/part-*.parquet", "kaldi": "feats-*.ark", "lhotse": "features-*.h5"}[fmt]
    ok = 0
    for _ in range(60000):  # about two minutes
        ok = sum(r.status == "ok" for r in iter_records(out)) if (out / "manifest.jsonl").exists() else 0
        if proc.poll() is not None or (len(list(out.glob(shard))) >= 2 and ok >= 5):
            break
        time.sleep(0.002)
    assert proc.poll() is None, "the job ended before it could be killed; use more files"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    return sum(r.status == "ok" for r in iter_records(out))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", SHARDED)
def test_sigkill_then_rerun_redoes_only_the_shard_in_progress(tmp_path, fmt):
    pytest.importorskip(LIBRARY[fmt])
    corpus = tmp_path / "corpus"
    n = 80
    for i in range(n):
        write_audio(corpus / f"f{i:03d}.wav", 0.05 + 0.01 * (i % 5), seed=i)
    args = [f"input={corpus}", "output.dir=feats", f"output.format={fmt}", "output.shard_items=5", LAYERS_CLI,
            f"audio.sample_rate={SR}", "runtime.batch_size=1", "runtime.num_workers=1"]
    out = tmp_path / "feats"

    def start():
        return subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=str(tmp_path),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    ok1 = _kill_mid_job(start(), out, fmt)
    assert 5 <= ok1 < n  # records only of committed shards (a shard's records may take two appends)
    final = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    recs = read_manifest(out)
    assert len(recs) == n and all(r.status in ("ok", "skipped") for r in recs.values())
    assert sum(r.status == "skipped" for r in recs.values()) == ok1  # done shards were not redone
    assert not temp_files(out)
    got = peer_arrays(fmt, out)  # every input once in the index / the shards
    assert len(got) >= n and set(got) == {r.input for r in recs.values()}
    ref = run_batch(dataclasses.replace(batch_cfg(corpus, tmp_path / "ref"), model=dataclasses.replace(
        batch_cfg(corpus, tmp_path / "ref").model, checkpoint=str(out / "model.safetensors"))))
    assert ref.ok == n
    for r in read_manifest(tmp_path / "ref").values():
        np.testing.assert_allclose(got[r.input], np.load(tmp_path / "ref" / r.output).T, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ("parquet", "kaldi"))
def test_a_job_to_s3_in_a_sharded_format(tmp_path, s3, fmt):
    pytest.importorskip(LIBRARY[fmt])
    corpus = tmp_path / "corpus"
    n = corpus_with_a_broken_file(corpus, 4)
    bucket = s3.bucket(f"job-{fmt}")
    cfg = with_output(batch_cfg(corpus, f"s3://{bucket}/feats", options=s3.options), format=fmt, shard_items=3)
    s = run_batch(cfg)
    assert (s.ok, s.failed) == (n, 1)
    local = tmp_path / "copy"
    s3.fs.get(f"{bucket}/feats/", str(local), recursive=True)
    from conv_pipeline.dataset.features import FeatureDataset

    ds = FeatureDataset(local)
    assert len(ds) == n and all(f.shape[0] == 3 for f, _ in ds)
    assert run_batch(cfg).skipped == n  # resumed from the remote manifest


@pytest.mark.slow
@pytest.mark.parametrize("fmt", SHARDED)
def test_the_single_file_run_writes_each_format(tmp_path, fmt):
    pytest.importorskip(LIBRARY[fmt])
    from conv_pipeline.config.schema import AudioConfig, Config, ModelConfig, OutputConfig
    from conv_pipeline.engines.single import run
    from helpers.jobs import LAYERS

    write_audio(tmp_path / "a.wav", 0.3, sr=22050, seed=1)  # resampled to SR: the source keeps its own rate
    outs = {}
    for name in ("npy", fmt):
        cfg = Config(input=str(tmp_path / "a.wav"), model=ModelConfig(layers=list(LAYERS)), audio=AudioConfig(sample_rate=SR),
                     output=OutputConfig(dir=str(tmp_path / name), format=name))
        outs[name] = run(cfg)
    want = np.load(tmp_path / "npy/a.npy")
    got = peer_arrays(fmt, tmp_path / fmt)
    np.testing.assert_array_equal(got[str(tmp_path / "a.wav")], want.T)
    if fmt == "lhotse":  # the recording is the input as its header says
        from lhotse import CutSet

        (cut,) = CutSet.from_file(str(tmp_path / fmt / "cuts.jsonl.gz"))
        assert (cut.recording.sampling_rate, cut.recording.num_samples) == (22050, round(0.3 * 22050))


@pytest.mark.slow
def test_ray_actors_write_their_own_parquet_shards(tmp_path):
    import logging
    import re

    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    pytest.importorskip("pyarrow")
    from conv_pipeline.config.schema import EngineConfig

    corpus = tmp_path / "corpus"
    n = corpus_with_a_broken_file(corpus, 5)
    run_batch(batch_cfg(corpus, tmp_path / "npy"))
    cfg = with_output(batch_cfg(corpus, tmp_path / "ray", engine=EngineConfig(name="ray")), format="parquet")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, checkpoint=str(tmp_path / "npy/model.safetensors")))
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    try:
        s = run_batch(cfg)
    finally:
        ray.shutdown()
    assert (s.ok, s.failed) == (n, 1)
    shards = [p.name for p in (tmp_path / "ray/data").iterdir()]
    assert shards and all(re.fullmatch(r"part-\d{5}-[0-9a-f]{8}\.parquet", name) for name in shards)
    got = peer_arrays("parquet", tmp_path / "ray")
    npy = {r.input: np.load(tmp_path / "npy" / r.output) for r in read_manifest(tmp_path / "npy").values() if r.status == "ok"}
    assert set(got) == set(npy)
    for name, want in npy.items():
        np.testing.assert_allclose(got[name], want.T, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ("npy", "parquet"))
def test_float16_overflow_fails_that_input_alone(tmp_path, fmt):
    import soundfile as sf

    pytest.importorskip({"npy": "numpy", "parquet": "pyarrow"}[fmt])
    corpus = tmp_path / "corpus"
    for i in range(3):
        write_audio(corpus / f"f{i}.wav", 0.1, seed=i)
    loud = 3e5 * np.sin(np.arange(1600, dtype=np.float32) / 5)  # finite in float32, too large for float16
    sf.write(str(corpus / "loud.wav"), loud.astype(np.float32), 16000, subtype="FLOAT")
    from conv_pipeline.config.schema import LayerConfig

    linear = [LayerConfig(out_channels=2, kernel_size=4, stride=2)]  # no bounded activation: loud in, loud out
    s = run_batch(with_output(batch_cfg(corpus, tmp_path / "out", layers=linear), format=fmt, dtype="float16"))
    assert (s.ok, s.failed) == (3, 1)
    bad = next(r for r in read_manifest(tmp_path / "out").values() if r.status == "failed")
    assert "loud.wav" in bad.error and "float16" in bad.error and "\n" not in bad.error
    from conv_pipeline.dataset.features import FeatureDataset

    ds = FeatureDataset(tmp_path / "out")
    assert len(ds) == 3 and all(f.dtype == torch_float16() for f, _ in ds)


def torch_float16():
    import torch

    return torch.float16
