"""load_features and FeatureDataset against what the pipeline wrote and hand-computed geometry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers.paths import MONO, ROOT
from helpers.run import run_pipeline


def write_tone(path: Path, seconds: float, sample_rate: int, channels: int = 1) -> Path:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = np.stack([0.3 * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)], axis=1)
    sf.write(path, wave.astype(np.float32), sample_rate)
    return path


# The default preset (configs/model/default.yaml), by hand from geometry.md:
# layers (k400 s160 p0), (k3 s1 p1), (k3 s1 p1): R = 1 + 399 + 2*160 + 2*160 = 1040, J = 160,
# P = 0 + 1*160 + 1*160 = 320. Frame t's centre: (160 t - 320 + 519.5) / sample_rate.
DEFAULT_HOP, DEFAULT_RF, DEFAULT_PAD = 160, 1040, 320


def default_frame_times(n: int, sr: int) -> np.ndarray:
    return (np.arange(n) * DEFAULT_HOP - DEFAULT_PAD + (DEFAULT_RF - 1) / 2) / sr


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One .npz run and one .npy run of the example mono file with the default preset."""
    base = tmp_path_factory.mktemp("runs")
    npz = run_pipeline(MONO, base / "npz", "output.format=npz")
    npy = run_pipeline(MONO, base / "npy", "output.format=npy")
    return npz, npy


def test_load_npz_round_trip(runs):
    from conv_pipeline import load_features

    result, _ = runs
    feats, meta = load_features(result.output)
    with np.load(result.output, allow_pickle=False) as z:
        written = z["features"]
    assert feats.dtype == np.float32 and feats.shape == result.shape == written.shape
    np.testing.assert_array_equal(feats, written)
    # 3 s at 16 kHz = 48000 samples: L1 = (48000 - 400) // 160 + 1 = 298, the padded k3 layers keep it
    assert feats.shape == (128, 298)
    assert (meta["sample_rate"], meta["hop"], meta["receptive_field"], meta["left_padding"]) == (16000, 160, 1040, 320)
    np.testing.assert_allclose(meta["frame_times"], default_frame_times(298, 16000), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(meta["frame_starts"], np.arange(298) * 160 - 320)
    assert meta["format"] == "npz" and meta["preset"] == "default"
    assert meta["config"]["model"]["in_channels"] == 1 and meta["config"]["audio"]["sample_rate"] == 16000
    assert meta["input"] == str(MONO) and meta["num_samples"] == 48000 and meta["duration_s"] == pytest.approx(3.0)
    assert meta["record"]["status"] == "ok" and meta["warnings"] == []


def test_load_npy_finds_metadata_beside_it(runs):
    from conv_pipeline import load_features

    npz_result, result = runs
    feats, meta = load_features(result.output)
    np.testing.assert_array_equal(feats, np.load(result.output, allow_pickle=False))
    assert meta["format"] == "npy" and meta["root"] == str(result.output.parent.resolve())
    assert (meta["sample_rate"], meta["hop"], meta["receptive_field"], meta["left_padding"]) == (16000, 160, 1040, 320)
    np.testing.assert_allclose(meta["frame_times"], default_frame_times(298, 16000), rtol=0, atol=1e-12)
    # the same features as the .npz run, whose times the writer stored
    _, npz_meta = load_features(npz_result.output)
    np.testing.assert_allclose(meta["frame_times"], npz_meta["frame_times"], rtol=0, atol=1e-12)
    assert meta["model"]["name"] == "default" and meta["model"]["in_channels"] == 1
    assert meta["input"] == str(MONO) and meta["warnings"] == []


def test_nested_npy_uses_its_own_record(tmp_path):
    """A batch-style file in a subfolder: metadata from the root, sample rate from its record."""
    from conv_pipeline import load_features
    from conv_pipeline.config.schema import LayerConfig
    from conv_pipeline.geometry import StackGeometry
    from conv_pipeline.sink.manifest import ManifestRecord, append_record
    from conv_pipeline.sink.writer import write_features

    run_pipeline(MONO, tmp_path)  # root: model.safetensors, config.yaml (sample_rate 16000), manifest
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    arr = np.random.default_rng(0).standard_normal((128, 7)).astype(np.float32)
    geometry = StackGeometry([LayerConfig(64, 400, 160), LayerConfig(128, 3, 1, 1), LayerConfig(128, 3, 1, 1)])
    write_features(sub / "x.npy", arr, geometry, 8000)
    # 1400 samples -> (1400 - 400) // 160 + 1 = 7 frames: consistent with the file
    append_record(tmp_path, ManifestRecord(input="in/a/b/x.wav", status="ok", output="a/b/x.npy", sample_rate=8000,
                                           num_samples=1400, duration_s=0.175, shape=[128, 7]))
    feats, meta = load_features(sub / "x.npy")
    np.testing.assert_array_equal(feats, arr)
    assert meta["root"] == str(tmp_path.resolve()) and meta["input"] == "in/a/b/x.wav"
    assert meta["sample_rate"] == 8000  # the record's rate, not config.yaml's 16000
    np.testing.assert_allclose(meta["frame_times"], default_frame_times(7, 8000), rtol=0, atol=1e-12)
    assert meta["warnings"] == []

    # A later record saying 1600 samples (8 frames) and another shape: both are reported, not hidden.
    append_record(tmp_path, ManifestRecord(input="in/a/b/x.wav", status="ok", output="a/b/x.npy", sample_rate=8000,
                                           num_samples=1600, duration_s=0.2, shape=[128, 8]))
    _, meta = load_features(sub / "x.npy")
    assert any("shape [128, 8]" in w for w in meta["warnings"])
    assert any("1600 input samples give 8 frames" in w for w in meta["warnings"])


def test_npy_alone_loads_with_unknown_metadata(tmp_path):
    from conv_pipeline import load_features

    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "lone.npy", arr)
    feats, meta = load_features(tmp_path / "lone.npy")
    np.testing.assert_array_equal(feats, arr)
    assert meta["sample_rate"] is None and meta["hop"] is None and meta["frame_times"] is None
    assert meta["root"] is None and len(meta["warnings"]) == 1 and "unknown" in meta["warnings"][0]


