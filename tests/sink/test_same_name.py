"""Two inputs with one output name in one ``output.dir`` (``a/speech.wav`` then ``b/speech.ogg``:
both ``speech.npy``): the second is refused with one line naming both and the fixes, the first
input's features and record are kept, and ``FeatureDataset`` labels what the file holds.

The single-file run (``engines/single.py`` calls ``sink.manifest.check_output_name``), the batch
job (``engines/job.py``: a ``failed`` record) and the check itself, each against features
recomputed independently with ``torch.nn.functional.conv1d``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers.jobs import SR, batch_cfg

from conv_pipeline.dataset.features import FeatureDataset
from conv_pipeline.engines.job import run_batch
from conv_pipeline.errors import OutputError
from conv_pipeline.sink.manifest import (
    ManifestRecord,
    append_record,
    check_output_name,
    iter_records,
    name_clash,
    read_manifest,
)

TINY = "model.layers=[{out_channels:3,kernel_size:5,stride:2}]"  # a small stack for the real command


def _speech(path: Path, freq: float, fmt: str | None = None) -> Path:
    """0.5 s of a ``freq`` Hz tone at 8 kHz, mono (``fmt``: soundfile's format, e.g. OGG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(SR // 2) / SR
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR, format=fmt)
    return path


def _reference(audio: Path, weights: Path) -> np.ndarray:
    """The features of ``audio`` under the weights in ``weights``, with torch's own conv1d: only
    LAYERS' first layer's conv (stride 2, padding 2) then ReLU, then the second's (dilation 2,
    padding 1), layer norm over channels and tanh."""
    from safetensors.torch import load_file

    w = load_file(str(weights))
    x, _ = sf.read(str(audio), dtype="float32", always_2d=True)
    y = torch.from_numpy(x.T.copy())[None]
    y = torch.relu(torch.nn.functional.conv1d(y, w["layers.0.conv.weight"], w["layers.0.conv.bias"], stride=2, padding=2))
    y = torch.nn.functional.conv1d(y, w["layers.1.conv.weight"], w["layers.1.conv.bias"], padding=1, dilation=2)
    y = torch.nn.functional.layer_norm(y.transpose(1, 2), (3,), w["layers.1.norm.norm.weight"], w["layers.1.norm.norm.bias"])
    return torch.tanh(y).transpose(1, 2)[0].numpy()


# ---------------------------------------------------------------- the check
def _folder(tmp_path: Path, key: str | None = "/abs/a/speech.wav") -> Path:
    out = tmp_path / "D"
    out.mkdir()
    (out / "speech.npy").write_bytes(b"first")
    append_record(out, ManifestRecord(input="a/speech.wav", status="ok", output="speech.npy", key=key))
    return out


def test_another_inputs_file_is_refused_naming_both(tmp_path):
    out = _folder(tmp_path)
    with pytest.raises(OutputError) as err:
        check_output_name(out, "speech.npy", "b/speech.ogg", "/abs/b/speech.ogg")
    line = str(err.value)
    assert "\n" not in line and "a/speech.wav" in line and "b/speech.ogg" in line
    assert "another output.dir" in line and "overwrite=true" in line
    assert (out / "speech.npy").read_bytes() == b"first"


def test_what_may_be_written(tmp_path):
    out = _folder(tmp_path)
    check_output_name(out, "speech.npy", "a/speech.wav", "/abs/a/speech.wav")  # the same input: a re-run
    check_output_name(out, "speech.npy", "b/speech.ogg", "/abs/b/speech.ogg", overwrite=True)
    check_output_name(out, "speech.npz", "b/speech.ogg", "/abs/b/speech.ogg")  # another file
    (out / "speech.npy").unlink()
    check_output_name(out, "speech.npy", "b/speech.ogg", "/abs/b/speech.ogg")  # nothing left to keep


def test_records_that_tie_the_file_to_no_other_input(tmp_path):
    old = _folder(tmp_path, key=None)  # an older version's record: no key, not trusted either way
    check_output_name(old, "speech.npy", "b/speech.ogg", "/abs/b/speech.ogg")
    failed = ManifestRecord(input="a/speech.wav", status="failed", error="x", key="/abs/a/speech.wav")
    assert name_clash(failed, "b/speech.ogg", "/abs/b/speech.ogg", "D/speech.npy") is None
    assert name_clash(None, "b/speech.ogg", "/abs/b/speech.ogg", "D/speech.npy") is None


# ---------------------------------------------------------------- the batch job
@pytest.mark.slow
def test_batch_job_keeps_the_first_output(tmp_path):
    a = _speech(tmp_path / "a" / "speech.wav", 300)
    b = _speech(tmp_path / "b" / "speech.ogg", 700, "OGG")
    out = tmp_path / "D"
    assert run_batch(batch_cfg(a, out)).ok == 1
    first = (out / "speech.npy").read_bytes()
    for _ in range(2):  # refused again when re-run: nothing changes
        summary = run_batch(batch_cfg(b, out))
        assert (summary.ok, summary.skipped, summary.failed) == (0, 0, 1)
        assert (out / "speech.npy").read_bytes() == first
    current = read_manifest(out)
    assert current[str(a)].status == "ok" and current[str(b)].status == "failed"
    assert str(a) in current[str(b)].error and str(b) in current[str(b)].error
    assert sum(r.status == "ok" for r in iter_records(out)) == 1  # never two ok records for one file
    ds = FeatureDataset(out)
    assert [r.input for r in ds.records] == [str(a)]
    x, meta = ds[0]
    assert meta["input"] == str(a)
    np.testing.assert_allclose(x.numpy(), _reference(a, out / "model.safetensors"), atol=1e-5)

    summary = run_batch(batch_cfg(b, out, overwrite=True))  # replaced on request, labelled as such
    assert summary.ok == 1
    ds = FeatureDataset(out)
    assert [r.input for r in ds.records] == [str(b)]
    np.testing.assert_allclose(ds[0][0].numpy(), _reference(b, out / "model.safetensors"), atol=1e-5)


# ---------------------------------------------------------------- the single-file command
def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "conv_pipeline", *args, TINY, f"audio.sample_rate={SR}"],
                          cwd=str(cwd), capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_refuses_the_second_input_in_one_line(tmp_path):
    _speech(tmp_path / "a" / "speech.wav", 300)
    _speech(tmp_path / "b" / "speech.ogg", 700, "OGG")
    first = _cli(tmp_path, "input=a/speech.wav", "output.dir=D")
    assert first.returncode == 0, first.stderr
    kept = (tmp_path / "D" / "speech.npy").read_bytes()
    second = _cli(tmp_path, "input=b/speech.ogg", "output.dir=D")
    assert second.returncode == 2, second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "a/speech.wav" in lines[0] and "b/speech.ogg" in lines[0], second.stderr
    assert "overwrite=true" in lines[0] and "Traceback" not in second.stderr
    assert (tmp_path / "D" / "speech.npy").read_bytes() == kept
    records = list(iter_records(tmp_path / "D"))
    assert [(r.input, r.status) for r in records] == [("a/speech.wav", "ok")]
    ds = FeatureDataset(tmp_path / "D")
    assert [r.input for r in ds.records] == ["a/speech.wav"]

    third = _cli(tmp_path, "input=b/speech.ogg", "output.dir=D", "overwrite=true")
    assert third.returncode == 0, third.stderr
    assert [r.input for r in FeatureDataset(tmp_path / "D").records] == ["b/speech.ogg"]