def _object_npy(path: Path) -> None:
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)


@pytest.mark.parametrize(
    "name, make, expect",
    [
        ("text.npy", lambda p: p.write_text("hello, not numpy"), "not a readable .npy/.npz"),
        ("empty.npz", lambda p: p.write_bytes(b""), "empty file"),
        ("pickled.npy", _object_npy, "not a readable .npy/.npz"),  # allow_pickle=False refuses it
        ("three_d.npy", lambda p: np.save(p, np.zeros((2, 3, 4), np.float32)), "3-D array"),
        ("ints.npy", lambda p: np.save(p, np.zeros((2, 3), np.int64)), "int64 values"),
        ("other.npz", lambda p: np.savez(p, x=np.zeros(3)), "no 'features' array (it has x)"),
        ("truncated.npy", lambda p: p.write_bytes(_npy_bytes()[:-40]), "not a readable .npy/.npz"),
        ("missing.npy", lambda p: None, "no such file"),
    ],
)
def test_broken_files_raise_one_line(tmp_path, name, make, expect):
    from conv_pipeline import PipelineError, load_features

    path = tmp_path / name
    make(path)
    with pytest.raises(PipelineError) as info:
        load_features(path)
    msg = str(info.value)
    assert expect in msg and str(path) in msg and "\n" not in msg


def _npy_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ones((4, 50), np.float32))
    return buf.getvalue()


# ---------------------------------------------------------------- FeatureDataset
@pytest.fixture(scope="module")
def batch_dir(tmp_path_factory):
    """A batch-like output folder: three inputs run, one re-run, one failed, one skipped."""
    from conv_pipeline.sink.manifest import ManifestRecord, append_record

    base = tmp_path_factory.mktemp("batch")
    out = base / "feats"
    short = write_tone(base / "short.wav", 0.5, 16000)
    other = write_tone(base / "other.wav", 1.25, 8000)  # resampled to 16 kHz by the preset
    run_pipeline(MONO, out)
    run_pipeline(short, out)
    run_pipeline(other, out)
    run_pipeline(short, out)  # the same input again: its last record counts, once
    append_record(out, ManifestRecord(input=str(base / "broken.wav"), status="failed", error="not audio"))
    append_record(out, ManifestRecord(input=str(MONO), status="skipped", output="example_mono.npy", sample_rate=16000,
                                      num_samples=48000, duration_s=3.0, shape=[128, 298]))
    return out


def test_dataset_items_follow_the_manifest(batch_dir):
    from conv_pipeline import FeatureDataset
    from conv_pipeline.sink.manifest import read_manifest

    ds = FeatureDataset(batch_dir)
    with open(batch_dir / "manifest.jsonl") as f:
        lines = [json.loads(line) for line in f]
    assert len(lines) == 6
    current = {}
    for rec in lines:  # last record per input wins, order of first appearance
        current[rec["input"]] = rec
    expected = [r for r in current.values() if r["status"] in ("ok", "skipped") and r["output"]]
    assert len(ds) == len(expected) == 3
    assert [r.input for r in ds.records] == [r["input"] for r in expected] == list(read_manifest(batch_dir))[:3]
    for i, rec in enumerate(expected):
        feats, meta = ds[i]
        assert feats.dtype == torch_float32() and tuple(feats.shape) == tuple(rec["shape"])
        np.testing.assert_array_equal(feats.numpy(), np.load(batch_dir / rec["output"], allow_pickle=False))
        assert meta["input"] == rec["input"] and meta["sample_rate"] == 16000
        assert len(meta["frame_times"]) == rec["shape"][1]
        np.testing.assert_allclose(meta["frame_times"], default_frame_times(rec["shape"][1], 16000), atol=1e-12)
    # 0.5 s -> 8000 samples -> (8000-400)//160+1 = 48 frames; 1.25 s resampled to 20000 -> 123 frames
    assert sorted(r["shape"][1] for r in expected) == [48, 123, 298]
    assert ds[0][1]["record"]["status"] == "skipped"


def torch_float32():
    import torch

    return torch.float32


def test_dataset_batches_with_pad_collate(batch_dir):
    import torch
    from torch.utils.data import DataLoader, Dataset

    from conv_pipeline import FeatureDataset

    ds = FeatureDataset(batch_dir)
    assert isinstance(ds, Dataset)
    feats, lengths, metas = next(iter(DataLoader(ds, batch_size=3, collate_fn=FeatureDataset.pad_collate)))
    assert feats.shape == (3, 128, 298) and lengths.tolist() == [ds[i][0].shape[1] for i in range(3)]
    for i in range(3):
        n = int(lengths[i])
        assert torch.equal(feats[i, :, :n], ds[i][0]) and not feats[i, :, n:].any()
        assert metas[i]["input"] == ds.records[i].input
    # workers started with spawn (macOS, Windows) receive the dataset pickled
    import pickle

    again = pickle.loads(pickle.dumps(ds))
    assert type(again) is FeatureDataset and len(again) == 3 and torch.equal(again[2][0], ds[2][0])


def test_dataset_missing_file_and_bad_root(batch_dir, tmp_path):
    import shutil

    from conv_pipeline import FeatureDataset, PipelineError

    copy = tmp_path / "copy"
    shutil.copytree(batch_dir, copy)
    (copy / "short.npy").unlink()
    with pytest.raises(PipelineError, match="1 feature file.*missing.*short.npy"):
        FeatureDataset(copy)
    assert len(FeatureDataset(copy, missing="skip")) == 2
    assert len(FeatureDataset(copy, statuses=("ok",), missing="skip")) == 1  # the mono file's record is 'skipped'
    with pytest.raises(PipelineError, match="no manifest.jsonl"):
        FeatureDataset(tmp_path)
    with pytest.raises(PipelineError, match="not a folder"):
        FeatureDataset(copy / "other.npy")


@pytest.mark.slow
def test_package_exports_and_light_imports():
    import conv_pipeline
    from conv_pipeline import errors, geometry
    from conv_pipeline.dataset import features
    from conv_pipeline.stack import stack

    assert conv_pipeline.load_features is features.load_features
    assert conv_pipeline.FeatureDataset is features.FeatureDataset
    assert conv_pipeline.ConvStack is stack.ConvStack
    assert conv_pipeline.StackGeometry is geometry.StackGeometry
    assert conv_pipeline.PipelineError is errors.PipelineError
    with pytest.raises(AttributeError):
        conv_pipeline.no_such_name
    # inspecting needs neither torch nor matplotlib: a fresh interpreter proves it
    code = (
        "import sys, conv_pipeline.inspect.describe, conv_pipeline.dataset.features; from conv_pipeline import load_features; "
        "bad = [m for m in ('torch', 'matplotlib', 'hydra') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_output_names_match_the_pipeline():
    from conv_pipeline.dataset import features
    from conv_pipeline.sink import outputs

    assert (features.WEIGHTS_NAME, features.CONFIG_NAME) == (outputs.WEIGHTS_NAME, outputs.CONFIG_NAME)


def test_dataset_and_inspect_on_a_real_batch_output(tmp_path):
    """The batch job's own output: nested folders mirrored, a failed input, npz metadata."""
    from conv_pipeline import FeatureDataset, load_features
    from conv_pipeline.engines.job import run_batch
    from conv_pipeline.config.schema import AudioConfig, BatchConfig, BatchOptions, OutputConfig, OutputFormat
    from conv_pipeline.inspect.describe import describe_dir
    from conv_pipeline.config.compose import compose_config

    corpus = tmp_path / "corpus"
    (corpus / "a" / "b").mkdir(parents=True)
    write_tone(corpus / "a" / "b" / "x.wav", 0.5, 16000)
    write_tone(corpus / "y.wav", 0.75, 8000, channels=2)
    (corpus / "a" / "bad.wav").write_text("not audio")
    out = tmp_path / "feats"
    cfg = BatchConfig(
        input=str(corpus),
        model=compose_config([]).model,  # the default preset
        audio=AudioConfig(sample_rate=16000, channels="mono"),
        output=OutputConfig(dir=str(out), format=OutputFormat.npz),
        batch=BatchOptions(progress="none"),
    )
    run_batch(cfg)
    ds = FeatureDataset(out)
    assert sorted(r.output for r in ds.records) == ["a/b/x.npz", "y.npz"]
    for feats, meta in (ds[i] for i in range(len(ds))):
        arr, m = load_features(Path(meta["root"]) / meta["record"]["output"])
        np.testing.assert_array_equal(feats.numpy(), arr)
        with np.load(Path(meta["root"]) / meta["record"]["output"], allow_pickle=False) as z:
            np.testing.assert_array_equal(meta["frame_times"], z["frame_times"])
        n = feats.shape[1]
        np.testing.assert_allclose(meta["frame_times"], default_frame_times(n, 16000), atol=1e-12)
        assert meta["warnings"] == []
    text = describe_dir(out)
    assert "a/b/x.npz" in text and "y.npz" in text and "failed" in text and str(corpus / "a" / "bad.wav") in text
    assert text.splitlines()[-1].startswith("3 input(s): 2 ok, 0 skipped, 1 failed; 1.25 s of audio")
